"""Does `dataset.balance` help when a folder's classes are imbalanced? One folder made imbalanced, side by side.

    python bench/imbalance.py                                  # hymenoptera and flowers12, Lite0, frozen
    python bench/imbalance.py --arms frozen,lpft --balances none,sampler,loss --epochs 4 --subsets 1,2,3

Both benchmark folders are balanced, so for each folder and each `--subsets` seed this builds an imbalanced copy
(symbolic links, under outputs/bench/): half of the classes, drawn with that seed, keep only `--keep` of their
training images (the other classes and val/ are linked unchanged). Then every arm (`[label:]strategy[+recipe]`,
as in bench/accuracy.py) trains once per `dataset.balance`, in its own `python train.py` process, one after the
other (run it alone: two trainings on two cores thrash).

Scored on the unchanged val set from each run's val_predictions.csv: accuracy, balanced accuracy (mean recall
per class) and the recall of the cut classes; and each balance against `none` on the same images over all
subsets (paired bootstrap interval of the accuracy difference, exact McNemar). Writes
its entry of `bench/results/imbalance/latest.json` (+ `latest.md`). A script, not a test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import shlex
import statistics
import sys
from pathlib import Path

import numpy as np
from _results import write_latest
from accuracy import DEFAULT_DATA, ROOT, parse_arm, run_arm

from transferlab.evaluation.stats import format_mean_std, paired_comparison, read_predictions

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def imbalanced_copy(data: Path, out: Path, keep: float, seed: int) -> list[str]:
    """Link `data`'s val/ and train/ under `out`, half of the classes (drawn with `seed`) keeping `keep` of their
    training images (at least 2); returns the cut classes."""
    classes = sorted(p.name for p in (data / "train").iterdir() if p.is_dir())
    rng = random.Random(seed)
    cut = sorted(rng.sample(classes, max(1, len(classes) // 2)))
    (out / "train").mkdir(parents=True, exist_ok=True)
    if not (out / "val").exists():
        (out / "val").symlink_to((data / "val").resolve(), target_is_directory=True)
    for name in classes:
        images = sorted(p for p in (data / "train" / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if name in cut:
            images = sorted(rng.sample(images, max(2, round(keep * len(images)))))
        folder = out / "train" / name
        folder.mkdir(exist_ok=True)
        for image in images:
            link = folder / image.name
            if not link.exists():
                link.symlink_to(image.resolve())
    return cut


def scores(predictions: dict[str, tuple[str, str]], cut: list[str]) -> dict[str, float]:
    """Accuracy, balanced accuracy and the cut classes' mean recall of one run's val predictions."""
    recall: dict[str, list[bool]] = {}
    for true, predicted in predictions.values():
        recall.setdefault(true, []).append(true == predicted)
    per_class = {name: statistics.mean(hits) for name, hits in recall.items()}
    return {"val_acc": statistics.mean(t == p for t, p in predictions.values()),
            "balanced_acc": statistics.mean(per_class.values()),
            "cut_recall": statistics.mean(per_class[name] for name in cut if name in per_class)}


HEADER = ["data", "arm", "dataset.balance", "val acc", "balanced acc", "cut classes' recall", "per subset (acc)",
          "vs none: acc difference, 95% CI, McNemar p"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="append", default=None, help="an image folder (repeatable)")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--arms", default="frozen")
    parser.add_argument("--balances", default="none,loss")
    parser.add_argument("--subsets", default="1,2,3", help="seeds of the imbalanced copies (and of the runs)")
    parser.add_argument("--keep", type=float, default=0.2, help="share of training images the cut classes keep")
    parser.add_argument("--epochs", type=int, default=None, help="trainer.max_epochs (default: the config's)")
    parser.add_argument("--extra", default="", help="overrides for every run")
    args = parser.parse_args()

    datasets = [Path(d).resolve() for d in (args.data or [d for d in DEFAULT_DATA if d.is_dir()])]
    balances, subsets = args.balances.split(","), [int(s) for s in args.subsets.split(",")]
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    base = ROOT / "outputs" / "bench" / f"imbalance-{stamp}"
    results, lines = [], [f"`python bench/imbalance.py {shlex.join(sys.argv[1:])}`", "",
                          "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for data in datasets:
        copies = {s: base / data.name / f"subset{s}" / "data" for s in subsets}
        cut = {s: imbalanced_copy(data, copies[s], args.keep, s) for s in subsets}
        for arm in args.arms.split(","):
            correct: dict[str, list[np.ndarray]] = {}
            for balance in balances:
                runs = []
                for s in subsets:
                    workdir = base / data.name / f"subset{s}" / parse_arm(arm)[0].replace("+", "_") / balance
                    print(f"[imbalance] {data.name} subset {s} (cut: {', '.join(cut[s])}) {arm} balance={balance}",
                          flush=True)
                    run = run_arm(str(copies[s]), args.backbone, arm, s, args.epochs,
                                  [*shlex.split(args.extra), f"dataset.balance={balance}"], workdir)
                    if run.get("status") == "ok":
                        predictions = read_predictions(workdir / "val_predictions.csv")
                        run.update(scores(predictions, cut[s]), cut=cut[s])
                        files = sorted(predictions)
                        correct.setdefault(balance, []).append(
                            np.array([predictions[f][0] == predictions[f][1] for f in files], dtype=float))
                    runs.append(run)
                    print(f"    -> {json.dumps({k: v for k, v in run.items() if k not in ('history', 'command')})}",
                          flush=True)
                ok = [r for r in runs if r.get("status") == "ok"]
                versus = ""
                if balance != "none" and len(correct.get(balance, [])) == len(correct.get("none", [])) == len(ok):
                    c = paired_comparison(correct[balance], correct["none"], balance, "none")
                    versus = (f"{c.diff * 100:+.1f} points [{c.lo * 100:+.1f}, {c.hi * 100:+.1f}], p = {c.p:.2f} "
                              f"({c.a_only} / {c.b_only} images only one got right)")
                    print("    " + c.sentence, flush=True)
                results.append({"data": data.name, "arm": arm, "balance": balance, "runs": runs})
                lines.append("| " + " | ".join([
                    data.name, arm, balance, format_mean_std([r["val_acc"] for r in ok]),
                    format_mean_std([r["balanced_acc"] for r in ok]), format_mean_std([r["cut_recall"] for r in ok]),
                    ", ".join(f"{r['val_acc']:.4f}" for r in ok) + ("" if len(ok) == len(runs) else
                                                                    f" ({len(runs) - len(ok)} failed)"),
                    versus]) + " |")
    lines += ["", f"Cut classes keep {args.keep:g} of their training images; subsets {args.subsets}; "
              f"backbone {args.backbone}."]
    write_latest("imbalance", {"argv": sys.argv[1:], "results": results}, lines, meta={"stamp": stamp})


if __name__ == "__main__":
    main()
