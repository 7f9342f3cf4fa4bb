"""Two arms of `bench/accuracy.py` on the same images: is the difference more than noise?

    python bench/paired.py A:ARM B:ARM   # e.g. bench/results/accuracy/latest.json@2026-12-04_15-18-08:cap03:lpft

Each run of an arm left `val_predictions.csv` (its best epoch's prediction for every val image) in its run
directory; runs are paired by seed. Prints and writes its entry of `bench/results/paired/latest.json` (+ `.md`):
both arms' accuracy per seed, the images only one of them got right, the paired bootstrap interval of the
difference (images resampled once per draw for every seed) and the exact McNemar test
(`transferlab.evaluation.stats`, the same as the sweep report's). A script, not a test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

import numpy as np
from _results import select_entry, write_latest
from tta import run_dir

from transferlab.evaluation.stats import paired_comparison, read_predictions


def arm_runs(spec: str) -> tuple[str, dict[int, dict[str, bool]]]:
    """`file.json[@stamp]:arm` -> (arm, {seed: {file: correct}})."""
    path, arm = spec.split(":", 1)
    runs = {}
    for result in select_entry(path)["data"]["results"]:
        if result["arm"] != arm:
            continue
        for run in result["runs"]:
            if run.get("status") != "ok":
                continue
            seed = next(int(w.split("=")[1]) for w in run["command"].split() if w.startswith("seed="))
            predictions = read_predictions(run_dir(run["command"]) / "val_predictions.csv")
            runs[seed] = {f: true == pred for f, (true, pred) in predictions.items()}
    if not runs:
        raise SystemExit(f"{spec}: no run of arm {arm!r} with val_predictions.csv")
    return arm, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a")
    parser.add_argument("b")
    args = parser.parse_args()
    (name_a, a), (name_b, b) = arm_runs(args.a), arm_runs(args.b)
    seeds = sorted(a.keys() & b.keys())
    files = sorted(a[seeds[0]])
    correct_a = [np.array([a[s][f] for f in files], dtype=float) for s in seeds]
    correct_b = [np.array([b[s][f] for f in files], dtype=float) for s in seeds]
    c = paired_comparison(correct_a, correct_b, name_a, name_b)
    lines = [f"`python bench/paired.py {args.a} {args.b}`", "", "| seed | " + name_a + " | " + name_b + " |",
             "|---|---|---|"]
    lines += [f"| {s} | {x.mean():.4f} | {y.mean():.4f} |" for s, x, y in zip(seeds, correct_a, correct_b, strict=True)]
    lines += ["", f"{len(files)} images x {len(seeds)} seeds; only {name_a} right: {c.a_only}, only {name_b} right: "
              f"{c.b_only}", "", c.sentence]
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    write_latest("paired", {"argv": sys.argv[1:], "seeds": seeds, "a_only": c.a_only, "b_only": c.b_only,
                            "diff": c.diff, "ci": [c.lo, c.hi], "p": c.p, "verdict": c.sentence}, lines,
                 meta={"stamp": stamp})


if __name__ == "__main__":
    main()
