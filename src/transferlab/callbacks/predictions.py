"""`val_predictions.csv`: what the best epoch predicted for every validation image, for paired comparisons.

The sweep report compares two configurations on the *same* images (a paired bootstrap interval and an exact
McNemar test, `transferlab.evaluation.stats`); for that every job leaves, next to its summary.json, one row
per validation image: `file, true, predicted, probability, true_probability` (class names; softmax
probability of the predicted class and of the true class), as of the epoch with the best val/acc.

How it works: each validation epoch the logits are caught with a forward hook on the module while it
validates (validation_step returns nothing), or taken from what validation_step returns if it returns them.
Each image's dataset index comes from the val loader's batch sampler, and the datamodule's public `val_files`
and `class_names` name it (a cached-features datamodule passes its images' through, so a frozen run that
validates on cached features writes the same file names). When the module's logged val/acc is a new best
(it equals val/acc_best and beats the best noted so far: the same rule as RunSummary's best_epoch, so the
file's accuracy is summary.json's val/acc_best), the epoch's rows are gathered across DDP ranks (a torchmetrics
CatMetric: a collective call every rank makes) and rank 0 writes the file atomically. The best rows are kept
in the callback's state (in every checkpoint), so a resumed run still writes them at fit end.

Under DDP, Lightning's DistributedSampler pads the val set so that every rank gets as many images; the rows
are de-duplicated by dataset index, so the file has each image once (val/acc counted the padded duplicates,
so the file's accuracy can differ from val/acc_best by those few images). With `trainer.limit_val_batches`
below the whole set only the validated images are in the file.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import lightning as L
import torch
from torchmetrics import CatMetric

from transferlab.callbacks.validation_batches import LogitsCatcher, batch_indices
from transferlab.evaluation.stats import predictions_csv
from transferlab.files import atomic_write_text

log = logging.getLogger(__name__)


class ValPredictions(L.Callback):
    """Write `<run dir>/val_predictions.csv` for the best epoch: whenever val/acc reaches a new best, and at fit end."""

    def __init__(self, filename: str = "val_predictions.csv") -> None:
        self.filename = filename
        self._noted_best = -math.inf  # the val/acc_best the kept rows were taken at
        self.best_epoch = -1
        # (dataset index, predicted, true, p(predicted), p(true)) per image of the best epoch; rank 0's, gathered
        self.best_rows: torch.Tensor | None = None
        self.active = False
        self._logits = LogitsCatcher()
        self._warned = False
        self._position = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # float32 keeps dataset indices exact up to 2**24 images (MPS has no float64)
        self.rows = CatMetric(nan_strategy="error")

    # --- collecting ------------------------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.active = not trainer.sanity_checking
        if not self.active:
            return
        self.rows.to(pl_module.device).reset()
        self._batch_indices = batch_indices(trainer)
        self._position = 0
        self._logits.start(pl_module)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not self.active:
            return
        logits = self._logits.batch_logits(outputs)
        targets = batch[-1]
        if logits is None or logits.shape[0] != len(targets):
            self._warn("no logits for validation batches; return them from validation_step "
                       "(a tensor or {'logits': ...})")
            return
        if self._batch_indices is not None and batch_idx < len(self._batch_indices):
            indices = torch.tensor(self._batch_indices[batch_idx][: len(targets)], dtype=torch.float32)
        elif trainer.world_size == 1:  # no sampler to ask: a single rank's loader goes through the set in order
            indices = torch.arange(self._position, self._position + len(targets), dtype=torch.float32)
        else:
            self._warn("the val loader has no batch sampler: cannot tell which image each prediction is for")
            return
        self._position += len(targets)
        probs = logits.float().softmax(dim=1)
        targets = targets.to(probs.device).long()
        preds = probs.argmax(dim=1)
        p_pred = probs.gather(1, preds[:, None])[:, 0]
        p_true = probs.gather(1, targets[:, None])[:, 0]
        self.rows.update(torch.stack([indices.to(probs.device), preds.float(), targets.float(), p_pred, p_true], 1))

    def _warn(self, message: str) -> None:
        if not self._warned:
            log.warning("ValPredictions: %s; no val_predictions.csv.", message)
            self._warned = True

    # --- keeping the best epoch --------------------------------------------------------------------------
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # on_validation_end, not *_epoch_end: callback epoch-end hooks run before the module logs val/acc.
        self._logits.stop()
        if not self.active:
            return
        self.active = False
        acc, best = _logged(trainer, "val/acc"), _logged(trainer, "val/acc_best")
        # the logged values are the same on every rank, so every rank takes the same branch (compute() below
        # is a collective call)
        if acc is None or best is None or not (acc == best and best > self._noted_best):
            return
        self._noted_best, self.best_epoch = best, trainer.current_epoch  # on every rank: they branch alike
        if self.rows.update_count == 0 and trainer.world_size == 1:
            return
        rows = self.rows.compute()
        if not trainer.is_global_zero or rows.numel() == 0:
            return
        self.best_rows = _unique_by_index(rows.reshape(-1, 5).cpu())
        self._write(trainer)

    def note_baseline(self, trainer: L.Trainer, acc: float, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Predictions the run starts from (lpft's fitted head on the whole val set, in dataset order;
        callbacks.head_baseline): written now, and kept until an epoch beats `acc`."""
        probs = logits.float().softmax(dim=1)
        preds = probs.argmax(dim=1)
        indices = torch.arange(len(labels), dtype=torch.float32)
        p_pred, p_true = probs.gather(1, preds[:, None])[:, 0], probs.gather(1, labels[:, None].long())[:, 0]
        self._noted_best, self.best_epoch = acc, -1
        self.best_rows = torch.stack([indices, preds.float(), labels.float(), p_pred, p_true], 1)
        if trainer.is_global_zero:
            self._write(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.best_rows is not None:
            self._write(trainer)

    def _write(self, trainer: L.Trainer) -> None:
        if not trainer.default_root_dir:
            return
        datamodule = trainer.datamodule
        class_names = [str(c) for c in (getattr(datamodule, "class_names", None)
                                        or getattr(trainer.lightning_module, "class_names", None) or [])]
        files = getattr(datamodule, "val_files", None)

        def name(k: int) -> str:
            return class_names[k] if k < len(class_names) else str(k)

        rows = []
        for index, pred, true, p_pred, p_true in self.best_rows.tolist():
            i = int(index)
            file = files[i] if files is not None and i < len(files) else str(i)
            rows.append((file, name(int(true)), name(int(pred)), p_pred, p_true))
        atomic_write_text(os.path.join(trainer.default_root_dir, self.filename), predictions_csv(rows))

    # --- resume ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"best_acc": self._noted_best, "best_epoch": self.best_epoch, "best_rows": self.best_rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._noted_best = state_dict.get("best_acc", -math.inf)
        self.best_epoch = state_dict.get("best_epoch", -1)
        self.best_rows = state_dict.get("best_rows")


def _unique_by_index(rows: torch.Tensor) -> torch.Tensor:
    """Rows sorted by dataset index, each index once (DistributedSampler pads with repeats of the first ones)."""
    order = torch.argsort(rows[:, 0], stable=True)
    rows = rows[order]
    keep = torch.ones(len(rows), dtype=torch.bool)
    keep[1:] = rows[1:, 0] != rows[:-1, 0]
    return rows[keep]


def _logged(trainer: L.Trainer, key: str) -> float | None:
    value = trainer.callback_metrics.get(key)
    return None if value is None else float(value)


