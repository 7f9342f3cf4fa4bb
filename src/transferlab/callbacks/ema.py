"""An exponential moving average of the weights, with a warm-up so it works on a few hundred steps."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.callbacks import WeightAveraging


def warmup_ema_avg_fn(decay: float, warmup: bool = True):
    """torch's `get_ema_avg_fn`, plus timm's ModelEmaV3 warm-up: after n updates the decay is
    min(decay, (1 + n) / (10 + n)). Without it, a 0.999 average over a small folder's 300 steps would still be
    mostly the pretrained backbone with a random head."""

    @torch.no_grad()
    def ema_update(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n)) if warmup else decay
        return d * averaged + (1.0 - d) * current

    return ema_update


class WarmupEMA(WeightAveraging):
    """Lightning's WeightAveraging (it swaps the average in for validation, writes it as the checkpoint's
    `state_dict`, keeps the live weights beside it for resuming, and leaves the average in the model at the end)
    with an EMA that warms up. `recipe.ema_decay` switches it on (`transferlab.tasks.train`)."""

    def __init__(self, decay: float = 0.999, warmup: bool = True, **kwargs: Any) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"recipe.ema_decay={decay}: use a number between 0 and 1 (e.g. 0.998), or null.")
        super().__init__(avg_fn=warmup_ema_avg_fn(decay, warmup), **kwargs)
        self.decay = decay
