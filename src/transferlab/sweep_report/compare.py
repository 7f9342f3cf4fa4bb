"""The numbers of a sweep report: a metric's spread over a configuration's repetitions (`spread`), the best
configuration (`best_config`), and the paired comparison of the best against every other one on the same val
images (`paired_comparisons`), with the statistics of `transferlab.evaluation.stats`.

With repetitions, repetition i of one configuration is paired with the repetition of the other that has the
same seed/fold. Jobs without `val_predictions.csv` (sweeps from before it existed) and jobs whose val sets differ
are not compared, with a note.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field

import numpy as np

from transferlab.evaluation.stats import mean_std, paired_comparison, read_predictions
from transferlab.sweep_report.collect import Config, Job

PREDICTIONS = "val_predictions.csv"
N_BOOT = 10_000  # bootstrap resamples of the paired comparison
BOOT_SEED = 0  # the bootstrap's seed: a report rebuilt from the same files says the same thing
LEVEL = 0.95


# --- spreads over repetitions ------------------------------------------------------------------------------
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
        mean, std, n = mean_std(values)
        return cls(mean, std if n > 1 else None, n, float(min(values)), float(max(values)))


def spread(config: Config, key: str) -> Spread | None:
    """`key` (a summary.json metric) over `config`'s ok repetitions; None when none has it."""
    return Spread.of([j.metric(key) for j in config.ok() if j.metric(key) is not None])


def best_config(configs: list[Config]) -> Config | None:
    """The configuration with the highest mean best val acc over its ok repetitions (the first on a tie)."""
    scored = [c for c in configs if spread(c, "val/acc_best") is not None]
    return max(scored, key=lambda c: spread(c, "val/acc_best").mean) if scored else None


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


@dataclass
class Paired:
    """The paired section of a report: the best configuration and its comparisons, or why there are none
    (`skipped`: a one-line note; None with no comparison either: nothing to say, e.g. a single configuration)."""

    best: Config | None = None
    comparisons: list[Comparison] = field(default_factory=list)
    skipped: str | None = None

    @property
    def repeated(self) -> bool:
        return any(c.repetitions > 1 for c in self.comparisons)


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
    same true classes, else that pair's val sets differ and it is left out. Statistics: `paired_comparison`
    (`paired_bootstrap_ci`: repetitions resampled, then images, one image resample shared by the repetitions
    on the same val set; `mcnemar_exact` on the discordant images pooled over the pairs)."""
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
    for rep in common:
        ja, jb = a_reps[rep], b_reps[rep]
        pa, pb = _read_predictions(ja), _read_predictions(jb)
        if isinstance(pa, str) or isinstance(pb, str):
            reason = pa if isinstance(pa, str) else pb
            left_out.append((_rep_name(rep, rkeys, jb), reason, ja if isinstance(pa, str) else jb))
            continue
        if pa.keys() != pb.keys() or any(pa[f][0] != pb[f][0] for f in pa):
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
    distinct = len(set(val_sets))
    images = sum(len(v) for v in dict.fromkeys(val_sets))
    result = paired_comparison(correct_a, correct_b, a_name, b_name, n_boot=n_boot, seed=seed, level=LEVEL,
                               val_sets=val_sets, what="this val set" if distinct == 1 else "these val sets")
    reps = f" × {len(correct_a)} repetitions" if len(correct_a) > 1 else ""
    text = (f"{result.sentence} ({result.a_only} images only `{a_name}` got right, {result.b_only} only "
            f"`{b_name}`; {images} images{reps})")
    if left_out:
        text += "; left out: " + ", ".join(f"{name}: {reason}" for name, reason, _ in left_out)
    return Comparison(a_name, b_name, text, repetitions=len(correct_a), images=images, a_only=result.a_only,
                      b_only=result.b_only, accuracy_a=float(np.mean([c.mean() for c in correct_a])),
                      accuracy_b=float(np.mean([c.mean() for c in correct_b])), diff=result.diff, lo=result.lo,
                      hi=result.hi, p=result.p)


def paired_comparisons(configs: list[Config], rkeys: list[str]) -> Paired:
    """The best configuration against each other one (none with fewer than two configurations, or when no job
    wrote val_predictions.csv: then `skipped` says so)."""
    if len(configs) < 2:
        return Paired()
    if not any((j.dir / PREDICTIONS).is_file() for c in configs for j in c.jobs):
        return Paired(skipped="Paired comparison: no job wrote val_predictions.csv (a sweep from before the "
                              "`val_predictions` callback, or with it switched off); skipped.")
    best = best_config(configs)
    if best is None:
        return Paired()
    return Paired(best, [compare(best, c, rkeys) for c in configs if c is not best])
