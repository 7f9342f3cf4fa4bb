"""Training as a Hydra job, so that sweeps survive their jobs.

- `run_job` is the task `train.py` hands to Hydra. In a multirun, a job that raises (a bad override value, out
  of memory, a diverged loss) is logged with its traceback, recorded in its directory as `summary.json` with
  `status: failed` and the error's first line, and returns None, so the sweep goes on (Hydra's sweepers stop at
  the first job that raises; the Optuna sweeper records a None as a FAIL trial, where a NaN would crash it in
  hydra-optuna-sweeper 1.3 / optuna 2.10). A single run re-raises.
- Lightning's DDP launcher starts ranks > 0 by re-running the command line with the Hydra run directory. In a
  multirun that command line holds `-m` and every swept value, so each child would start a sweep of its own in
  a new directory. `run_job` makes the children re-run *this job* (its overrides, run mode, its directory).
- A SLURM job requeued after preemption or timeout restarts in the same directory: it resumes from its
  `checkpoints/last.ckpt` instead of starting over.
- Resuming a sweep: the same multirun command with `hydra.sweep.dir=<its dir>` re-runs every job in its old
  directory (Hydra numbers the jobs the same way), and each job looks at what it left there: `summary.json`
  with status `ok` -> not retrained, its recorded val/acc_best is returned; no summary or `interrupted` ->
  resumed from `checkpoints/last.ckpt` (from the start without one); `failed` -> the failed attempt's
  summary.json, checkpoints/ and tensorboard/ are set aside (`*.failed-<n>`) and the job runs again. Every
  multirun job records its overrides in `job.json`; a directory holding another job's stops the sweep.
- `repeat: {seeds: [...], folds: K}` runs the task once per seed and/or fold, each in `rep_seed<s>_fold<i>/`,
  and the job's value is the mean (its summary.json: mean, std, n and each repetition's value).
- Parallel sweeps on several GPUs: with a parallel joblib launcher and `trainer.devices: auto`, job n trains
  on GPU n % (number of GPUs) instead of every job asking for all of them.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import os
import re
import statistics
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from transferlab.callbacks.interrupt import RunInterrupted
from transferlab.config.checks import ConfigValueError
from transferlab.files import atomic_write_json

log = logging.getLogger(__name__)

# Set by a multirun job for the DDP ranks it starts: a failing child rank then exits cleanly (rank 0 records the
# failure) instead of making Lightning's process observer SIGKILL the whole sweep.
SWEEP_JOB_ENV = "TRANSFERLAB_SWEEP_JOB"
_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", SWEEP_JOB_ENV)


class JobDirConflict(ConfigValueError):
    """hydra.sweep.dir points at a sweep whose job directory holds another job (other overrides)."""


class RepetitionFailed(RuntimeError):
    """One repetition of a repeated job failed (in a sweep; the message names it and its error)."""


Task = Callable[[DictConfig], dict[str, Any]]


def run_job(cfg: DictConfig, task: Task | None = None) -> float | None:
    """Run one training job under Hydra; return its val/acc_best (what sweepers such as Optuna maximise).

    None when the job failed in a multirun, or when it finished without a validation accuracy."""
    if task is None:
        from transferlab.tasks.train import train as task
    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
    in_sweep = (hydra_cfg is not None and hydra_cfg.mode == RunMode.MULTIRUN) or SWEEP_JOB_ENV in os.environ
    output_dir = Path(hydra_cfg.runtime.output_dir if hydra_cfg is not None else cfg.paths.output_dir)
    child = "LOCAL_RANK" in os.environ  # a DDP rank > 0 started by this job: rank 0 decided everything
    resuming = not child and (_requeued() or (in_sweep and _explicit_sweep_dir(hydra_cfg)))
    try:
        if not child:
            assign_gpu(cfg, hydra_cfg)
            if hydra_cfg is not None and hydra_cfg.mode == RunMode.MULTIRUN and _is_rank_zero():
                record_job(output_dir, list(hydra_cfg.overrides.task), check=resuming)
        reps = repetitions(cfg)
        if reps and not child:
            return run_repeated(cfg, task, output_dir, reps, hydra_cfg, in_sweep, resuming)
        if resuming:
            finished, value = previous_attempt(cfg, output_dir)
            if finished:
                return value
        with _ddp_children_rerun_this_job(hydra_cfg, in_sweep, _ckpt_override(cfg)):
            summary = task(cfg)
    except (RunInterrupted, JobDirConflict):  # a stop request ends the sweep too; the job's summary says how to
        raise                                  # resume. A conflict: this sweep dir is another sweep's.
    except Exception as e:
        if not in_sweep:
            raise
        error = str(e) if isinstance(e, RepetitionFailed) else error_line(e)
        log.exception("Job failed, the sweep goes on: %s", error)  # the traceback, into this job's log
        if _is_rank_zero():
            write_failed_summary(output_dir, error)
        return None
    return _value(summary)


def _value(summary: dict[str, Any]) -> float | None:
    value = summary.get("val/acc_best")
    return None if value is None or math.isnan(value) else float(value)


# --- resuming a sweep ------------------------------------------------------------------------------------------
def _requeued() -> bool:
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0) >= 1


def _explicit_sweep_dir(hydra_cfg: DictConfig | None) -> bool:
    """The sweep dir was given on the command line: the only way a multirun meets directories it did not create
    (the default one is created exclusively, `${unique_dir:}`)."""
    return hydra_cfg is not None and any(o.startswith("hydra.sweep.dir=") for o in hydra_cfg.overrides.hydra)


def record_job(output_dir: Path, overrides: list[str], check: bool) -> None:
    """Write `job.json` (this job's overrides); when resuming, first refuse a directory holding another job
    (a different command, or an Optuna search, whose trials get new values under the same numbers)."""
    path = output_dir / "job.json"
    if check and path.is_file():
        try:
            before = json.loads(path.read_text()).get("overrides")
        except (json.JSONDecodeError, AttributeError):
            before = None
        if before is not None and sorted(before) != sorted(overrides):
            raise JobDirConflict(
                f"{output_dir} holds another job ({' '.join(before) or 'no overrides'}), not this one "
                f"({' '.join(overrides) or 'no overrides'}). Resume a sweep with the command that started it; "
                "an Optuna search resumes from its study without hydra.sweep.dir.")
    atomic_write_json(path, {"overrides": overrides})


def previous_attempt(cfg: DictConfig, run_dir: Path) -> tuple[bool, float | None]:
    """Act on what an earlier attempt left in `run_dir`: (True, its recorded val/acc_best) for a finished run
    (the caller trains nothing); else (False, None), after pointing `cfg.ckpt_path` at `last.ckpt` for an
    incomplete run, or setting a failed attempt aside."""
    summary_path, last = run_dir / "summary.json", run_dir / "checkpoints" / "last.ckpt"
    summary: dict[str, Any] = {}
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text())
        except json.JSONDecodeError:
            summary = {}  # killed while writing it: incomplete
    status = summary.get("status")
    if status == "ok":
        log.info("%s finished earlier (summary.json: ok, val/acc_best=%s): not retrained.", run_dir,
                 summary.get("val/acc_best"))
        return True, _value(summary)
    if status == "failed":
        if _is_rank_zero():
            n = _set_aside(run_dir)
            log.info("%s failed earlier (%s): set aside as *.failed-%d; running it again.", run_dir,
                     summary.get("error"), n)
        return False, None
    if last.is_file():
        log.info("%s is incomplete (%s): resuming from %s", run_dir,
                 f"summary.json: {status}" if status else "no summary.json", last)
        with open_dict(cfg):
            cfg.ckpt_path = str(last)
    return False, None


def _set_aside(run_dir: Path) -> int:
    """Rename a failed attempt's summary.json, checkpoints/ and tensorboard/ to `<name>.failed-<n>` (kept
    for a look; not `summary.json`, so the sweep report does not count them as jobs)."""
    names = ("summary.json", "checkpoints", "tensorboard")
    n = 1
    while any((run_dir / f"{name}.failed-{n}").exists() for name in names):
        n += 1
    for name in names:
        if (run_dir / name).exists():
            os.replace(run_dir / name, run_dir / f"{name}.failed-{n}")
    return n


def _ckpt_override(cfg: DictConfig) -> list[str]:
    """What DDP ranks > 0 must be told: the checkpoint rank 0 resumes from."""
    ckpt = cfg.get("ckpt_path")
    return [f"ckpt_path={_quoted(str(ckpt))}"] if ckpt else []


def _quoted(value: str) -> str:
    """A value as a Hydra override: plain when the grammar takes it as is, else single-quoted."""
    if re.fullmatch(r"[\w./@-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# --- repetitions -----------------------------------------------------------------------------------------------
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
        name = "rep" + (f"_seed{seed}" if seed is not None else "") + (f"_fold{fold}" if fold is not None else "")
        reps.append((name, changes))
    return reps


def run_repeated(cfg: DictConfig, task: Task, output_dir: Path, reps: list[tuple[str, dict[str, Any]]],
                 hydra_cfg: DictConfig | None, in_sweep: bool, resuming: bool) -> float | None:
    """Run the task once per repetition, each in `output_dir/<name>/` with its own summary.json, and write the
    job's summary.json: the mean val/acc_best (the job's value), its std (sample, n-1), n and every value.
    A repetition that fails fails the job (in a sweep: recorded, None returned, the remaining ones skipped)."""
    if resuming:
        finished, value = previous_attempt(cfg, output_dir)  # the whole job finished earlier
        if finished:
            return value
    values: dict[str, float | None] = {}
    summaries: dict[str, dict[str, Any]] = {}
    for name, changes in reps:
        rep_dir = output_dir / name
        rep_cfg = copy.deepcopy(cfg)
        with open_dict(rep_cfg):
            for key, value in changes.items():
                OmegaConf.update(rep_cfg, key, value, merge=False)
            rep_cfg.paths.output_dir = str(rep_dir)
            rep_cfg.repeat = None
        log.info("Repetition %s (%s) in %s", name, " ".join(f"{k}={v}" for k, v in changes.items()), rep_dir)
        finished, value = previous_attempt(rep_cfg, rep_dir) if resuming else (False, None)
        if finished:
            values[name], summaries[name] = value, json.loads((rep_dir / "summary.json").read_text())
            continue
        rep_dir.mkdir(parents=True, exist_ok=True)
        children = [*(f"{k}={v}" for k, v in changes.items()), f"paths.output_dir={_quoted(str(rep_dir))}",
                    "repeat=null", *_ckpt_override(rep_cfg)]
        try:
            with _ddp_children_rerun_this_job(hydra_cfg, in_sweep, children):
                summary = task(rep_cfg)
        except (RunInterrupted, JobDirConflict):
            raise
        except Exception as e:
            if not in_sweep:
                raise
            if _is_rank_zero():
                write_failed_summary(rep_dir, error_line(e))
            raise RepetitionFailed(f"{name}: {error_line(e)}") from e
        values[name], summaries[name] = _value(summary), summary
    ok = [v for v in values.values() if v is not None]
    mean = statistics.fmean(ok) if len(ok) == len(values) else None
    std = (statistics.stdev(ok) if len(ok) > 1 else 0.0) if mean is not None else None
    firsts = next(iter(summaries.values()), {})
    job = {
        "status": "ok",
        "val/acc_best": mean,
        "val/acc_best_std": std,
        "val/acc_best_n": len(ok),
        "repeat": {"by": OmegaConf.to_container(cfg.repeat), "values": values, "mean": mean, "std": std,
                   "n": len(ok)},
        "wall_time_s": round(sum(s.get("wall_time_s") or 0.0 for s in summaries.values()), 2),
        "val/loss": _mean(s.get("val/loss") for s in summaries.values()),
        "peak_memory_mb": max((s.get("peak_memory_mb") or 0.0 for s in summaries.values()), default=None),
        **{k: firsts.get(k) for k in ("trainable_params", "total_params", "classes", "device", "precision")},
    }
    log.info("%d repetitions: val/acc_best mean %s, std %s (%s)", len(values), mean, std,
             ", ".join(f"{k}: {v}" for k, v in values.items()))
    if _is_rank_zero():
        atomic_write_json(output_dir / "summary.json", job)
    return mean


def _mean(values) -> float | None:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.fmean(vals) if vals else None


# --- one GPU per parallel job ------------------------------------------------------------------------------------
def assign_gpu(cfg: DictConfig, hydra_cfg: DictConfig | None) -> None:
    """With a parallel launcher (joblib, n_jobs > 1 or negative = all cores), several CUDA devices and
    `trainer.devices: auto`, give job n the GPU n % device_count (else every concurrent job takes them all).
    Jobs are numbered in launch order and joblib starts them in that order, so n_jobs <= number of GPUs
    consecutive jobs land on distinct GPUs; a long job can still share its GPU with job n + device_count."""
    if hydra_cfg is None or hydra_cfg.mode != RunMode.MULTIRUN or not _parallel_launcher(hydra_cfg):
        return
    trainer = cfg.get("trainer")
    if trainer is None or str(trainer.get("devices")) != "auto" or str(trainer.get("accelerator")) not in (
            "auto", "gpu", "cuda"):
        return
    import torch

    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return
    count = torch.cuda.device_count()
    gpu = int(hydra_cfg.job.num) % count
    with open_dict(cfg):
        cfg.trainer.accelerator = "gpu"
        cfg.trainer.devices = [gpu]
    log.info("Parallel sweep on %d GPUs: job %d trains on GPU %d (trainer.devices=[%d])", count,
             hydra_cfg.job.num, gpu, gpu)


def _parallel_launcher(hydra_cfg: DictConfig) -> bool:
    launcher = hydra_cfg.get("launcher") or {}
    if "joblib" not in str(launcher.get("_target_", "")).lower():
        return False
    n_jobs = launcher.get("n_jobs")
    return n_jobs is None or int(n_jobs) > 1 or int(n_jobs) < 0  # joblib: -1 = one per core


def error_line(e: BaseException, limit: int = 300) -> str:
    """`Type: first line of the message`; a first line that only introduces the cause (ends with ':', as
    Hydra's 'Error in call to target ...:') gets the next line too."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if text.endswith(":") and len(lines) > 1:
        text = f"{text} {lines[1]}"
    text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def write_failed_summary(output_dir: Path, error: str) -> Path:
    """summary.json with status failed; keeps whatever the run already measured (if it got that far)."""
    path = output_dir / "summary.json"
    summary: dict[str, Any] = {}
    if path.is_file():
        try:
            summary = json.loads(path.read_text())
        except json.JSONDecodeError:
            pass
    summary.setdefault("val/acc_best", None)
    summary.update(status="failed", error=error)
    return atomic_write_json(path, summary)


def _is_rank_zero() -> bool:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0 and int(os.environ.get("LOCAL_RANK", 0)) == 0


@contextmanager
def _ddp_children_rerun_this_job(hydra_cfg: DictConfig | None, in_sweep: bool,
                                 extra: list[str] = ()) -> Iterator[None]:
    """Make the command line Lightning gives DDP ranks > 0 this job's own (plus `extra` overrides: the
    checkpoint rank 0 resumes from, a repetition's settings), and clean up DDP state afterwards (the next job
    of a local sweep runs in this same process)."""
    if hydra_cfg is None or "LOCAL_RANK" in os.environ:  # not under Hydra, or this is already a child rank
        yield
        return
    saved_argv = list(sys.argv)
    saved_env = {k: os.environ.get(k) for k in _DDP_ENV}
    # Lightning's _hydra_subprocess_cmd: [python, argv[0], *argv[1:], hydra.run.dir="<run.dir>", ...]
    sys.argv = [sys.argv[0], *_config_flags(hydra_cfg), *hydra_cfg.overrides.task,
                *(o for o in hydra_cfg.overrides.hydra if not o.startswith(("hydra.mode=", "hydra.run.dir="))),
                *extra]
    with read_write(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    if in_sweep:
        os.environ[SWEEP_JOB_ENV] = hydra_cfg.runtime.output_dir
    try:
        yield
    finally:
        sys.argv = saved_argv
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _destroy_process_group()


def _config_flags(hydra_cfg: DictConfig) -> list[str]:
    """--config-name/--config-dir as given on the command line (they are not overrides)."""
    flags = [f"--config-name={hydra_cfg.job.config_name}"] if hydra_cfg.job.get("config_name") else []
    for source in hydra_cfg.runtime.get("config_sources", []):
        if source.get("provider") == "command-line" and source.get("schema") == "file":
            flags.append(f"--config-dir={source.path}")
    return flags


def _destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
