"""The fitted head as the run's first validation (strategy=lpft): fine-tuning has to beat it to replace it.

LP-FT's first phase (`fit_head`) trains the head on cached features; on a small folder fine-tuning can leave the network
worse than that head (README: Accuracy). Lightning validates only after a training epoch, and its
ModelCheckpoint never saves at step 0, so without this the best checkpoint would be the best fine-tuning
epoch even when the head alone scored higher. At the start of fine-tuning this callback saves the model as it
stands (the fitted head on the pretrained backbone) as `head_fit-acc<val acc>.ckpt` and enters the head's val
accuracy and loss, measured on the cached val features, as the score to beat:

- a monitored ModelCheckpoint (val/acc or val/loss) keeps that file as its best until an epoch beats it;
- EarlyStopping counts its patience from it;
- the module's val/acc_best starts from it;
- RunSummary notes it as epoch -1 in `val_history` and as `best_epoch` while it stands;
- ValPredictions writes its predictions to val_predictions.csv while it stands.

Ties keep the head (all of Lightning's monitors need a strict improvement). The seeded states are the
callbacks' own, saved in every checkpoint, so a resumed run keeps the head as a candidate. It is skipped when
`trainer.limit_val_batches` validates only part of the val set: the head was scored on all of it.
"""

from __future__ import annotations

import logging
import os

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from transferlab.callbacks.predictions import ValPredictions
from transferlab.callbacks.summary import RunSummary

log = logging.getLogger(__name__)


class FittedHeadBaseline(L.Callback):
    """Score the fitted head as epoch -1 (see the module docstring). Part of the trainer from the start (the
    plan has a `fit_head` phase); the phase `enter`s the head's val logits before `fit`."""

    def __init__(self, logits: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> None:
        self.logits: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None
        self.scores: dict[str, float] = {}
        if logits is not None and labels is not None:
            self.enter(logits, labels)

    def enter(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """The fitted head's logits on the whole val set and the labels, in the val set's file order (the
        feature cache keeps it)."""
        self.logits = logits.detach().float().cpu()
        self.labels = labels.detach().long().cpu()
        self.scores = {
            "val/acc": float((self.logits.argmax(1) == self.labels).float().mean()),
            "val/loss": float(torch.nn.functional.cross_entropy(self.logits, self.labels)),
        }

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.logits is None or trainer.global_step != 0:  # resumed: the score is in the restored states
            return
        if trainer.limit_val_batches != 1.0:
            log.info("The fitted head is not a checkpoint candidate: trainer.limit_val_batches=%s validates part "
                     "of the val set, the head was scored on all of it.", trainer.limit_val_batches)
            return
        acc = self.scores["val/acc"]
        saved: set[str] = set()
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.monitor in self.scores and callback.dirpath:
                self._seed_checkpoint(trainer, callback, saved)
        for callback in trainer.early_stopping_callbacks:
            if isinstance(callback, EarlyStopping) and callback.monitor in self.scores:
                callback.best_score = torch.tensor(self.scores[callback.monitor])
                callback.wait_count = 0
        if hasattr(pl_module, "val_acc_best"):
            pl_module.val_acc_best.update(torch.tensor(acc, device=pl_module.device))
        for callback in trainer.callbacks:
            if isinstance(callback, RunSummary):
                callback.note_baseline(acc)
            elif isinstance(callback, ValPredictions):
                callback.note_baseline(trainer, acc, self.logits, self.labels)
        for logger in trainer.loggers:  # the val curves start at the head (step 0, before any training step)
            logger.log_metrics({"val/acc": acc, "val/loss": self.scores["val/loss"]}, step=0)

    def _seed_checkpoint(self, trainer: L.Trainer, callback: ModelCheckpoint, saved: set[str]) -> None:
        score = torch.tensor(self.scores[callback.monitor])
        path = os.path.join(callback.dirpath, f"head_fit-acc{self.scores['val/acc']:.4f}{callback.FILE_EXTENSION}")
        # One file for every callback that monitors in this directory. Decided without looking at the disk:
        # save_checkpoint is a collective call under DDP, every rank must make it.
        if path not in saved:
            trainer.save_checkpoint(path, weights_only=False)  # the full state: a run resumes from it
            saved.add(path)
        callback.best_k_models = {path: score}
        callback.kth_best_model_path = callback.best_model_path = path
        callback.kth_value = callback.best_model_score = score
