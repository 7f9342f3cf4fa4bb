"""The comparison report of a sweep: one row per job, written as summary.csv, summary.md and summary.png.

Built from what every job leaves in its own directory (`.hydra/overrides.yaml`, `summary.json`), so it can be
rebuilt at any time, for any sweep directory, including one still running or one that crashed:

    python -m transferlab.sweep_report outputs/train/multiruns/2026-11-23/07-00-00

A job without `summary.json` is listed as `incomplete` (still running, killed, or crashed outside the job
wrapper); a job whose `summary.json` says `failed` shows the first line of its error.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from transferlab.files import atomic_write_text, atomic_writer

log = logging.getLogger(__name__)

FILES = ("summary.csv", "summary.md", "summary.png")

# (csv column, summary.json key)
METRICS = [
    ("val_acc_best", "val/acc_best"),
    ("best_epoch", "best_epoch"),
    ("val_loss", "val/loss"),
    ("wall_time_s", "wall_time_s"),
    ("train_images_per_s", "train_images_per_s"),
    ("trainable_params", "trainable_params"),
    ("total_params", "total_params"),
    ("peak_memory_mb", "peak_memory_mb"),
]


@dataclass
class Job:
    """One job directory of a sweep, as it was found on disk."""

    dir: Path
    num: int | None
    overrides: dict[str, str]
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        if not self.summary:
            return "incomplete"
        return str(self.summary.get("status", "ok"))

    @property
    def error(self) -> str:
        if not self.summary:
            return "no summary.json: still running, killed, or crashed before writing it"
        return str(self.summary.get("error") or "")

    def metric(self, key: str) -> Any:
        value = self.summary.get(key)
        return None if isinstance(value, float) and not math.isfinite(value) else value

    def label(self, keys: list[str]) -> str:
        name = f"#{self.num}" if self.num is not None else self.dir.name
        return " ".join([name, *(f"{k}={_short(self.overrides[k])}" for k in keys if k in self.overrides)])


def find_jobs(sweep_dir: Path) -> list[Job]:
    """Every job directory under `sweep_dir`: one with a `.hydra/` folder or a `summary.json`."""
    dirs = {p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")}
    dirs |= {p.parent for p in sweep_dir.rglob("summary.json")}
    jobs = [_read_job(d) for d in dirs]
    return sorted(jobs, key=lambda j: (j.num is None, j.num if j.num is not None else 0, _natural(str(j.dir))))


def _read_job(job_dir: Path) -> Job:
    overrides: dict[str, str] = {}
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    if overrides_file.is_file():
        for item in yaml.safe_load(overrides_file.read_text()) or []:
            key, _, value = str(item).partition("=")
            overrides[key] = value
    summary: dict[str, Any] = {}
    summary_file = job_dir / "summary.json"
    if summary_file.is_file():
        try:
            summary = json.loads(summary_file.read_text())
        except json.JSONDecodeError as e:  # a job killed while writing it
            summary = {"status": "failed", "error": f"unreadable summary.json: {e}"}
    return Job(dir=job_dir, num=_job_num(job_dir), overrides=overrides, summary=summary)


def _job_num(job_dir: Path) -> int | None:
    hydra_file = job_dir / ".hydra" / "hydra.yaml"
    if hydra_file.is_file():
        try:
            num = (yaml.safe_load(hydra_file.read_text()) or {}).get("hydra", {}).get("job", {}).get("num")
            if isinstance(num, int):
                return num
        except yaml.YAMLError:
            pass
    return int(job_dir.name) if job_dir.name.isdigit() else None


def _natural(s: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def defining_keys(jobs: list[Job]) -> list[str]:
    """The override keys that tell the jobs apart (all of them when nothing varies, e.g. a single job)."""
    keys: list[str] = []
    for job in jobs:
        keys += [k for k in job.overrides if k not in keys]
    varying = [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]
    return varying if varying else keys


# --- writers ---------------------------------------------------------------------------------------------
def write_csv(jobs: list[Job], keys: list[str], path: Path) -> None:
    header = ["job", *keys, *(c for c, _ in METRICS), "status", "error", "overrides", "dir"]
    with atomic_writer(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for job in jobs:
            writer.writerow([
                job.num if job.num is not None else "",
                *(job.overrides.get(k, "") for k in keys),
                *("" if job.metric(k) is None else job.metric(k) for _, k in METRICS),
                job.status,
                job.error,
                " ".join(f"{k}={v}" for k, v in job.overrides.items()),
                str(job.dir),
            ])


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "acc":
        return f"{value:.4f}"
    if kind == "loss":
        return f"{value:.4f}"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "time":
        return f"{int(value // 60)}m {value % 60:04.1f}s" if value >= 60 else f"{value:.1f}s"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _short(value: str) -> str:
    """0.0006357455342408315 -> 0.0006357 (Optuna's samples); anything else as given."""
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.4g}" if len(value) > 8 and not value.isdigit() else value


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_markdown(jobs: list[Job], keys: list[str], path: Path, sweep_dir: Path) -> None:
    header = ["job", *keys, "best val acc", "epoch", "val loss", "wall time", "images/s", "trainable params",
              "total params", "peak memory (MB)", "status"]
    lines = [f"# Sweep report: `{sweep_dir}`", "", _headline(jobs, keys), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for job in jobs:
        status = job.status if not job.error else f"{job.status}: {job.error}"
        cells = [
            str(job.num) if job.num is not None else job.dir.name,
            *(f"`{_short(job.overrides[k])}`" if k in job.overrides else "-" for k in keys),
            _fmt(job.metric("val/acc_best"), "acc"),
            _fmt(job.metric("best_epoch"), "int"),
            _fmt(job.metric("val/loss"), "loss"),
            _fmt(job.metric("wall_time_s"), "time"),
            _fmt(job.metric("train_images_per_s"), "num"),
            _fmt(job.metric("trainable_params"), "int"),
            _fmt(job.metric("total_params"), "int"),
            _fmt(job.metric("peak_memory_mb"), "num"),
            status,
        ]
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    lines += ["", "Rebuild with `python -m transferlab.sweep_report <sweep dir>`; plot: `summary.png`.", ""]
    atomic_write_text(path, "\n".join(lines))


def _headline(jobs: list[Job], keys: list[str]) -> str:
    counts = {s: sum(j.status == s for j in jobs) for s in ("ok", "failed", "incomplete")}
    text = f"{len(jobs)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    scored = [j for j in jobs if j.metric("val/acc_best") is not None]
    if scored:
        best = max(scored, key=lambda j: j.metric("val/acc_best"))
        text += f". Best val acc {best.metric('val/acc_best'):.4f}: {best.label(keys)}."
    return text


def write_plot(jobs: list[Job], keys: list[str], path: Path, sweep_dir: Path) -> None:
    """Best val acc against wall time, one labelled point per job that has both."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    points = [j for j in jobs if j.metric("val/acc_best") is not None and j.metric("wall_time_s") is not None]
    for job in points:
        x, y = job.metric("wall_time_s"), job.metric("val/acc_best")
        ax.scatter([x], [y], s=40, color="tab:blue" if job.status == "ok" else "tab:red", zorder=3)
        ax.annotate(job.label(keys), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    if not points:
        ax.text(0.5, 0.5, "no job has finished with a val accuracy yet", ha="center", va="center",
                transform=ax.transAxes)
    left_out = len(jobs) - len(points)
    title = f"{sweep_dir.parent.name}/{sweep_dir.name}: best val acc vs wall time ({len(points)} job"
    title += "s" if len(points) != 1 else ""
    title += f"; {left_out} failed or incomplete, not shown)" if left_out else ")"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel("best val acc")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    with atomic_writer(path, "wb") as f:
        fig.savefig(f, format="png")


def build_report(sweep_dir: str | Path) -> dict[str, Path]:
    """Write summary.csv, summary.md and summary.png into `sweep_dir`; return their paths."""
    sweep_dir = Path(sweep_dir).expanduser().resolve()
    if not sweep_dir.is_dir():
        raise FileNotFoundError(
            f"Sweep directory {sweep_dir} does not exist; pass outputs/train/multiruns/<date>/<time>.")
    jobs = find_jobs(sweep_dir)
    if not jobs:
        raise FileNotFoundError(
            f"No job directories (with .hydra/overrides.yaml or summary.json) under {sweep_dir}; "
            "is this a Hydra multirun directory (outputs/train/multiruns/<date>/<time>)?"
        )
    keys = defining_keys(jobs)
    paths = {name: sweep_dir / name for name in FILES}
    write_csv(jobs, keys, paths["summary.csv"])
    write_markdown(jobs, keys, paths["summary.md"], sweep_dir)
    write_plot(jobs, keys, paths["summary.png"], sweep_dir)
    return paths


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


class SweepReport(Callback):
    """Hydra callback: the comparison report (summary.csv/.md/.png) in the sweep directory after a multirun.

    Also creates the directory of a SQLite Optuna storage (SQLite does not create directories)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        storage = OmegaConf.select(config, "hydra.sweeper.storage", default=None)
        if isinstance(storage, str) and storage.startswith("sqlite:///"):
            Path(storage[len("sqlite:///"):]).expanduser().parent.mkdir(parents=True, exist_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = str(config.hydra.sweep.dir)
        try:
            paths = build_report(sweep_dir)
        except Exception:  # the jobs' results are on disk whatever happens here
            log.exception("Could not write the sweep report; rebuild it with: python -m transferlab.sweep_report %s",
                          sweep_dir)
            return
        log.info("Sweep report: %s", ", ".join(str(p) for p in paths.values()))
        print(Path(paths["summary.md"]).read_text())


if __name__ == "__main__":
    sys.exit(main())
