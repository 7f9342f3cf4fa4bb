"""`python -m transferlab.data.doctor <root>`: check an image-folder dataset before training on it.

Prints the report (see transferlab.data.doctor) and exits 0 when the data is ready, 1 when it has errors
(unreadable files, layout problems; with --strict also warnings), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys

from transferlab.data.doctor import diagnose
from transferlab.data.images import DEFAULT_MAX_PIXELS
from transferlab.files import atomic_write_json, atomic_write_text


def default_cache_dir() -> str:
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "transferlab")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m transferlab.data.doctor",
        description="Check an image-folder dataset (root/train/<class>/ + root/val/<class>/, or root/<class>/ "
                    "to be split) for everything that would make training fail or be wrong, file by file.",
    )
    p.add_argument("root", help="the dataset root, as dataset.root")
    p.add_argument("--val-fraction", type=float, default=0.2, help="held out when there is no val/ (0.2)")
    p.add_argument("--seed", type=int, default=0, help="split seed when there is no val/ (0)")
    p.add_argument("--crop-size", type=int, default=224, help="images with a shorter side are 'tiny' (224)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"images above are bad files ({DEFAULT_MAX_PIXELS}, PIL's limit)")
    p.add_argument("--imbalance-ratio", type=float, default=3.0, help="warn above this largest/smallest ratio")
    p.add_argument("--cache-dir", default=default_cache_dir(), help="per-file check cache (%(default)s)")
    p.add_argument("--no-cache", action="store_true", help="decode every file again, write no cache")
    p.add_argument("--workers", type=int, default=None, help="decode threads (default: one per core, max 8)")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")
    p.add_argument("--all", action="store_true", help="list every file of every finding (default: 20 each)")
    p.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    p.add_argument("--deep", action="store_true",
                   help="also find near-duplicate leaks, label errors and outliers from backbone features "
                        "(computed into the training feature cache: a later run reuses them)")
    p.add_argument("--backbone", default="efficientnet_lite0", help="--deep: a conf/backbone option (%(default)s)")
    p.add_argument("--html", metavar="DIR", help="--deep: write DIR/index.html, each finding with thumbnails")
    p.add_argument("--write-exclude", metavar="FILE",
                   help="--deep: write the flagged paths to FILE, for training's dataset.exclude=FILE")
    p.add_argument("overrides", nargs="*",
                   help="--deep: Hydra overrides as for train.py (dataset.input.image_size=160)")
    return p.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = diagnose(
        args.root, val_fraction=args.val_fraction, seed=args.seed, crop_size=args.crop_size,
        max_pixels=args.max_pixels, cache_dir=None if args.no_cache else args.cache_dir, workers=args.workers,
        imbalance_ratio=args.imbalance_ratio,
    )
    print(report.format(limit=None if args.all else 20))
    if args.json:
        atomic_write_json(args.json, report.to_dict())
        print(f"JSON report: {args.json}")
    if args.deep and not report.layout_errors:
        deep(args)
    return 1 if report.errors or (args.strict and report.warnings) else 0


def deep(args: argparse.Namespace) -> None:
    """The deep quality check (transferlab.quality), on the config `python train.py dataset=folder
    dataset.root=ROOT backbone=...` composes: its feature cache, its head-fit settings."""
    from transferlab.config.compose import compose_train_config
    from transferlab.config.settings import RunSettings
    from transferlab.quality.check import deep_check
    from transferlab.quality.html import write_html

    cfg = compose_train_config(args.root, [f"backbone={args.backbone}", "strategy=frozen", *args.overrides])
    quality, datamodule = deep_check(RunSettings.from_config(cfg))
    print(quality.format(limit=None if args.all else 20))
    if args.json:
        atomic_write_json(args.json, {**report_json(args.json), "quality": quality.to_dict()})
    if args.html:
        splits = datamodule.scan()
        examples: dict[str, list[str]] = {}
        for sample in splits.train:
            examples.setdefault(splits.class_names[sample.label], []).append(
                os.path.relpath(sample.path, quality.root))
        print(f"HTML report: {write_html(quality, args.html, examples)}")
    if args.write_exclude:
        flagged = quality.flagged_paths()
        atomic_write_text(args.write_exclude, "".join(f"{p}\n" for p in flagged))
        print(f"{len(flagged)} flagged paths written to {args.write_exclude} (train with dataset.exclude=FILE)")


def report_json(path: str) -> dict:
    import json

    return json.loads(open(path).read())


if __name__ == "__main__":
    sys.exit(main())
