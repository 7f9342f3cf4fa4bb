"""The predict task: `python predict.py ckpt_path=... inputs=<file|folder|glob> [top_k=3] [output=preds.csv]`.

Classifies new images with the checkpoint's own validation transform and writes one row per image. Bad files
are listed and skipped; the run fails only when nothing at all could be classified.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from transferlab.data.datamodule import default_num_workers
from transferlab.data.folders import ignored_kind, is_image_file, list_images
from transferlab.inference import Classifier, Prediction, Predictions, load_classifier

log = logging.getLogger(__name__)

SKIPPED_NAMED = 5  # the non-image files a warning names (it counts them all)


def expand_inputs(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Files, folders (searched recursively for images) and glob patterns -> a sorted, de-duplicated list.

    A file named explicitly is always tried, whatever its extension; folders and globs yield image files (the
    formats Pillow reads, `folders.image_extensions`), and the other files they hold are counted and named in
    one warning, never dropped without a word (OS litter such as .DS_Store aside)."""
    specs = [spec] if isinstance(spec, str | os.PathLike) else list(spec)
    files: list[str] = []
    skipped: list[str] = []
    for raw in specs:
        item = os.path.expanduser(os.fspath(raw))
        ignored: list[tuple[str, str]] = []
        if os.path.isfile(item):
            found = [item]
        elif os.path.isdir(item):
            found = list_images(Path(item), ignored)
            ignored = [(os.path.relpath(p, item), kind) for p, kind in ignored]
        elif glob.has_magic(item):
            found = []
            for match in sorted(glob.glob(item, recursive=True)):
                if os.path.isdir(match):
                    found += list_images(Path(match), ignored)
                elif is_image_file(os.path.basename(match)):
                    found.append(match)
                else:
                    ignored.append((match, ignored_kind(os.path.basename(match))))
        else:
            raise FileNotFoundError(f"inputs={raw!r}: no such file or folder, and not a glob pattern.")
        if not found:
            log.warning("inputs=%r: no image files found there.", os.fspath(raw))
        files += found
        skipped += [p for p, kind in ignored if kind != "os_litter"]
    if skipped:
        more = f", and {len(skipped) - SKIPPED_NAMED} more" if len(skipped) > SKIPPED_NAMED else ""
        log.warning("skipped %d file(s) that are not images Pillow can read: %s%s", len(skipped),
                    ", ".join(skipped[:SKIPPED_NAMED]), more)
    unique = list(dict.fromkeys(files))
    if not unique:
        raise FileNotFoundError(f"inputs={specs!r} matched no image files (extensions: jpg, jpeg, png, ...).")
    return unique


def folder_labels(files: Sequence[str], class_names: Sequence[str]) -> list[str] | None:
    """True labels when every file sits in a folder named after one of the classes (e.g. a `val/` tree)."""
    parents = [Path(f).parent.name for f in files]
    known = set(class_names)
    return parents if parents and all(p in known for p in parents) else None


def _csv_row(p: Prediction) -> dict[str, Any]:
    return {"file": p.source, "label": p.label, "prob": round(p.prob, 6),
            "top_k": json.dumps([[lbl, round(prob, 6)] for lbl, prob in p.top_k])}


def write_predictions(preds: Predictions, output: str | os.PathLike, clf: Classifier) -> Path:
    """CSV (file, label, prob, top_k as a JSON list) or JSON (with the skipped files), by extension."""
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".csv":
        with out.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["file", "label", "prob", "top_k"])
            writer.writeheader()
            writer.writerows(_csv_row(p) for p in preds)
    elif out.suffix.lower() == ".json":
        out.write_text(json.dumps({
            "checkpoint": str(clf.checkpoint) if clf.checkpoint else None,
            "classes": clf.class_names,
            "predictions": [p.to_dict() for p in preds],
            "skipped": [{"file": s.source, "error": s.error} for s in preds.skipped],
        }, indent=2))
    else:
        raise ValueError(f"output={str(output)!r}: use a .csv or .json file name.")
    return out


def format_table(preds: Sequence[Prediction], limit: int = 10) -> str:
    """The first rows as aligned text, for the console."""
    rows = [(p.source, p.label, f"{p.prob:.4f}", ", ".join(f"{lbl} {prob:.2f}" for lbl, prob in p.top_k))
            for p in preds[:limit]]
    header = ("file", "label", "prob", f"top-{len(preds[0].top_k) if preds else 0}")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    if len(preds) > limit:
        lines.append(f"... ({len(preds) - limit} more)")
    return "\n".join(lines)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Load the checkpoint, classify `cfg.inputs`, print a summary and write `cfg.output`."""
    inputs = OmegaConf.to_container(cfg.inputs) if OmegaConf.is_list(cfg.inputs) else cfg.inputs
    output = Path(cfg.output)
    if output.suffix.lower() not in (".csv", ".json"):  # fail before any work is done
        raise ValueError(f"output={cfg.output!r}: use a .csv or .json file name.")
    files = expand_inputs(inputs)
    clf = load_classifier(cfg.ckpt_path, device=cfg.device, tta=cfg.get("tta", "none"))
    spec = clf.input_spec
    print(f"Checkpoint: {clf.checkpoint}")
    print(f"Classes: {', '.join(clf.class_names)} | input {spec.image_size}px (resize {spec.resize_size}, "
          f"{spec.interpolation}) | device {clf.device}")
    workers = default_num_workers() if cfg.num_workers == "auto" else int(cfg.num_workers)
    start = time.perf_counter()
    preds = clf.predict(files, top_k=cfg.top_k, batch_size=cfg.batch_size, num_workers=workers,
                        progress=cfg.progress)
    elapsed = time.perf_counter() - start
    if not preds:
        raise RuntimeError(f"None of the {len(files)} input(s) could be read; first error: {preds.skipped[0].error}")
    print(format_table(preds))
    print(f"{len(preds)} predicted, {len(preds.skipped)} skipped in {elapsed:.1f}s "
          f"({len(files) / max(elapsed, 1e-9):.1f} images/s)")
    for s in preds.skipped:
        print(f"  skipped: {s.error}")  # the message names the file
    summary: dict[str, Any] = {"predicted": len(preds), "skipped": len(preds.skipped)}
    truth = folder_labels([p.source for p in preds], clf.class_names)
    if truth is not None:
        correct = sum(t == p.label for t, p in zip(truth, preds, strict=True))
        summary["folder_accuracy"] = correct / len(preds)
        print(f"Folder names are class names: accuracy {correct / len(preds):.4f} ({correct}/{len(preds)})")
    summary["output"] = str(write_predictions(preds, output, clf))
    print(f"Wrote {summary['output']}")
    return summary
