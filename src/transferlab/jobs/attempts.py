"""What a job's directory says about earlier attempts, and what a failed attempt leaves there.

- Resuming a sweep: the same multirun command with `hydra.sweep.dir=<its dir>` re-runs every job in its old
  directory (Hydra numbers the jobs the same way), and each job looks at what it left there (`previous_attempt`):
  `summary.json` with status `ok` -> not retrained, its recorded val/acc_best is returned; no summary or
  `interrupted` -> resumed from `checkpoints/last.ckpt` (from the start without one); `failed` -> the failed
  attempt's summary.json, checkpoints/ and tensorboard/ are set aside (`*.failed-<n>`) and the job runs again.
- A SLURM job requeued after preemption or timeout restarts in the same directory (`requeued`) and resumes the
  same way.
- Every multirun job records its overrides in `job.json` (`record_job`); a directory holding another job's
  stops the sweep (`JobDirConflict`).
- A job that failed, in a sweep or alone: `write_failed_summary` (status failed and `error_line(e)`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from transferlab.errors import ConfigValueError
from transferlab.files import atomic_write_json
from transferlab.jobs.ddp import is_rank_zero
from transferlab.record import RunRecord

log = logging.getLogger(__name__)


class JobDirConflict(ConfigValueError):
    """hydra.sweep.dir points at a sweep whose job directory holds another job (other overrides)."""


def requeued() -> bool:
    """This SLURM job was requeued (preemption, timeout): it restarts in its directory."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0) >= 1


def explicit_sweep_dir(hydra_cfg: DictConfig | None) -> bool:
    """The sweep dir was given on the command line: the only way a multirun meets directories it did not create
    (the default one is created exclusively, `${unique_dir:}`)."""
    return hydra_cfg is not None and any(o.startswith("hydra.sweep.dir=") for o in hydra_cfg.overrides.hydra)


def job_value(summary: dict[str, Any]) -> float | None:
    """A run's val/acc_best as the job's value: None when missing or NaN (the Optuna sweeper fails on a NaN)."""
    return RunRecord.from_dict(summary).value()


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
    last = run_dir / "checkpoints" / "last.ckpt"
    record = RunRecord.read(run_dir)  # None: no record, or killed while writing it: incomplete
    status = record.status if record else None
    if status == "ok":
        log.info("%s finished earlier (summary.json: ok, val/acc_best=%s): not retrained.", run_dir,
                 record.val_acc_best)
        return True, record.value()
    if status == "failed":
        if is_rank_zero():
            n = _set_aside(run_dir)
            log.info("%s failed earlier (%s): set aside as *.failed-%d; running it again.", run_dir,
                     record.error, n)
        return False, None
    if last.is_file():
        log.info("%s is incomplete (%s): resuming from %s", run_dir,
                 f"summary.json: {status}" if status else "no summary.json", last)
        with open_dict(cfg):
            cfg.ckpt_path = str(last)
            cfg.resume = True  # its own checkpoint, even if the job started from other weights (resume=false)
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


def error_line(e: BaseException, limit: int = 300) -> str:
    """`Type: first line of the message`; a first line that only introduces the cause (ends with ':', as
    Hydra's 'Error in call to target ...:') gets the next line too."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if text.endswith(":") and len(lines) > 1:
        text = f"{text} {lines[1]}"
    text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def write_failed_summary(output_dir: Path, error: str, checkpoint: str | None = None,
                         resume_command: str | None = None) -> Path:
    """summary.json with status failed; keeps whatever the run already measured (if it got that far), and
    the checkpoint and command that continue it, when it saved one."""
    return RunRecord.failed(output_dir, error, checkpoint=checkpoint, resume_command=resume_command)

