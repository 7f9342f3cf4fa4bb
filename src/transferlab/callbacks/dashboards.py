"""TensorBoard dashboards that show what one accuracy number hides.

Each validation epoch, `ValidationDashboards` logs to the run's TensorBoard:

- `val/confusion_matrix`: an image of the confusion matrix (rows: true class, columns: predicted);
- `val_precision/<class>`, `val_recall/<class>`, `val_f1/<class>` and their macro averages `val/*_macro`;
- `val/predictions`: a grid of validation images captioned with predicted and true class, misclassified
  first (the tutorials' `visualize_model`).

It costs no extra forward pass: predictions are taken from what `validation_step` returns (a logits tensor or
{"logits": ...}) or, failing that, caught with a forward hook on the model while it validates. Images for
the grid are loaded by dataset index from the datamodule's `val_files` (a cached-features datamodule passes
its images' through), so the grid also works when a frozen backbone's cached features are what the model
sees; without `val_files` (plain dataloaders) there is no grid. Without a TensorBoard logger it does nothing.
The numbers and the drawings come from `transferlab.evaluation`, as the eval task's do.
"""

from __future__ import annotations

import logging
import re

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torchmetrics import CatMetric

from transferlab.callbacks.validation_batches import LogitsCatcher, batch_indices
from transferlab.evaluation.metrics import SCORES, PerClass, per_class_metrics
from transferlab.evaluation.plots import figure_array, plot_confusion_matrix, prediction_grid

log = logging.getLogger(__name__)


class ValidationDashboards(L.Callback):
    """Confusion matrix, per-class precision/recall/F1 and a prediction grid, every validation epoch."""

    def __init__(self, max_images: int = 32, tile_size: int = 128, every_n_epochs: int = 1,
                 max_class_scalars: int = 100) -> None:
        if max_images < 0 or tile_size < 16 or every_n_epochs < 1:
            raise ValueError(
                f"ValidationDashboards: max_images={max_images} (>= 0), tile_size={tile_size} (>= 16), "
                f"every_n_epochs={every_n_epochs} (>= 1); fix them under callbacks.dashboards."
            )
        self.max_images = max_images
        self.tile_size = tile_size
        self.every_n_epochs = every_n_epochs
        self.max_class_scalars = max_class_scalars  # more classes than this: only the macro averages
        self.tb: TensorBoardLogger | None = None
        self.class_names: list[str] = []
        self.active = False
        self._logits = LogitsCatcher()
        self._warned = False

    # --- lifecycle ---------------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.tb = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        if self.tb is None:
            return
        names = getattr(pl_module, "class_names", None)
        if not names:
            raise ValueError("ValidationDashboards needs `pl_module.class_names` (the label of each class index).")
        self.class_names = [str(n) for n in names]
        # (predicted, true) per validation image; synced across DDP ranks by compute()
        self.predictions = CatMetric(nan_strategy="error")
        self._last_matrix = torch.empty(0)  # what was drawn last: unchanged predictions are not redrawn
        self._last_chosen: list[tuple[int, int, int]] = []

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.active = (
            self.tb is not None
            and not trainer.sanity_checking
            and (trainer.current_epoch + 1) % self.every_n_epochs == 0
        )
        if not self.active:
            return
        self.predictions.to(pl_module.device).reset()
        self._records: list[tuple[int, int, int]] = []  # (dataset index, predicted, true)
        self._batch_indices = batch_indices(trainer) if trainer.is_global_zero and self.max_images else None
        self._logits.start(pl_module)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not self.active:
            return
        logits = self._logits.batch_logits(outputs)
        targets = batch[-1]
        if logits is None or logits.shape[0] != len(targets):
            if not self._warned:
                log.warning("ValidationDashboards: no logits for validation batches; return them from "
                            "validation_step (a tensor or {'logits': ...}) to get the dashboards.")
                self._warned = True
            return
        preds = logits.argmax(dim=1)
        self.predictions.update(torch.stack([preds, targets.to(preds.device)], dim=1))
        if self._batch_indices is not None and batch_idx < len(self._batch_indices):
            for i, p, t in zip(self._batch_indices[batch_idx], preds.tolist(), targets.tolist(), strict=False):
                self._records.append((int(i), int(p), int(t)))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._logits.stop()
        if not self.active or (self.predictions.update_count == 0 and trainer.world_size == 1):
            return
        pairs = self.predictions.compute()  # every rank's (predicted, true), gathered: a collective call
        if not trainer.is_global_zero or pairs.numel() == 0:
            return
        pairs = pairs.reshape(-1, 2).long().cpu()
        scores = per_class_metrics(pairs[:, 0], pairs[:, 1], self.class_names)
        step = trainer.global_step
        self.tb.log_metrics(scalars(scores, self.max_class_scalars), step=step)
        writer = self.tb.experiment
        # Images are redrawn only when the predictions changed: drawing and PNG-encoding them every epoch
        # cost ~0.5 s per epoch, a third of a cached-feature frozen run (profiled with py-spy).
        matrix = scores.confusion
        if not torch.equal(matrix, self._last_matrix):
            writer.add_image("val/confusion_matrix", confusion_image(matrix, self.class_names, trainer.current_epoch),
                             step, dataformats="HWC")
            self._last_matrix = matrix
        paths = getattr(trainer.datamodule, "val_files", None)  # FolderDataModule, CachedFeatureDataModule
        if self._records and paths is not None:
            chosen = [self._records[i] for i in grid_order(self._records)[: self.max_images]]
            if chosen != self._last_chosen:
                grid = prediction_grid([paths[i] for i, _, _ in chosen], [p for _, p, _ in chosen],
                                       [t for _, _, t in chosen], self.class_names, self.tile_size)
                writer.add_image("val/predictions", grid, step)
                self._last_chosen = chosen


# --- pieces (pure functions, tested on their own) -----------------------------------------------------------
def grid_order(records: list[tuple[int, int, int]]) -> list[int]:
    """Positions of `records` (index, predicted, true) with the misclassified first, each group in order."""
    return sorted(range(len(records)), key=lambda k: records[k][1] == records[k][2])


def scalars(scores: PerClass, max_class_scalars: int = 100) -> dict[str, float]:
    """The TensorBoard scalars of one validation epoch: `val/<score>_macro`, and `val_<score>/<class>` for
    every class when there are at most `max_class_scalars` classes."""
    metrics = {f"val/{name}_macro": scores.macro(name) for name in SCORES}
    if len(scores.class_names) <= max_class_scalars:
        for name in SCORES:
            for cls, value in zip(scores.class_names, scores.values(name), strict=True):
                metrics[f"val_{name}/{_tag(cls)}"] = value
    return metrics


def confusion_image(matrix: torch.Tensor, class_names: list[str], epoch: int) -> np.ndarray:
    """The confusion matrix as drawn by `evaluation.plots`, as an HxWx3 uint8 array."""
    fig = plot_confusion_matrix(matrix, class_names, f"validation confusion matrix, epoch {epoch}", dpi=80)
    return figure_array(fig)


def _tag(name: str) -> str:
    """TensorBoard tags take [A-Za-z0-9_.-]; anything else in a class name becomes '_'."""
    return re.sub(r"[^\w.\-]", "_", name)


