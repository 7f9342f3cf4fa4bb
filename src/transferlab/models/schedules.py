"""Learning-rate schedules the config's `scheduler` group names that torch has only as pieces."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup: float = 0.05,
                  start_factor: float = 0.01) -> SequentialLR:
    """Linear warm-up over the first `warmup` fraction of the run's optimizer steps, then cosine decay to 0.

    A step-interval schedule (`interval: step`): the model passes `total_steps` (Lightning's
    `estimated_stepping_batches`, i.e. max_epochs worth of steps). Torch's own LinearLR and CosineAnnealingLR,
    chained; the warm-up keeps a fresh head's large early gradients from wrecking pretrained features."""
    total_steps = max(int(total_steps), 2)
    warmup_steps = min(max(1, round(warmup * total_steps)), total_steps - 1)
    return SequentialLR(optimizer, [
        LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warmup_steps),
        CosineAnnealingLR(optimizer, T_max=total_steps - warmup_steps),
    ], milestones=[warmup_steps])
