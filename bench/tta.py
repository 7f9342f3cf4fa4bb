"""What does test-time augmentation buy? Every trained run of an accuracy benchmark, evaluated twice, side by side.

    python bench/tta.py bench/results/accuracy/latest.json@<stamp> [more ...]   # bare latest.json: its newest entry

For each training run recorded in the given `bench/accuracy.py` results (its run directory is in its command),
`python eval.py ckpt_path=<run dir> tta=none` and then `tta=flip` on the run's best checkpoint, one after the
other (run it alone). Per data x backbone x arm: accuracy without and with the flip (mean ± std over seeds),
the images only one of the two got right (pooled over seeds), and the paired comparison of the two on the same
images (`transferlab.evaluation.stats`: bootstrap interval over images and seeds, exact McNemar test). Writes
its entry of `bench/results/tta/latest.json` (+ `latest.md`). A script, not a test.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
from _results import select_entry, write_latest
from accuracy import ROOT

from transferlab.evaluation.stats import format_mean_std, paired_comparison

MODES = ("none", "flip")


def run_dir(command: str) -> Path | None:
    return next((Path(w.split("=", 1)[1]) for w in shlex.split(command) if w.startswith("hydra.run.dir=")), None)


def evaluate(run: Path, tta: str, out: Path) -> dict[str, bool]:
    """{file: correct} for the run's best checkpoint on its val set."""
    cmd = [sys.executable, str(ROOT / "eval.py"), f"ckpt_path={run}", f"tta={tta}", "progress=false",
           "mistakes=0", f"hydra.run.dir={out}"]
    print("  $", shlex.join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    with open(out / "predictions.csv", newline="") as f:
        return {row["file"]: row["correct"] == "1" for row in csv.DictReader(f)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="bench/results/accuracy/latest.json[@<stamp>]")
    args = parser.parse_args()
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    rows = []
    for path in args.results:
        for result in select_entry(path)["data"]["results"]:
            runs = [r for r in result["runs"] if r.get("status") == "ok" and r.get("command")]
            if not runs:
                continue
            print(f"[tta] {result['data']} {result['backbone']} {result['arm']}", flush=True)
            correct = {mode: [] for mode in MODES}
            for r in runs:
                directory = run_dir(r["command"])
                per_mode = {mode: evaluate(directory, mode, ROOT / "outputs" / "bench" / f"tta-{stamp}" /
                                           directory.relative_to(ROOT / "outputs" / "bench") / mode)
                            for mode in MODES}
                files = sorted(per_mode["none"])
                for mode in MODES:
                    correct[mode].append(np.array([per_mode[mode][f] for f in files], dtype=float))
            flip, plain = correct["flip"], correct["none"]
            c = paired_comparison(flip, plain, "tta=flip", "tta=none")
            rows.append({"data": result["data"], "backbone": result["backbone"], "arm": result["arm"],
                         "source": path.name, "seeds": len(runs),
                         "acc_none": [float(x.mean()) for x in plain], "acc_flip": [float(x.mean()) for x in flip],
                         "flip_only": c.a_only, "none_only": c.b_only, "diff": c.diff, "ci": [c.lo, c.hi], "p": c.p,
                         "verdict": c.sentence})
            print("    ->", rows[-1]["verdict"], flush=True)
    command = "python bench/tta.py " + " ".join(str(p) for p in args.results)
    header = ["data", "backbone", "arm", "seeds", "tta=none", "tta=flip", "only flip right / only none right",
              "flip - none"]
    lines = [f"`{command}`", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join([r["data"], r["backbone"], r["arm"], str(r["seeds"]),
                                        format_mean_std(r["acc_none"]), format_mean_std(r["acc_flip"]),
                                        f"{r['flip_only']} / {r['none_only']}", r["verdict"].split(": ", 1)[1]]) + " |")
    write_latest("tta", {"argv": sys.argv[1:], "results": rows}, lines, meta={"stamp": stamp})


if __name__ == "__main__":
    main()
