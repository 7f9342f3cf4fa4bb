"""The `fit` phase: Lightning's `trainer.fit` on the network (or, for a backbone that never trains, on its
cached features), after the learning-rate finder when `tune.lr_find` asks for it."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

from transferlab.callbacks.interrupt import GracefulInterrupt
from transferlab.config.settings import TuneSettings
from transferlab.errors import ConfigValueError, RunInterrupted

log = logging.getLogger(__name__)


def fit(trainer: L.Trainer, model, data, ckpt_path: str | None = None) -> None:
    """`trainer.fit`; a stop request (SIGTERM, Ctrl-C, SIGUSR1 through GracefulInterrupt) becomes
    `RunInterrupted`, naming the checkpoint it saved and the command that resumes."""
    interrupt = next((c for c in trainer.callbacks if isinstance(c, GracefulInterrupt)), None)
    try:
        trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    except SIGTERMException:
        if interrupt is None or interrupt.signum is None:
            raise
        checkpoint = interrupt.checkpoint
        raise RunInterrupted(interrupt.signum, checkpoint, interrupt.command(str(checkpoint))) from None


def find_lr(tuner_trainer: L.Trainer, model, data, settings: TuneSettings, seed: int) -> dict[str, Any]:
    """`tune.lr_find=true`: Lightning's learning-rate finder (an exponential lr sweep over `num_training` steps;
    its suggestion is the steepest fall of the loss) sets the model's optimizer lr for this run. It runs on a
    trainer of its own (`tuner_trainer`: no logger, callbacks or checkpoints, epochs enough for the sweep), so
    the run's trainer is configured once and untouched; the Tuner restores the model's weights after the sweep
    and the seed is set again, so the training that follows is the run it would have been with that lr."""
    from lightning.pytorch.tuner import Tuner

    result = Tuner(tuner_trainer).lr_find(model, datamodule=data, min_lr=settings.min_lr, max_lr=settings.max_lr,
                                          num_training=settings.num_training, update_attr=False)
    suggestion = None if result is None else result.suggestion()
    if suggestion is None:
        raise ConfigValueError(
            f"tune.lr_find: no suggestion between tune.min_lr={settings.min_lr} and tune.max_lr={settings.max_lr} "
            "(the loss never fell). Widen the range, raise tune.num_training, or set optimizer.lr yourself.")
    factory = model.optimizer_factory
    model.optimizer_factory = partial(factory.func, *factory.args, **{**factory.keywords, "lr": float(suggestion)})
    L.seed_everything(seed, workers=True)
    log.info("Learning-rate finder: optimizer.lr=%.3g (was %s)", suggestion, factory.keywords.get("lr"))
    return {"suggested_lr": float(suggestion), "configured_lr": factory.keywords.get("lr"),
            "min_lr": settings.min_lr, "max_lr": settings.max_lr, "steps": len(result.results.get("lr", []))}
