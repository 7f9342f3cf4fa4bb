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
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict, read_write

from transferlab.callbacks.interrupt import RunInterrupted
from transferlab.files import atomic_write_json

log = logging.getLogger(__name__)

# Set by a multirun job for the DDP ranks it starts: a failing child rank then exits cleanly (rank 0 records the
# failure) instead of making Lightning's process observer SIGKILL the whole sweep.
SWEEP_JOB_ENV = "TRANSFERLAB_SWEEP_JOB"
_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", SWEEP_JOB_ENV)


def run_job(cfg: DictConfig, task: Callable[[DictConfig], dict[str, Any]] | None = None) -> float | None:
    """Run one training job under Hydra; return its val/acc_best (what sweepers such as Optuna maximise).

    None when the job failed in a multirun, or when it finished without a validation accuracy."""
    if task is None:
        from transferlab.tasks.train import train as task
    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
    in_sweep = (hydra_cfg is not None and hydra_cfg.mode == RunMode.MULTIRUN) or SWEEP_JOB_ENV in os.environ
    output_dir = Path(hydra_cfg.runtime.output_dir if hydra_cfg is not None else cfg.paths.output_dir)
    try:
        _resume_if_requeued(cfg, output_dir)
        with _ddp_children_rerun_this_job(hydra_cfg, in_sweep):
            summary = task(cfg)
    except RunInterrupted:  # a stop request ends the sweep too; the job's summary says how to resume
        raise
    except Exception as e:
        if not in_sweep:
            raise
        error = error_line(e)
        log.exception("Job failed, the sweep goes on: %s", error)  # the traceback, into this job's log
        if _is_rank_zero():
            write_failed_summary(output_dir, error)
        return None
    value = summary.get("val/acc_best")
    return None if value is None or math.isnan(value) else float(value)


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


def _resume_if_requeued(cfg: DictConfig, output_dir: Path) -> None:
    """After a SLURM requeue (SLURM_RESTART_COUNT > 0) continue from this directory's last.ckpt."""
    if int(os.environ.get("SLURM_RESTART_COUNT") or 0) < 1 or cfg.get("ckpt_path"):
        return
    last = output_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        log.info("Requeued SLURM job (restart %s): resuming from %s", os.environ["SLURM_RESTART_COUNT"], last)
        with open_dict(cfg):
            cfg.ckpt_path = str(last)


@contextmanager
def _ddp_children_rerun_this_job(hydra_cfg: DictConfig | None, in_sweep: bool) -> Iterator[None]:
    """Make the command line Lightning gives DDP ranks > 0 this job's own, and clean up DDP state afterwards
    (the next job of a local sweep runs in this same process)."""
    if hydra_cfg is None or "LOCAL_RANK" in os.environ:  # not under Hydra, or this is already a child rank
        yield
        return
    saved_argv = list(sys.argv)
    saved_env = {k: os.environ.get(k) for k in _DDP_ENV}
    # Lightning's _hydra_subprocess_cmd: [python, argv[0], *argv[1:], hydra.run.dir="<run.dir>", ...]
    sys.argv = [sys.argv[0], *_config_flags(hydra_cfg), *hydra_cfg.overrides.task,
                *(o for o in hydra_cfg.overrides.hydra if not o.startswith(("hydra.mode=", "hydra.run.dir=")))]
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
