"""`python -m transferlab.advise <root> [backbone=...] [overrides] [--similar 0.95 ...] [--json FILE]`:
which transfer strategy for this data? Composes conf/train.yaml as train.py would, measures, recommends."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import fields
from pathlib import Path

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from transferlab.advise.measures import measure
from transferlab.advise.recommend import recommend
from transferlab.advise.report import format_advice
from transferlab.advise.thresholds import Thresholds
from transferlab.config.compose import CONF_DIR, compose_train_config
from transferlab.errors import reported
from transferlab.files import atomic_write_json


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m transferlab.advise",
        description="Measure a dataset's size and its similarity to the backbone's pretraining data (linear probe, "
                    "k-NN, ImageNet head) and recommend a transfer strategy, with the sweep that checks it.")
    parser.add_argument("root", help="the image folder: train/<class>/ + val/<class>/, or <class>/ folders")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides as for train.py: backbone=resnet18, "
                                                     "dataset=digits, dataset.input.image_size=160, debug=tiny ...")
    for f in fields(Thresholds):
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=type(f.default), default=f.default,
                            help=f"(default {f.default})")
    parser.add_argument("--json", help="also write the advice and every measure to this JSON file")
    parser.add_argument("--config-dir", type=Path, default=None, help=f"the conf/ to compose (default {CONF_DIR})")
    return parser.parse_args(argv)


def advise(argv: list[str] | None = None) -> int:
    """The command, errors raised (`main` reports them)."""
    from transferlab.config.settings import RunSettings

    args = parse_args(argv)
    thresholds = Thresholds(**{f.name: getattr(args, f.name) for f in fields(Thresholds)})
    cfg = compose_train_config(args.root, list(args.overrides), args.config_dir)
    # A dataset option that prepares its data (dataset=digits writes it) may start from nothing.
    if not os.path.isdir(os.path.expanduser(args.root)) and not cfg.dataset.get("prepare"):
        what = "is a file" if os.path.exists(args.root) else "does not exist"
        raise FileNotFoundError(f"{args.root} {what}; point the advisor at a folder holding train/<class>/ and "
                                "val/<class>/ (or <class>/ folders).")
    settings = RunSettings.from_config(cfg)  # every value checked (as train.py checks it), before any data or model
    measures, _ = measure(settings, thresholds)
    advice = recommend(measures, thresholds)
    print(format_advice(advice, args.root, list(args.overrides)))
    if args.json:
        atomic_write_json(args.json, {"root": os.path.abspath(args.root), **advice.to_dict()})
    sys.stdout.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    """The entry point: a user error is one line and exit code 2 (`transferlab.errors.reported`)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with reported(HydraException, OmegaConfBaseException, ValueError):
        return advise(argv)


if __name__ == "__main__":
    sys.exit(main())
