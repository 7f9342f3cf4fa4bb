"""summary.png: best val acc against wall time, per job or (with repetitions) per configuration. Matplotlib is
imported when a plot is drawn, not with this module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transferlab.files import atomic_writer
from transferlab.sweep_report.collect import Config, Job
from transferlab.sweep_report.compare import Spread


def _plot_title(sweep_dir: Path, shown: int, what: str, left_out: int) -> str:
    title = f"{sweep_dir.parent.name}/{sweep_dir.name}: best val acc vs wall time ({shown} {what}"
    title += "s" if shown != 1 else ""
    return title + (f"; {left_out} failed or incomplete, not shown)" if left_out else ")")


def _save(fig: Any, ax: Any, path: Path) -> None:
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel("best val acc")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    with atomic_writer(path, "wb") as f:
        fig.savefig(f, format="png")


def _figure() -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5.5), dpi=110)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def write_plot(jobs: list[Job], keys: list[str], path: Path, sweep_dir: Path) -> None:
    """Best val acc against wall time, one labelled point per job that has both."""
    fig, ax = _figure()
    points = [j for j in jobs if j.metric("val/acc_best") is not None and j.metric("wall_time_s") is not None]
    for job in points:
        x, y = job.metric("wall_time_s"), job.metric("val/acc_best")
        ax.scatter([x], [y], s=40, color="tab:blue" if job.status == "ok" else "tab:red", zorder=3)
        ax.annotate(job.label(keys), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    if not points:
        ax.text(0.5, 0.5, "no job has finished with a val accuracy yet", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_title(_plot_title(sweep_dir, len(points), "job", len(jobs) - len(points)), fontsize=9)
    _save(fig, ax, path)


def write_config_plot(configs: list[Config], path: Path, sweep_dir: Path) -> None:
    """With repetitions: per configuration, its repetitions as small points and their mean with error bars of
    one standard deviation (val acc and wall time), labelled with the configuration and n."""
    fig, ax = _figure()
    colours = [f"C{i % 10}" for i in range(len(configs))]
    shown = 0
    for config, colour in zip(configs, colours, strict=True):
        runs = [j for j in config.ok() if j.metric("wall_time_s") is not None]
        if not runs:
            continue
        shown += 1
        xs = [j.metric("wall_time_s") for j in runs]
        ys = [j.metric("val/acc_best") for j in runs]
        ax.scatter(xs, ys, s=14, color=colour, alpha=0.45, zorder=2)
        acc, wall = Spread.of(ys), Spread.of(xs)
        ax.errorbar([wall.mean], [acc.mean], xerr=[wall.std or 0.0], yerr=[acc.std or 0.0], fmt="o", ms=6,
                    color=colour, capsize=4, zorder=3)
        ax.annotate(f"{config.label} (n={acc.n})", (wall.mean, acc.mean), textcoords="offset points",
                    xytext=(6, 5), fontsize=7)
    if not shown:
        ax.text(0.5, 0.5, "no job has finished with a val accuracy yet", ha="center", va="center",
                transform=ax.transAxes)
    title = _plot_title(sweep_dir, shown, "configuration", len(configs) - shown)
    ax.set_title(title + "\nmean ± 1 std over repetitions; small points: single runs", fontsize=9)
    _save(fig, ax, path)
