"""The report's tables: summary.csv (one row per job, or per configuration with repetitions, the jobs then in
summary_jobs.csv), comparisons.csv and summary.md. The plot is `plot.py`'s."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from transferlab.files import atomic_write_text, atomic_writer
from transferlab.sweep_report.collect import Config, Job, short
from transferlab.sweep_report.compare import LEVEL, N_BOOT, PREDICTIONS, Comparison, Paired, Spread, best_config, spread

FILES = ("summary.csv", "summary.md", "summary.png")
JOBS_CSV = "summary_jobs.csv"  # with repetitions: one row per job (summary.csv then has one per configuration)
COMPARISONS_CSV = "comparisons.csv"  # the paired comparisons, when any job wrote val_predictions.csv

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


# --- CSV -------------------------------------------------------------------------------------------------
def write_csv(jobs: list[Job], keys: list[str], path: Path) -> None:
    header = ["job", *keys, *(c for c, _ in METRICS), "val_acc_leak_free", "leaked_val", "status", "error",
              "overrides", "dir"]
    with atomic_writer(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for job in jobs:
            writer.writerow([
                job.num if job.num is not None else "",
                *(job.overrides.get(k, "") for k in keys),
                *("" if job.metric(k) is None else job.metric(k) for _, k in METRICS),
                *(("", "") if (free := job.leak_free()) is None else (free["accuracy"], free["leaked"])),
                job.status,
                job.error,
                " ".join(f"{k}={v}" for k, v in job.overrides.items()),
                str(job.dir),
            ])


def write_config_csv(configs: list[Config], config_keys: list[str], rkeys: list[str], path: Path) -> None:
    """With repetitions: one row per configuration, mean/std/n/min/max of best val acc and wall time over its ok
    repetitions, which repetitions those were, and every job's number and status."""
    stats = [f"{m}_{s}" for m in ("val_acc_best", "wall_time_s") for s in ("mean", "std", "min", "max")]
    header = [*config_keys, "n", *stats, *rkeys, "jobs", "status"]
    with atomic_writer(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for config in configs:
            acc, wall = spread(config, "val/acc_best"), spread(config, "wall_time_s")
            numbers = []
            for s in (acc, wall):
                numbers += ["" if s is None or v is None else v
                            for v in ((s.mean, s.std, s.min, s.max) if s else (None,) * 4)]
            writer.writerow([
                *(config.values.get(k, "") for k in config_keys),
                acc.n if acc else 0,
                *numbers,
                *(" ".join(str(j.overrides.get(k, "")) for j in config.ok()) for k in rkeys),
                " ".join(str(j.num) if j.num is not None else j.dir.name for j in config.jobs),
                config.status(),
            ])


def write_comparisons_csv(comparisons: list[Comparison], path: Path) -> None:
    columns = ["a", "b", "repetitions", "images", "a_only", "b_only", "accuracy_a", "accuracy_b", "diff",
               "ci_low", "ci_high", "p_value", "result"]
    with atomic_writer(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for c in comparisons:
            writer.writerow(["" if v is None else v for v in (
                c.a, c.b, c.repetitions, c.images, c.a_only, c.b_only, c.accuracy_a, c.accuracy_b, c.diff, c.lo,
                c.hi, c.p, c.text)])


# --- Markdown --------------------------------------------------------------------------------------------
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


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _job_table(jobs: list[Job], keys: list[str]) -> list[str]:
    leaks = any(job.leak_free() for job in jobs)  # the column only when a job's val set has leaked images
    header = ["job", *keys, "best val acc", *(["leak-free val acc"] if leaks else []), "epoch", "val loss",
              "wall time", "images/s", "trainable params", "total params", "peak memory (MB)", "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for job in jobs:
        status = job.status if not job.error else f"{job.status}: {job.error}"
        if job.summary.get("learned") is False:  # finished, but no better than answering the commonest class
            status += ": no better than chance"
        cells = [
            str(job.num) if job.num is not None else job.dir.name,
            *(f"`{short(job.overrides[k])}`" if k in job.overrides else "-" for k in keys),
            _fmt(job.metric("val/acc_best"), "acc"),
            *([_leak_free_cell(job)] if leaks else []),
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
    return lines


def _leak_free_cell(job: Job) -> str:
    free = job.leak_free()
    return "-" if free is None else f"{free['accuracy']:.4f} ({free['leaked']} leaked)"


def leak_note(jobs: list[Job]) -> list[str]:
    """A line under the headline when val images have near-duplicates in train: the figures above are optimistic."""
    leaked = [free["leaked"] for job in jobs if (free := job.leak_free())]
    if not leaked:
        return []
    return [f"{len(leaked)} job(s) found val images with a near-duplicate in train ({max(leaked)} at most): their "
            "best val acc is optimistic; the `leak-free val acc` column scores the val set without them "
            "(`python -m transferlab.data.doctor ROOT --deep --write-exclude FILE`, then `dataset.exclude=FILE`).", ""]


def _spread_cells(s: Spread | None, kind: str) -> list[str]:
    """'mean ± std' and 'min – max' (one value when n = 1, '-' when none)."""
    if s is None:
        return ["-", "-"]
    mean = _fmt(s.mean, kind) + (f" ± {_fmt(s.std, kind)}" if s.std is not None else "")
    return [mean, f"{_fmt(s.min, kind)} – {_fmt(s.max, kind)}" if s.n > 1 else "-"]


def _config_table(configs: list[Config], config_keys: list[str]) -> list[str]:
    header = [*config_keys, "n", "best val acc (mean ± std)", "min – max", "wall time (mean ± std)", "min – max",
              "jobs", "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for config in configs:
        acc = spread(config, "val/acc_best")
        cells = [
            *(f"`{short(config.values[k])}`" if k in config.values else "-" for k in config_keys),
            str(acc.n if acc else 0),
            *_spread_cells(acc, "acc"),
            *_spread_cells(spread(config, "wall_time_s"), "time"),
            " ".join(f"#{j.num}" if j.num is not None else j.dir.name for j in config.jobs),
            config.status(),
        ]
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    return lines


def paired_lines(paired: Paired, rkeys: list[str]) -> list[str]:
    """summary.md's paired-comparison section ([] when there is nothing to say)."""
    if paired.skipped:
        return [paired.skipped]
    if paired.best is None:
        return []
    best = paired.best.name
    over = f", pooled over repetitions paired by {', '.join(rkeys)}" if paired.repeated else ""
    scheme = ("the repetitions, then the images, one image resample shared by repetitions on the same val set"
              if paired.repeated else "the images, the same ones for both")
    return [
        f"## Paired comparisons: `{best}` (the best) against each configuration, on the same images",
        "",
        f"From each job's `{PREDICTIONS}` (its best epoch). Difference of accuracy in points (`{best}` minus "
        f"the other), {LEVEL:.0%} paired bootstrap interval ({N_BOOT:,} resamples of {scheme}), and an exact "
        f"McNemar test (two-sided binomial test on the images exactly one of the two got right{over}). Full "
        f"precision in `{COMPARISONS_CSV}`.",
        "",
        *(f"- {c.text}" for c in paired.comparisons),
    ]


def write_markdown(jobs: list[Job], keys: list[str], path: Path, sweep_dir: Path, configs: list[Config] | None = None,
                   rkeys: list[str] | None = None, paired: list[str] | None = None) -> None:
    """The report as Markdown. `configs` and `rkeys` (repetitions): the per-configuration table first, then
    the jobs; `paired`: the paired-comparison section's lines (`paired_lines`)."""
    lines = [f"# Sweep report: `{sweep_dir}`", ""]
    if rkeys and configs is not None:
        config_keys = [k for k in keys if k not in rkeys]
        lines += [_config_headline(jobs, configs, rkeys), "", *leak_note(jobs),
                  *_config_table(configs, config_keys), "",
                  *([*paired, ""] if paired else []), "## Jobs", "", *_job_table(jobs, keys)]
    else:
        lines += [_headline(jobs, keys), "", *leak_note(jobs), *_job_table(jobs, keys)]
        if paired:
            lines += ["", *paired]
    lines += ["", "Rebuild with `python -m transferlab.sweep_report <sweep dir>`; plot: `summary.png`.", ""]
    atomic_write_text(path, "\n".join(lines))


def _config_headline(jobs: list[Job], configs: list[Config], rkeys: list[str]) -> str:
    counts = {s: sum(j.status == s for j in jobs) for s in ("ok", "failed", "incomplete")}
    text = f"{len(jobs)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    values = {k: len({j.overrides.get(k) for j in jobs}) for k in rkeys}
    text += (f"; {len(configs)} configuration{'s' if len(configs) != 1 else ''}, repeated over "
             + " and ".join(f"{k} ({n} values)" for k, n in values.items()))
    best = best_config(configs)
    if best is not None:
        acc = spread(best, "val/acc_best")
        std = f" ± {acc.std:.4f}" if acc.std is not None else ""
        text += f". Best mean val acc {acc.mean:.4f}{std} (n={acc.n}): {best.label}."
    return text


def _headline(jobs: list[Job], keys: list[str]) -> str:
    counts = {s: sum(j.status == s for j in jobs) for s in ("ok", "failed", "incomplete")}
    text = f"{len(jobs)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    scored = [j for j in jobs if j.metric("val/acc_best") is not None]
    if scored:
        best = max(scored, key=lambda j: j.metric("val/acc_best"))
        text += f". Best val acc {best.metric('val/acc_best'):.4f}: {best.label(keys)}."
    return text
