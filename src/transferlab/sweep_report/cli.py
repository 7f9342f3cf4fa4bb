"""`python -m transferlab.sweep_report <sweep dir>`: (re)build a sweep's report and print it.

Here rather than in `__main__.py`, so that the package can re-export `main` without importing its own
`__main__` (runpy warns when `python -m` finds it already imported)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from transferlab.sweep_report.report import build_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m transferlab.sweep_report",
        description="(Re)build summary.csv, summary.md and summary.png for a sweep directory.",
    )
    parser.add_argument("sweep_dir", help="a Hydra multirun directory, e.g. outputs/train/multiruns/<date>/<time>")
    args = parser.parse_args(argv)
    try:
        paths = build_report(args.sweep_dir)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(Path(paths["summary.md"]).read_text())
    print("Wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
