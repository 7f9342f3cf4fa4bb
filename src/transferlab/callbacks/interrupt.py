"""A run that is stopped ends honestly and resumes exactly.

SIGTERM (a scheduler, `kill`), Ctrl-C and SLURM's pre-emption signal (SIGUSR1) all stop training at the end of
the current batch, the way Lightning handles SIGTERM: this callback turns Ctrl-C and SIGUSR1 into that same
request. When the stop comes, it saves `last.ckpt` as of that batch (mid-epoch, with the loader's position and
the random number generators' states), writes `summary.json` with `status: interrupted` and the command that
resumes, and the training task exits 130 (Ctrl-C), 143 (SIGTERM) or 138 (SIGUSR1) — never 0. A second Ctrl-C
stops at once.

Resuming restores the RNG states saved here, so with `trainer.deterministic=true` and `num_workers=0` a resumed
run computes what the uninterrupted run would have, bit for bit (tests/test_interrupt.py).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from transferlab.config.command import with_checkpoint
from transferlab.errors import RunInterrupted  # noqa: F401 (raised by the training task; imported from here)
from transferlab.provenance import provenance
from transferlab.record import RunRecord


def _rng_states() -> dict[str, Any]:
    """The global generators' states as tensors and plain values (a checkpoint loads with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states = {"torch": torch.get_rng_state(), "python": random.getstate(),
              "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class GracefulInterrupt(L.Callback):
    """Stop at a batch boundary on SIGINT/SIGTERM/SIGUSR1; checkpoint the moment, say how to resume, exit non-zero.

    Args:
        filename: the checkpoint written on interruption, in the last-checkpoint callback's folder.
        resume_command: the command that resumes this run (the training task passes one built from the
            Hydra overrides); `{ckpt}` is replaced by the checkpoint path.
    """

    def __init__(self, filename: str = "last.ckpt", resume_command: str | None = None) -> None:
        self.filename = filename
        self.resume_command = resume_command
        self.signum: int | None = None
        self.checkpoint: str | None = None
        self._previous: dict[int, Any] = {}

    # --- turning signals into Lightning's stop request ---------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.signum = None
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be installed from the main thread
        for signum in (signal.SIGINT, signal.SIGUSR1):
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._request_stop)
        # Lightning installs its own SIGTERM handler (it stops at the batch end); note that it was SIGTERM.
        self._previous[signal.SIGTERM] = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._note_sigterm)

    def _request_stop(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signum = self.signum or signum
        print(f"\n{signal.Signals(signum).name}: stopping after this batch (Ctrl-C again to stop at once) ...",
              file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)  # Lightning's own stop request, handled at the batch boundary

    def _note_sigterm(self, signum: int, frame: Any) -> None:
        self.signum = self.signum or signum
        lightning_handler = self._previous.get(signal.SIGTERM)
        if callable(lightning_handler):
            lightning_handler(signum, frame)

    def _restore_handlers(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in self._previous.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_handlers()

    # --- the checkpoint of the moment --------------------------------------------------------------------
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        signum = self.signum or signal.SIGTERM
        self.signum = signum
        folder = next((c.dirpath for c in trainer.checkpoint_callbacks if not c.monitor and c.dirpath), None)
        folder = folder or os.path.join(trainer.default_root_dir, "checkpoints")
        path = os.path.join(folder, self.filename)
        trainer.save_checkpoint(path, weights_only=False)  # the full state: a run resumes from it
        self.checkpoint = path
        self._write_summary(trainer, signum, path)
        if signum == signal.SIGUSR1:
            _requeue_on_slurm()

    @rank_zero_only
    def _write_summary(self, trainer: L.Trainer, signum: int, path: str) -> None:
        RunRecord(status="interrupted", signal=signal.Signals(signum).name, epochs=trainer.current_epoch,
                  global_step=trainer.global_step, checkpoint=path, resume_command=self.command(path),
                  val_acc_best=_best(trainer), **provenance()).write(trainer.default_root_dir)

    def command(self, checkpoint: str) -> str:
        return with_checkpoint(self.resume_command or "python train.py ckpt_path={ckpt}", checkpoint)

    # --- RNG state travels with every checkpoint ------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"rng": _rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "rng" in state_dict:
            _set_rng_states(state_dict["rng"])


@rank_zero_only
def _requeue_on_slurm() -> None:
    """SLURM pre-empts with SIGUSR1 (`--signal=USR1@90`); put the job back in the queue, as Lightning's own
    SLURM handler does. The requeued job resumes from last.ckpt (transferlab.tasks.job)."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    if job and os.environ.get("SLURM_ARRAY_TASK_ID") and os.environ.get("SLURM_ARRAY_JOB_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    if not job or shutil.which("scontrol") is None:
        return
    result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    print(f"scontrol requeue {job}: " + ("ok" if result.returncode == 0 else result.stderr.strip()), file=sys.stderr)


def _best(trainer: L.Trainer) -> float | None:
    value = trainer.callback_metrics.get("val/acc_best")
    return float(value) if value is not None else None
