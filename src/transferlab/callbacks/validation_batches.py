"""What the validation-epoch callbacks (dashboards, per-image predictions) read from a validation step: its
logits, and which dataset images each batch held."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch


class LogitsCatcher:
    """The logits of each validation batch: what `validation_step` returns (a tensor or {"logits": ...}), or,
    failing that, the module's output caught by a forward hook (no extra forward pass)."""

    def __init__(self) -> None:
        self._captured: list[torch.Tensor] = []
        self._hook: Any = None

    def start(self, pl_module: L.LightningModule) -> None:
        self.stop()
        self._hook = pl_module.register_forward_hook(self._capture)

    def _capture(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.ndim == 2:
            self._captured.append(output.detach())

    def batch_logits(self, outputs: Any) -> torch.Tensor | None:
        logits = logits_from(outputs)
        if logits is None and self._captured:
            logits = self._captured[-1]
        self._captured = []
        return logits

    def stop(self) -> None:
        self._captured = []
        if self._hook is not None:
            self._hook.remove()
            self._hook = None


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
