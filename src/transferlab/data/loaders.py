"""A training loader whose order depends on (seed, epoch) alone, and that can start in the middle of an epoch.

Lightning restores a loader that has `state_dict`/`load_state_dict` (`_Stateful`) when it resumes from a
checkpoint saved mid-epoch; a plain shuffled DataLoader would replay the whole epoch in a new order, so a resumed
run would differ from an uninterrupted one. This one records (epoch, batches handed out) and, restored, hands out
the rest of that epoch's order. It draws nothing from the global RNG (its own generator seeds the worker seeds),
so restoring the global RNG state (see `transferlab.callbacks.interrupt`) replays augmentation and dropout exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class EpochSampler(Sampler[int]):
    """A permutation of range(n) drawn from (seed, epoch); Lightning calls `set_epoch` at every epoch start.
    With `weights`: n indices drawn with replacement in proportion to them (class-balanced sampling)."""

    def __init__(self, n: int, seed: int, weights: torch.Tensor | None = None) -> None:
        self.n = n
        self.weights = weights
        self.seed = int(seed)
        self.epoch = 0
        self._resume: tuple[int, int] | None = None  # (epoch, items to skip) after a mid-epoch restore

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        if self.weights is not None:
            return torch.multinomial(self.weights, self.n, replacement=True, generator=generator).tolist()
        return torch.randperm(self.n, generator=generator).tolist()

    def resume(self, epoch: int, skip: int) -> None:
        self._resume = (epoch, skip)

    def __iter__(self) -> Iterator[int]:
        skip = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            skip = self._resume[1]
        self._resume = None
        yield from self.order(self.epoch)[skip:]

    def __len__(self) -> int:
        return self.n


class ResumableDataLoader(DataLoader):
    """A shuffled DataLoader (over an `EpochSampler`) that Lightning can checkpoint and restore mid-epoch."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, weights: torch.Tensor | None = None,
                 **kwargs: Any) -> None:
        kwargs.pop("shuffle", None)
        self._seed = int(seed)
        super().__init__(dataset, batch_size=batch_size, sampler=EpochSampler(len(dataset), seed, weights),
                         generator=torch.Generator().manual_seed(seed), **kwargs)
        self._batches = 0  # handed out in the current epoch, counting those before a restore

    def __iter__(self):
        sampler: EpochSampler = self.sampler
        if sampler._resume is None or sampler._resume[0] != sampler.epoch:
            self._batches = 0
        # Worker seeds come from this loader's generator: reseed it per epoch so they do not depend on history.
        self.generator.manual_seed(self._seed * 1_000_003 + sampler.epoch)
        for batch in super().__iter__():
            self._batches += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self._batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, batches = int(state["epoch"]), int(state["batches"])
        self.sampler.resume(epoch, batches * self.batch_size)
        self._batches = batches


def training_loader(dataset: Dataset, seed: int, trainer: Any = None, weights: torch.Tensor | None = None,
                    **settings: Any) -> DataLoader:
    """The shuffled training loader: resumable in a single process; under DDP a plain shuffled one, which
    Lightning gives a DistributedSampler (a resumed DDP run replays its partial epoch in a new order).
    `weights` (class-balanced sampling) draw each epoch's rows with replacement in proportion to them."""
    if trainer is not None and trainer.world_size > 1:
        if weights is not None:
            raise ValueError("dataset.balance=sampler does not run under DDP (Lightning replaces the sampler "
                             "with a DistributedSampler); use dataset.balance=loss.")
        return DataLoader(dataset, shuffle=True, **settings)
    return ResumableDataLoader(dataset, seed=seed, weights=weights, **settings)
