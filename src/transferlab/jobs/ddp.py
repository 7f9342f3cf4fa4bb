"""A sweep job under DDP: Lightning's launcher starts ranks > 0 by re-running the command line with the Hydra run
directory. In a multirun that command line holds `-m` and every swept value, so each child would start a sweep
of its own in a new directory; `children_rerun_this_job` makes it *this job's* command line (its overrides, run
mode, its directory) for as long as the job trains.

Torch and Lightning are imported inside the functions that need them, not with this module.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from omegaconf import DictConfig, read_write

from transferlab.config.command import quoted

# Set by a multirun job for the DDP ranks it starts: a failing child rank then exits cleanly (rank 0 records the
# failure) instead of making Lightning's process observer SIGKILL the whole sweep.
SWEEP_JOB_ENV = "TRANSFERLAB_SWEEP_JOB"
_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", SWEEP_JOB_ENV)


def is_rank_zero() -> bool:
    """This process is rank 0 (or the only one). Before Lightning is imported (a config mistake refused at
    start-up), the launcher's environment says: Lightning is not imported just to ask."""
    if int(os.environ.get("LOCAL_RANK", 0)) != 0:
        return False
    rank_zero = sys.modules.get("lightning.fabric.utilities.rank_zero")
    if rank_zero is None:
        return all(int(os.environ.get(k, 0)) == 0 for k in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"))
    return getattr(rank_zero.rank_zero_only, "rank", 0) == 0


def ckpt_override(cfg: DictConfig) -> list[str]:
    """What DDP ranks > 0 must be told: the checkpoint rank 0 resumes (or, resume=false, starts) from."""
    ckpt = cfg.get("ckpt_path")
    resume = "true" if cfg.get("resume", True) else "false"
    return [f"ckpt_path={quoted(str(ckpt))}", f"resume={resume}"] if ckpt else []


@contextmanager
def children_rerun_this_job(hydra_cfg: DictConfig | None, in_sweep: bool, extra: list[str] = ()) -> Iterator[None]:
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
