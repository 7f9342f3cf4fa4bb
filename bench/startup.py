"""How fast does the command line answer? `python train.py` commands that do no training, timed as whole processes.

    python bench/startup.py                         # this checkout, 5 runs of each command (after one warm-up)
    python bench/startup.py --baseline /tmp/old     # and, alternating run by run, another checkout of the project

Each command is started `--runs` times after `--warmup` runs that are not counted (a warm disk), and its wall time
from start to exit is taken; the table shows the median, min and max. With `--baseline DIR` the same commands run
from DIR (`DIR/train.py` with `PYTHONPATH=DIR/src`) in turn with this checkout's (A B A B ...), and the ratio is
the median of the run-by-run ratios, so a machine that drifts during the bench still compares fairly. Goal: every
command answers in <= 3 s. Writes its entry of bench/results/startup/latest.json (+ latest.md). Run it alone on
the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {  # label -> train.py arguments: help, the composed config, two config mistakes reported in one line
    "--help": ["--help"],
    "--cfg job": ["--cfg", "job"],
    "strategy=frozn (unknown option)": ["strategy=frozn"],
    "strategy.trainable_stages=two (wrong type)": ["strategy.trainable_stages=two"],
    "optimizer.lr=0 (out of range)": ["optimizer.lr=0"],
}
GOAL_S = 3.0


def run_once(checkout: Path, args: list[str], workdir: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(checkout / "src")}
    start = time.perf_counter()
    subprocess.run([sys.executable, str(checkout / "train.py"), *args], cwd=workdir, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def main() -> None:
    from _results import write_latest  # bench/: the one results writer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout, timed side by side")
    args = parser.parse_args()
    arms = {"this checkout": ROOT, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    workdir = ROOT / "outputs" / "bench" / "startup"  # a run that slips through writes here, not in the repo
    workdir.mkdir(parents=True, exist_ok=True)
    times: dict[str, dict[str, list[float]]] = {label: {arm: [] for arm in arms} for label in COMMANDS}
    for label, command in COMMANDS.items():
        for i in range(args.warmup + args.runs):
            for arm, checkout in arms.items():  # alternating, run by run
                seconds = run_once(checkout, command, workdir)
                if i >= args.warmup:
                    times[label][arm].append(seconds)
        print(f"[startup] {label}: " + ", ".join(f"{arm} {statistics.median(t):.2f} s"
                                                   for arm, t in times[label].items()), flush=True)

    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    head = "| command | " + " | ".join(f"{arm}: median (min-max) s" for arm in arms) + (
        " | this / baseline |" if args.baseline else "")
    lines = [f"# train.py start-up ({stamp})", "",
             f"`python bench/startup.py {' '.join(sys.argv[1:])}`: whole processes, {args.runs} runs after "
             f"{args.warmup} warm-up, {os.cpu_count()} CPU cores; goal <= {GOAL_S:g} s.", "",
             head, "|---|" + "---:|" * (len(arms) + bool(args.baseline))]
    for label, by_arm in times.items():
        cells = [f"{statistics.median(t):.2f} ({min(t):.2f}-{max(t):.2f})" for t in by_arm.values()]
        if args.baseline:
            ratios = [a / b for a, b in zip(by_arm["this checkout"], by_arm["baseline"], strict=True)]
            cells.append(f"{statistics.median(ratios):.2f}")
        lines.append(f"| `python train.py {' '.join(COMMANDS[label])}` | " + " | ".join(cells) + " |")
    write_latest("startup", {"argv": sys.argv[1:], "runs": args.runs, "goal_s": GOAL_S,
                             "arms": {k: str(v) for k, v in arms.items()}, "seconds": times}, lines,
                 meta={"stamp": stamp})


if __name__ == "__main__":
    main()
