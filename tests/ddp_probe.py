"""A callback for DDP tests: each rank saves its own weights at the end of training (rank<N>.pt)."""

from __future__ import annotations

import os

import lightning as L
import torch


class SaveRankWeights(L.Callback):
    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 0:
            os.makedirs(self.folder, exist_ok=True)
            torch.save(pl_module.state_dict(), os.path.join(self.folder, f"start_rank{trainer.global_rank}.pt"))

    def on_train_end(self, trainer, pl_module) -> None:
        torch.save(pl_module.state_dict(), os.path.join(self.folder, f"rank{trainer.global_rank}.pt"))
