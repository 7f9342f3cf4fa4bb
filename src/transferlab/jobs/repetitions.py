"""`repeat: {seeds: [...], folds: K}`: the repetitions of one job, how their directories are named, and the job's
summary over them.

- `repetitions(cfg)`: (directory name, config changes) per repetition;
- `rep_dir_name(seed, fold)` and `parse_rep_dir(name)`: the one spelling of a repetition's directory,
  `rep_seed<s>_fold<i>/` (`rep_seed<s>/`, `rep_fold<i>/` with one of the two), named here for the job runner
  (`transferlab.jobs.job.run_repeated`) and parsed here for the sweep report, which lists the repetitions;
- `repeated_summary(...)`: the repeated job's summary.json (the mean val/acc_best, its std, n, every value).

Light and pure (no Lightning, torch or Hydra runtime), one layer below the rest of `transferlab.jobs`, so that
the sweep report can read the names it writes.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Any, NamedTuple

from omegaconf import DictConfig, OmegaConf

from transferlab.errors import ConfigValueError
from transferlab.evaluation.stats import mean_std
from transferlab.record import RunRecord

_REP_DIR = re.compile(r"^rep(?:_seed(?P<seed>-?\d+))?(?:_fold(?P<fold>\d+))?$")


class RepDir(NamedTuple):
    """What a repetition's directory name says: its seed and/or fold (None: not repeated over it)."""

    seed: int | None
    fold: int | None


def rep_dir_name(seed: int | None, fold: int | None) -> str:
    """`rep_seed<seed>_fold<fold>`, leaving out the part that is None: `rep_seed1`, `rep_fold0`."""
    return "rep" + (f"_seed{seed}" if seed is not None else "") + (f"_fold{fold}" if fold is not None else "")


def parse_rep_dir(name: str) -> RepDir | None:
    """The seed and fold of a repetition's directory name (`rep_dir_name`'s inverse); None when `name` is not one."""
    match = _REP_DIR.match(name)
    if match is None:
        return None
    return RepDir(*(None if match[k] is None else int(match[k]) for k in ("seed", "fold")))


def repetitions(cfg: DictConfig) -> list[tuple[str, dict[str, Any]]]:
    """(directory name, config changes) per repetition of `repeat: {seeds: [...], folds: K}`; [] without one.
    Seeds and folds combine (every seed with every fold: repeated cross-validation)."""
    repeat = cfg.get("repeat")
    if not repeat:
        return []
    unknown = sorted(set(repeat) - {"seeds", "folds"})
    if unknown:
        raise ConfigValueError(f"repeat: unknown key(s) {unknown}; use repeat.seeds=[1,2,3] and/or repeat.folds=K.")
    seeds, folds = repeat.get("seeds"), repeat.get("folds")
    if seeds is not None and (isinstance(seeds, (int, str)) or not len(seeds)
                              or not all(isinstance(x, int) for x in seeds) or len(set(seeds)) != len(seeds)):
        raise ConfigValueError(f"repeat.seeds={seeds}: a list of distinct integer seeds, e.g. [1,2,3].")
    if folds is not None and (not isinstance(folds, int) or folds < 2):
        raise ConfigValueError(f"repeat.folds={folds}: an integer >= 2 (the folds of dataset.folds).")
    reps = []
    for seed, fold in itertools.product(seeds if seeds else [None], range(folds) if folds else [None]):
        changes: dict[str, Any] = {}
        if seed is not None:
            changes["seed"] = int(seed)
        if fold is not None:
            changes.update({"dataset.folds": int(folds), "dataset.fold": fold})
        reps.append((rep_dir_name(seed, fold), changes))
    return reps


def repeated_summary(cfg: DictConfig, values: dict[str, float | None],
                     summaries: dict[str, dict[str, Any]]) -> RunRecord:
    """The summary.json of a repeated job (written by `transferlab.jobs.job.run_repeated`): the mean val/acc_best
    of its repetitions (the job's value; None unless every repetition has one), its sample std (n - 1), n and
    each repetition's value (`values`, by directory name), total wall time, mean val loss, the largest peak
    memory, and the model's facts from the first repetition's summary (`summaries`)."""
    ok = [v for v in values.values() if v is not None]
    mean, std = mean_std(ok)[:2] if ok and len(ok) == len(values) else (None, None)
    firsts = next(iter(summaries.values()), {})
    return RunRecord(
        val_acc_best=mean, val_acc_best_std=std, val_acc_best_n=len(ok),
        wall_time_s=round(sum(s.get("wall_time_s") or 0.0 for s in summaries.values()), 2),
        val_loss=_mean(s.get("val/loss") for s in summaries.values()),
        peak_memory_mb=max((s.get("peak_memory_mb") or 0.0 for s in summaries.values()), default=None),
        **{k: firsts.get(k) for k in ("trainable_params", "total_params", "device", "precision")},
        classes=firsts.get("classes") or [],
        extra={"repeat": {"by": OmegaConf.to_container(cfg.repeat), "values": values, "mean": mean, "std": std,
                          "n": len(ok)}},
    )


def _mean(values) -> float | None:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return mean_std(vals)[0] if vals else None
