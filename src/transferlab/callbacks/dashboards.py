"""TensorBoard dashboards that show what one accuracy number hides.

Each validation epoch, `ValidationDashboards` logs to the run's TensorBoard:

- `val/confusion_matrix`: an image of the confusion matrix (rows: true class, columns: predicted);
- `val_precision/<class>`, `val_recall/<class>`, `val_f1/<class>` and their macro averages `val/*_macro`;
- `val/predictions`: a grid of validation images captioned with predicted and true class, misclassified
  first (the tutorials' `visualize_model`).

It costs no extra forward pass: predictions are taken from what `validation_step` returns (a logits tensor or
{"logits": ...}) or, failing that, caught with a forward hook on the model while it validates. Images for
the grid are loaded from the validation files by dataset index, so the grid also works when a frozen
backbone's cached features, not images, are what the model sees. Without a TensorBoard logger it does
nothing.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

log = logging.getLogger(__name__)

WRONG, RIGHT = (200, 20, 20), (20, 130, 20)


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
        self._captured: list[torch.Tensor] = []
        self._hook = None
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
        n = len(self.class_names)
        self.per_class = MetricCollection({
            "precision": MulticlassPrecision(n, average=None),
            "recall": MulticlassRecall(n, average=None),
            "f1": MulticlassF1Score(n, average=None),
        })
        self.confusion = MulticlassConfusionMatrix(n)
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
        self.per_class.to(pl_module.device).reset()
        self.confusion.to(pl_module.device).reset()
        self._records: list[tuple[int, int, int]] = []  # (dataset index, predicted, true)
        self._batch_indices = _batch_indices(trainer) if trainer.is_global_zero and self.max_images else None
        self._captured = []
        self._hook = pl_module.register_forward_hook(self._capture)

    def _capture(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.ndim == 2:
            self._captured.append(output.detach())

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not self.active:
            return
        logits = _logits_from(outputs)
        if logits is None and self._captured:
            logits = self._captured[-1]
        self._captured = []
        targets = batch[-1]
        if logits is None or logits.shape[0] != len(targets):
            if not self._warned:
                log.warning("ValidationDashboards: no logits for validation batches; return them from "
                            "validation_step (a tensor or {'logits': ...}) to get the dashboards.")
                self._warned = True
            return
        preds = logits.argmax(dim=1)
        self.per_class.update(preds, targets)
        self.confusion.update(preds, targets)
        if self._batch_indices is not None and batch_idx < len(self._batch_indices):
            for i, p, t in zip(self._batch_indices[batch_idx], preds.tolist(), targets.tolist(), strict=False):
                self._records.append((int(i), int(p), int(t)))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if not self.active or (self.confusion.update_count == 0 and trainer.world_size == 1):
            return
        scores = {k: v.cpu() for k, v in self.per_class.compute().items()}  # synced across DDP ranks
        matrix = self.confusion.compute().cpu()
        if not trainer.is_global_zero:
            return
        step = trainer.global_step
        metrics = {f"val/{name}_macro": float(values.mean()) for name, values in scores.items()}
        if len(self.class_names) <= self.max_class_scalars:
            for name, values in scores.items():
                for cls, value in zip(self.class_names, values.tolist(), strict=True):
                    metrics[f"val_{name}/{_tag(cls)}"] = value
        self.tb.log_metrics(metrics, step=step)
        writer = self.tb.experiment
        # Images are redrawn only when the predictions changed: drawing and PNG-encoding them every epoch
        # cost ~0.5 s per epoch, a third of a cached-feature frozen run (profiled with py-spy).
        if not torch.equal(matrix, self._last_matrix):
            writer.add_image("val/confusion_matrix", confusion_image(matrix, self.class_names, trainer.current_epoch),
                             step, dataformats="HWC")
            self._last_matrix = matrix
        paths = _val_paths(trainer)
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


def confusion_image(matrix: torch.Tensor, class_names: list[str], epoch: int) -> np.ndarray:
    """The confusion matrix drawn with matplotlib (Agg, no pyplot), as an HxWx3 uint8 array."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(class_names)
    size = min(3 + 0.45 * n, 16)
    fig = Figure(figsize=(size, size), dpi=80)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    counts = matrix.numpy()
    ax.imshow(counts, cmap="Blues", vmin=0)
    if n <= 40:
        ax.set_xticks(range(n), class_names, rotation=90 if n > 6 else 0, fontsize=8)
        ax.set_yticks(range(n), class_names, fontsize=8)
    if n <= 20:
        high = counts.max() / 2 if counts.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=8,
                        color="white" if counts[i, j] > high else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"validation confusion matrix, epoch {epoch}")
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def prediction_grid(paths: list[str], preds: list[int], targets: list[int], class_names: list[str],
                    tile_size: int = 128, nrow: int = 8) -> torch.Tensor:
    """Images captioned `pred <class>` / `true <class>` (red when wrong), as one CxHxW grid in [0, 1]."""
    from PIL import Image, ImageDraw, ImageFont
    from torchvision.transforms.functional import pil_to_tensor
    from torchvision.utils import make_grid

    font = ImageFont.load_default(size=max(9, tile_size // 11))
    line = font.getbbox("Ag")[3] + 2
    tiles = []
    for path, pred, true in zip(paths, preds, targets, strict=True):
        tile = Image.new("RGB", (tile_size, tile_size + 2 * line + 4), "white")
        tile.paste(_thumbnail(path, tile_size, os.stat(path).st_mtime_ns), (0, 0))
        draw = ImageDraw.Draw(tile)
        colour = RIGHT if pred == true else WRONG
        draw.text((2, tile_size + 1), _fit(f"pred {class_names[pred]}", font, tile_size - 4), fill=colour, font=font)
        draw.text((2, tile_size + 1 + line), _fit(f"true {class_names[true]}", font, tile_size - 4), fill="black",
                  font=font)
        tiles.append(pil_to_tensor(tile).float() / 255)
    return make_grid(tiles, nrow=min(nrow, len(tiles)), padding=3, pad_value=1.0)


@functools.lru_cache(maxsize=512)
def _thumbnail(path: str, tile_size: int, mtime_ns: int):
    """A square thumbnail, decoded once per file: the grid shows mostly the same images every epoch."""
    from PIL import ImageOps

    from transferlab.data.images import load_rgb

    return ImageOps.fit(load_rgb(path), (tile_size, tile_size))


def _fit(text: str, font: Any, width: int) -> str:
    while len(text) > 1 and font.getlength(text) > width:
        text = text[:-2] + "…"
    return text


def _tag(name: str) -> str:
    """TensorBoard tags take [A-Za-z0-9_.-]; anything else in a class name becomes '_'."""
    return re.sub(r"[^\w.\-]", "_", name)


def _logits_from(outputs: Any) -> torch.Tensor | None:
    if isinstance(outputs, dict):
        outputs = outputs.get("logits")
    return outputs.detach() if isinstance(outputs, torch.Tensor) and outputs.ndim == 2 else None


def _batch_indices(trainer: L.Trainer) -> list[list[int]] | None:
    """Dataset indices of each validation batch of this rank, from the loader's (possibly distributed) sampler."""
    loader = trainer.val_dataloaders
    if isinstance(loader, list | tuple):
        loader = loader[0] if loader else None
    batch_sampler = getattr(loader, "batch_sampler", None)
    if batch_sampler is None:
        return None
    try:
        return [list(b) for b in batch_sampler]
    except TypeError:  # an iterable dataset: no indices
        return None


def _val_paths(trainer: L.Trainer) -> list[str] | None:
    """Validation file paths by dataset index: from the image dataset, or from the image datamodule behind a
    cached-features datamodule (its val tensors follow the same file order)."""
    loader = trainer.val_dataloaders
    if isinstance(loader, list | tuple):
        loader = loader[0] if loader else None
    samples = getattr(getattr(loader, "dataset", None), "samples", None)
    if samples is None:
        dm = trainer.datamodule
        images = getattr(dm, "images", dm)
        if hasattr(images, "scan"):
            samples = images.scan().val
    if not samples or not hasattr(samples[0], "path"):
        return None
    return [s.path for s in samples]
