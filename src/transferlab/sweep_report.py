"""The comparison report of a sweep: one row per job, written as summary.csv, summary.md and summary.png.

Built from what every job leaves in its own directory (`.hydra/overrides.yaml`, `summary.json`), so it can be
rebuilt at any time, for any sweep directory, including one still running or one that crashed:

    python -m transferlab.sweep_report outputs/train/multiruns/2026-11-23/07-00-00

A job without `summary.json` is listed as `incomplete` (still running, killed, or crashed outside the job
wrapper); a job whose `summary.json` says `failed` shows the first line of its error.

Repetitions. When an override in `REPEAT_KEYS` (`seed`, `dataset.fold`) takes several values, the jobs that
differ only in those are repetitions of one configuration: summary.csv, summary.md and summary.png then have
one row (point) per configuration with the mean, standard deviation (n - 1), n, min and max of best val acc and
wall time over its ok repetitions; the per-job table moves to summary_jobs.csv (and the end of summary.md).
Without such an override the report is one row per job, as it always was.

Paired comparison. Jobs that wrote `val_predictions.csv` (the `val_predictions` callback) are compared on
the same images: the best configuration against each other one, with a paired bootstrap interval of the
accuracy difference and an exact McNemar test (`transferlab.evaluation.stats`; with repetitions, repetition
i of one configuration is paired with the repetition of the other that has the same seed/fold), said in one
sentence per comparison in summary.md and written with full precision to comparisons.csv. Jobs without the
file (sweeps from before it existed) and jobs whose val sets differ are not compared, with a note.
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

import numpy as np
import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from transferlab.evaluation.stats import discordant, mcnemar_exact, paired_bootstrap_ci, read_predictions, verdict
from transferlab.files import atomic_write_text, atomic_writer

log = logging.getLogger(__name__)

FILES = ("summary.csv", "summary.md", "summary.png")
JOBS_CSV = "summary_jobs.csv"  # with repetitions: one row per job (summary.csv then has one per configuration)
COMPARISONS_CSV = "comparisons.csv"  # the paired comparisons, when any job wrote val_predictions.csv
PREDICTIONS = "val_predictions.csv"

# Override keys whose values are repetitions of one configuration, not different configurations.
REPEAT_KEYS = ("seed", "dataset.fold")
N_BOOT = 10_000  # bootstrap resamples of the paired comparison
BOOT_SEED = 0  # the bootstrap's seed: a report rebuilt from the same files says the same thing
LEVEL = 0.95

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


_REP_DIR = re.compile(r"^rep(?:_seed(?P<seed>-?\d+))?(?:_fold(?P<fold>\d+))?$")


def find_jobs(sweep_dir: Path) -> list[Job]:
    """Every job directory under `sweep_dir`: one with a `.hydra/` folder or a `summary.json`. A job run with
    `repeat` (transferlab.tasks.job) is listed as its repetitions (`rep_seed<s>_fold<i>/`), each with the seed
    or fold as an override, so they aggregate and pair like repetitions of a `seed=` / `dataset.fold=` sweep."""
    dirs = {p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")}
    dirs |= {p.parent for p in sweep_dir.rglob("summary.json")}
    dirs = {d for d in dirs if not _REP_DIR.match(d.name) or d.parent not in dirs}  # repetitions come below
    jobs = []
    for d in dirs:
        job = _read_job(d)
        reps = sorted(r for r in d.iterdir() if _REP_DIR.match(r.name) and (r / "summary.json").is_file())
        if reps:
            jobs.extend(_repeat_job(job, r) for r in reps)
        else:
            jobs.append(job)
    return sorted(jobs, key=lambda j: (j.num is None, j.num if j.num is not None else 0, _natural(str(j.dir))))


def _repeat_job(job: Job, rep_dir: Path) -> Job:
    """One repetition of a `repeat` job: the job's overrides plus its seed and/or fold."""
    match = _REP_DIR.match(rep_dir.name)
    overrides = dict(job.overrides)
    if match["seed"] is not None:
        overrides["seed"] = match["seed"]
    if match["fold"] is not None:
        overrides["dataset.fold"] = match["fold"]
    return Job(dir=rep_dir, num=job.num, overrides=overrides, summary=_read_job(rep_dir).summary)


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


# --- repetitions -------------------------------------------------------------------------------------------
def repeat_keys(jobs: list[Job], keys: list[str]) -> list[str]:
    """The defining keys that are repetitions (`REPEAT_KEYS`) and take more than one value in this sweep."""
    return [k for k in keys if k in REPEAT_KEYS and len({j.overrides.get(k) for j in jobs}) > 1]


@dataclass
class Spread:
    """A metric over the ok repetitions of one configuration (std: sample standard deviation, None when n < 2)."""

    mean: float
    std: float | None
    n: int
    min: float
    max: float

    @classmethod
    def of(cls, values: list[float]) -> Spread | None:
        if not values:
            return None
        arr = np.asarray(values, dtype=float)
        std = float(arr.std(ddof=1)) if len(arr) > 1 else None
        return cls(float(arr.mean()), std, len(arr), float(arr.min()), float(arr.max()))


@dataclass
class Config:
    """The jobs of one configuration: the same values of every defining key but the repetition keys."""

    values: dict[str, str]
    jobs: list[Job]

    @property
    def name(self) -> str:
        """What the paired comparison calls it: the value alone when one key defines configurations."""
        if len(self.values) == 1:
            return _short(next(iter(self.values.values())))
        return self.label

    @property
    def label(self) -> str:
        return " ".join(f"{k}={_short(v)}" for k, v in self.values.items()) or "all jobs"

    def ok(self) -> list[Job]:
        return [j for j in self.jobs if j.status == "ok" and j.metric("val/acc_best") is not None]

    def spread(self, key: str) -> Spread | None:
        return Spread.of([j.metric(key) for j in self.ok() if j.metric(key) is not None])

    def status(self) -> str:
        counts: dict[str, int] = {}
        for job in self.jobs:
            counts[job.status] = counts.get(job.status, 0) + 1
        return ", ".join(f"{n} {s}" for s, n in counts.items())


def group_configs(jobs: list[Job], config_keys: list[str]) -> list[Config]:
    """Jobs grouped by their values of `config_keys`, in the order of each configuration's first job."""
    groups: dict[tuple, Config] = {}
    for job in jobs:
        key = tuple(job.overrides.get(k) for k in config_keys)
        if key not in groups:
            groups[key] = Config({k: v for k, v in zip(config_keys, key, strict=True) if v is not None}, [])
        groups[key].jobs.append(job)
    return list(groups.values())


def best_config(configs: list[Config]) -> Config | None:
    """The configuration with the highest mean best val acc over its ok repetitions (the first on a tie)."""
    scored = [c for c in configs if c.spread("val/acc_best") is not None]
    return max(scored, key=lambda c: c.spread("val/acc_best").mean) if scored else None


# --- paired comparisons ------------------------------------------------------------------------------------
@dataclass
class Comparison:
    """The best configuration (a) against another (b) on the same val images; a note when they could not be."""

    a: str
    b: str
    text: str  # the verdict sentence, or why there is none
    repetitions: int = 0
    images: int = 0  # images per repetition (summed over the distinct val sets with folds)
    a_only: int = 0
    b_only: int = 0
    accuracy_a: float | None = None
    accuracy_b: float | None = None
    diff: float | None = None
    lo: float | None = None
    hi: float | None = None
    p: float | None = None


def _read_predictions(job: Job) -> dict[str, tuple[str, str]] | str:
    """The job's {file: (true, predicted)}, or why there is none."""
    path = job.dir / PREDICTIONS
    if not path.is_file():
        return "no val_predictions.csv"
    try:
        return read_predictions(path)
    except (OSError, ValueError, KeyError, csv.Error) as e:
        return f"unreadable val_predictions.csv ({e})"


def _repetition(job: Job, rkeys: list[str]) -> tuple:
    return tuple(job.overrides.get(k) for k in rkeys)


def _rep_name(rep: tuple, rkeys: list[str], job: Job) -> str:
    return " ".join(f"{k}={v}" for k, v in zip(rkeys, rep, strict=True)) or f"#{job.num}"


def compare(best: Config, other: Config, rkeys: list[str], n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> Comparison:
    """`best` against `other` on the images both classified.

    Repetition i of `best` is paired with the repetition of `other` that has the same values of the repetition
    keys (same seed, same fold); within a pair the two val_predictions.csv must list the same files with the
    same true classes, else that pair's val sets differ and it is left out. Statistics: `paired_bootstrap_ci`
    (repetitions resampled, then images, one image resample shared by the repetitions on the same val set)
    and `mcnemar_exact` on the discordant images pooled over the pairs."""
    a_name, b_name = best.name, other.name
    a_reps = {_repetition(j, rkeys): j for j in best.ok()}
    b_reps = {_repetition(j, rkeys): j for j in other.ok()}
    common = [r for r in a_reps if r in b_reps]
    if not b_reps:
        return Comparison(a_name, b_name, f"`{b_name}`: no ok job; not compared")
    if not common:
        return Comparison(a_name, b_name, f"`{b_name}`: no ok repetition with the same {', '.join(rkeys)} as "
                          f"`{a_name}`'s; not compared")
    correct_a, correct_b, val_sets, left_out = [], [], [], []
    differ = 0
    for rep in common:
        ja, jb = a_reps[rep], b_reps[rep]
        pa, pb = _read_predictions(ja), _read_predictions(jb)
        if isinstance(pa, str) or isinstance(pb, str):
            reason = pa if isinstance(pa, str) else pb
            left_out.append((_rep_name(rep, rkeys, jb), reason, ja if isinstance(pa, str) else jb))
            continue
        if pa.keys() != pb.keys() or any(pa[f][0] != pb[f][0] for f in pa):
            differ += 1
            left_out.append((_rep_name(rep, rkeys, jb), "val sets differ (different files)", jb))
            continue
        files = sorted(pa)
        correct_a.append(np.array([pa[f][1] == pa[f][0] for f in files]))
        correct_b.append(np.array([pb[f][1] == pb[f][0] for f in files]))
        val_sets.append(tuple(files))
    if not correct_a:
        reasons = sorted({reason for _, reason, _ in left_out})
        jobs = " ".join(f"#{j.num}" if j.num is not None else j.dir.name for _, _, j in left_out)
        return Comparison(a_name, b_name, f"`{b_name}`: {'; '.join(reasons)} ({jobs}); not compared")
    diff, lo, hi = paired_bootstrap_ci(correct_a, correct_b, n_boot=n_boot, seed=seed, level=LEVEL,
                                       val_sets=val_sets)
    p = mcnemar_exact(correct_a, correct_b)
    a_only, b_only = discordant(correct_a, correct_b)
    distinct = len(set(val_sets))
    images = sum(len(v) for v in dict.fromkeys(val_sets))
    text = verdict(a_name, b_name, diff, lo, hi, p, level=LEVEL,
                   what="this val set" if distinct == 1 else "these val sets")
    reps = f" × {len(correct_a)} repetitions" if len(correct_a) > 1 else ""
    text += f" ({a_only} images only `{a_name}` got right, {b_only} only `{b_name}`; {images} images{reps})"
    if left_out:
        text += "; left out: " + ", ".join(f"{name}: {reason}" for name, reason, _ in left_out)
    return Comparison(a_name, b_name, text, repetitions=len(correct_a), images=images, a_only=a_only,
                      b_only=b_only, accuracy_a=float(np.mean([c.mean() for c in correct_a])),
                      accuracy_b=float(np.mean([c.mean() for c in correct_b])), diff=diff, lo=lo, hi=hi, p=p)


def paired_comparisons(configs: list[Config], rkeys: list[str]) -> tuple[list[str], list[Comparison]]:
    """summary.md's paired section (lines) and the comparisons, best configuration against each other one."""
    if len(configs) < 2:
        return [], []
    if not any((j.dir / PREDICTIONS).is_file() for c in configs for j in c.jobs):
        return ["Paired comparison: no job wrote val_predictions.csv (a sweep from before the `val_predictions` "
                "callback, or with it switched off); skipped."], []
    best = best_config(configs)
    if best is None:
        return [], []
    comparisons = [compare(best, c, rkeys) for c in configs if c is not best]
    repeated = any(c.repetitions > 1 for c in comparisons)
    over = f", pooled over repetitions paired by {', '.join(rkeys)}" if repeated else ""
    scheme = ("the repetitions, then the images, one image resample shared by repetitions on the same val set"
              if repeated else "the images, the same ones for both")
    lines = [
        f"## Paired comparisons: `{best.name}` (the best) against each configuration, on the same images",
        "",
        f"From each job's `{PREDICTIONS}` (its best epoch). Difference of accuracy in points (`{best.name}` minus "
        f"the other), {LEVEL:.0%} paired bootstrap interval ({N_BOOT:,} resamples of {scheme}), and an exact "
        f"McNemar test (two-sided binomial test on the images exactly one of the two got right{over}). Full "
        f"precision in `{COMPARISONS_CSV}`.",
        "",
        *(f"- {c.text}" for c in comparisons),
    ]
    return lines, comparisons


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


def _job_table(jobs: list[Job], keys: list[str]) -> list[str]:
    header = ["job", *keys, "best val acc", "epoch", "val loss", "wall time", "images/s", "trainable params",
              "total params", "peak memory (MB)", "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for job in jobs:
        status = job.status if not job.error else f"{job.status}: {job.error}"
        if job.summary.get("learned") is False:  # finished, but no better than answering the commonest class
            status += ": no better than chance"
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
    return lines


def _spread_cells(spread: Spread | None, kind: str) -> list[str]:
    """'mean ± std' and 'min – max' (one value when n = 1, '-' when none)."""
    if spread is None:
        return ["-", "-"]
    mean = _fmt(spread.mean, kind) + (f" ± {_fmt(spread.std, kind)}" if spread.std is not None else "")
    return [mean, f"{_fmt(spread.min, kind)} – {_fmt(spread.max, kind)}" if spread.n > 1 else "-"]


def _config_table(configs: list[Config], config_keys: list[str]) -> list[str]:
    header = [*config_keys, "n", "best val acc (mean ± std)", "min – max", "wall time (mean ± std)", "min – max",
              "jobs", "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for config in configs:
        acc = config.spread("val/acc_best")
        cells = [
            *(f"`{_short(config.values[k])}`" if k in config.values else "-" for k in config_keys),
            str(acc.n if acc else 0),
            *_spread_cells(acc, "acc"),
            *_spread_cells(config.spread("wall_time_s"), "time"),
            " ".join(f"#{j.num}" if j.num is not None else j.dir.name for j in config.jobs),
            config.status(),
        ]
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    return lines


def write_config_csv(configs: list[Config], config_keys: list[str], rkeys: list[str], path: Path) -> None:
    """With repetitions: one row per configuration, mean/std/n/min/max of best val acc and wall time over its ok
    repetitions, which repetitions those were, and every job's number and status."""
    stats = [f"{m}_{s}" for m in ("val_acc_best", "wall_time_s") for s in ("mean", "std", "min", "max")]
    header = [*config_keys, "n", *stats, *rkeys, "jobs", "status"]
    with atomic_writer(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for config in configs:
            acc, wall = config.spread("val/acc_best"), config.spread("wall_time_s")
            numbers = []
            for spread in (acc, wall):
                numbers += ["" if spread is None or v is None else v
                            for v in ((spread.mean, spread.std, spread.min, spread.max) if spread else (None,) * 4)]
            writer.writerow([
                *(config.values.get(k, "") for k in config_keys),
                acc.n if acc else 0,
                *numbers,
                *(" ".join(str(j.overrides.get(k, "")) for j in config.ok()) for k in rkeys),
                " ".join(str(j.num) if j.num is not None else j.dir.name for j in config.jobs),
                config.status(),
            ])


def write_markdown(jobs: list[Job], keys: list[str], path: Path, sweep_dir: Path, configs: list[Config] | None = None,
                   rkeys: list[str] | None = None, paired: list[str] | None = None) -> None:
    """The report as Markdown. `configs` and `rkeys` (repetitions): the per-configuration table first, then
    the jobs; `paired`: the paired-comparison section's lines."""
    lines = [f"# Sweep report: `{sweep_dir}`", ""]
    if rkeys and configs is not None:
        config_keys = [k for k in keys if k not in rkeys]
        lines += [_config_headline(jobs, configs, rkeys), "", *_config_table(configs, config_keys), "",
                  *([*paired, ""] if paired else []), "## Jobs", "", *_job_table(jobs, keys)]
    else:
        lines += [_headline(jobs, keys), "", *_job_table(jobs, keys)]
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
        acc = best.spread("val/acc_best")
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


def build_report(sweep_dir: str | Path) -> dict[str, Path]:
    """Write summary.csv, summary.md and summary.png into `sweep_dir` (and summary_jobs.csv with repetitions,
    comparisons.csv when jobs wrote val_predictions.csv); return their paths."""
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
    rkeys = repeat_keys(jobs, keys)
    config_keys = [k for k in keys if k not in rkeys]
    configs = group_configs(jobs, config_keys if rkeys else keys)
    paths = {name: sweep_dir / name for name in FILES}
    paired, comparisons = paired_comparisons(configs, rkeys)
    if rkeys:
        write_config_csv(configs, config_keys, rkeys, paths["summary.csv"])
        paths[JOBS_CSV] = sweep_dir / JOBS_CSV
        write_csv(jobs, keys, paths[JOBS_CSV])
        write_markdown(jobs, keys, paths["summary.md"], sweep_dir, configs, rkeys, paired)
        write_config_plot(configs, paths["summary.png"], sweep_dir)
    else:
        write_csv(jobs, keys, paths["summary.csv"])
        write_markdown(jobs, keys, paths["summary.md"], sweep_dir, paired=paired)
        write_plot(jobs, keys, paths["summary.png"], sweep_dir)
    if comparisons:
        paths[COMPARISONS_CSV] = sweep_dir / COMPARISONS_CSV
        write_comparisons_csv(comparisons, paths[COMPARISONS_CSV])
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
