"""`run_job`: training as a Hydra job, so that sweeps survive their jobs.

`run_job` is the task `train.py` hands to Hydra. In a multirun, a job that raises (a bad override value, out of
memory, a diverged loss) is logged with its traceback, recorded in its directory as `summary.json` with
`status: failed` and the error's first line, and returns None, so the sweep goes on (Hydra's sweepers stop at the
first job that raises; the Optuna sweeper records a None as a FAIL trial, where a NaN would crash it in
hydra-optuna-sweeper 1.3 / optuna 2.10). A single run is recorded the same way, with the checkpoint and the
command that continue it when it saved last.ckpt, and re-raises; a Ctrl-C outside the training loop is recorded
`interrupted`.

It puts together the rest of `transferlab.jobs`: the job's GPU (`gpus`), what earlier attempts left in its
directory (`attempts`: resume, skip, set aside, job.json), the repetitions of `repeat: {seeds: [...], folds: K}`
(`repetitions`: each in `rep_seed<s>_fold<i>/`, the job's value the mean) and the DDP ranks it starts (`ddp`).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from transferlab.config.command import check_added_keys, with_checkpoint
from transferlab.config.schema import DatasetConfig
from transferlab.config.settings import ADDABLE_KEYS, RunSettings
from transferlab.data.folders import check_layout
from transferlab.errors import RunInterrupted
from transferlab.jobs.attempts import (
    JobDirConflict,
    error_line,
    explicit_sweep_dir,
    job_value,
    previous_attempt,
    record_job,
    requeued,
    write_failed_summary,
)
from transferlab.jobs.ddp import SWEEP_JOB_ENV, children_rerun_this_job, ckpt_override, is_rank_zero, quoted
from transferlab.jobs.gpus import assign_gpu
from transferlab.jobs.repetitions import repeated_summary, repetitions
from transferlab.record import RunRecord

log = logging.getLogger(__name__)


class RepetitionFailed(RuntimeError):
    """One repetition of a repeated job failed (in a sweep; the message names it and its error)."""


Task = Callable[[DictConfig], dict[str, Any]]


def run_job(cfg: DictConfig, task: Task | None = None) -> float | None:
    """Run one training job under Hydra; return its val/acc_best (what sweepers such as Optuna maximise).

    None when the job failed in a multirun, or when it finished without a validation accuracy."""
    task = task or _train
    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
    in_sweep = (hydra_cfg is not None and hydra_cfg.mode == RunMode.MULTIRUN) or SWEEP_JOB_ENV in os.environ
    output_dir = Path(hydra_cfg.runtime.output_dir if hydra_cfg is not None else cfg.paths.output_dir)
    child = "LOCAL_RANK" in os.environ  # a DDP rank > 0 started by this job: rank 0 decided everything
    resuming = not child and (requeued() or (in_sweep and explicit_sweep_dir(hydra_cfg)))
    settings = None
    try:
        if task is _train:  # a config mistake is refused here, before the training stack is imported
            check_added_keys(cfg, ADDABLE_KEYS)  # `+foo=1`: refused, not ignored
            settings = RunSettings.from_config(copy.deepcopy(cfg))  # a copy: repetitions still change the seed
            if settings.dataset.prepare is None and settings.dataset._target_ == DatasetConfig._target_:
                check_layout(settings.dataset.root)  # dataset.root=/ is refused in a second, not after a walk of /
        if not child:
            assign_gpu(cfg, hydra_cfg)
            if hydra_cfg is not None and hydra_cfg.mode == RunMode.MULTIRUN and is_rank_zero():
                record_job(output_dir, list(hydra_cfg.overrides.task), check=resuming)
        reps = repetitions(cfg)
        if reps and not child:
            return run_repeated(cfg, task, output_dir, reps, hydra_cfg, in_sweep, resuming)
        if resuming:
            finished, value = previous_attempt(cfg, output_dir)
            if finished:
                return value
        with children_rerun_this_job(hydra_cfg, in_sweep, ckpt_override(cfg)):
            summary = task(cfg)
    except (RunInterrupted, JobDirConflict):  # a stop request ends the sweep too; the job's summary says how to
        raise                                  # resume. A conflict: this sweep dir is another sweep's.
    except KeyboardInterrupt:  # Ctrl-C outside the training loop (data preparation, the feature cache), whose
        if is_rank_zero():      # own stop is RunInterrupted: recorded, resumable from last.ckpt if there is one
            resume = _resume(settings, output_dir) if not child else {}
            RunRecord(status="interrupted", signal="SIGINT", **resume).write(output_dir)
        raise
    except Exception as e:  # recorded in the run's directory, a single run's as a sweep job's
        error = str(e) if isinstance(e, RepetitionFailed) else error_line(e)
        resume = {} if in_sweep or child else _resume(settings, output_dir)
        if is_rank_zero():
            write_failed_summary(output_dir, error, **resume)
        if not in_sweep:
            if resume:
                log.error("The run failed after saving %s; to continue it from there: %s", resume["checkpoint"],
                          resume["resume_command"])
            raise
        log.exception("Job failed, the sweep goes on: %s", error)  # the traceback, into this job's log
        return None
    return job_value(summary)


def _resume(settings: RunSettings | None, output_dir: Path) -> dict[str, str]:
    """A run that stopped after saving `checkpoints/last.ckpt`: that checkpoint and the command that continues
    the run from it (not for a failed sweep job: re-running its sweep runs it again, `attempts`)."""
    last = output_dir / "checkpoints" / "last.ckpt"
    if settings is None or not last.is_file():
        return {}
    from transferlab.tasks.train import resume_command  # the run got as far as a checkpoint: already imported

    return {"checkpoint": str(last), "resume_command": with_checkpoint(resume_command(settings), str(last))}


def _train(cfg: DictConfig) -> dict[str, Any]:
    """The training task (`transferlab.tasks.train.train`), imported when a job runs: it imports torch and
    Lightning."""
    from transferlab.tasks.train import train

    return train(cfg)


def run_repeated(cfg: DictConfig, task: Task, output_dir: Path, reps: list[tuple[str, dict[str, Any]]],
                 hydra_cfg: DictConfig | None, in_sweep: bool, resuming: bool) -> float | None:
    """Run the task once per repetition, each in `output_dir/<name>/` with its own summary.json, and write the
    job's summary.json (`repeated_summary`): the mean val/acc_best (the job's value), its std (sample, n-1), n
    and every value. A repetition that fails fails the job (in a sweep: recorded, None returned, the remaining
    ones skipped)."""
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
            values[name], summaries[name] = value, RunRecord.read(rep_dir).to_dict()
            continue
        rep_dir.mkdir(parents=True, exist_ok=True)
        children = [*(f"{k}={v}" for k, v in changes.items()), f"paths.output_dir={quoted(str(rep_dir))}",
                    "repeat=null", *ckpt_override(rep_cfg)]
        try:
            with children_rerun_this_job(hydra_cfg, in_sweep, children):
                summary = task(rep_cfg)
        except (RunInterrupted, JobDirConflict):
            raise
        except Exception as e:
            if is_rank_zero():
                write_failed_summary(rep_dir, error_line(e))
            if not in_sweep:
                raise
            raise RepetitionFailed(f"{name}: {error_line(e)}") from e
        values[name], summaries[name] = job_value(summary), summary
    job = repeated_summary(cfg, values, summaries)
    log.info("%d repetitions: val/acc_best mean %s, std %s (%s)", len(values), job.val_acc_best,
             job.val_acc_best_std, ", ".join(f"{k}: {v}" for k, v in values.items()))
    if is_rank_zero():
        job.write(output_dir)
    return job.val_acc_best
