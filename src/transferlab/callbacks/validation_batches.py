"""What the validation-epoch callbacks (dashboards, per-image predictions) read from a validation step: its
logits, and which dataset images each batch held."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch


def logits_from(outputs: Any) -> torch.Tensor | None:
    if isinstance(outputs, dict):
        outputs = outputs.get("logits")
    return outputs.detach() if isinstance(outputs, torch.Tensor) and outputs.ndim == 2 else None


def batch_indices(trainer: L.Trainer) -> list[list[int]] | None:
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
