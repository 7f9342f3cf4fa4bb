"""Train/eval transforms built from the backbone's InputSpec (sizes and statistics follow the weights)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from transferlab.data.input_spec import InputSpec


def _interp(name: str) -> InterpolationMode:
    return InterpolationMode(name.lower())


def train_transform(
    spec: InputSpec,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    hflip: bool = True,
    train_size: int | None = None,
) -> T.Compose:
    """RandomResizedCrop + optional horizontal flip, then normalise (the tutorial's recipe).

    `train_size` crops training images smaller than the eval size (FixRes: random crops enlarge objects, so a
    lower train resolution matches their apparent size at test time, and costs (train_size/size)^2 compute).
    """
    steps = [
        T.ToImage(),
        T.RandomResizedCrop(train_size or spec.image_size, scale=tuple(scale), ratio=tuple(ratio),
                            interpolation=_interp(spec.interpolation), antialias=True),
    ]
    if hflip:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToDtype(torch.float32, scale=True), T.Normalize(spec.mean, spec.std)]
    return T.Compose(steps)


def eval_transform(spec: InputSpec) -> T.Compose:
    """Resize the short side to image_size / crop_pct, centre-crop image_size, normalise."""
    return T.Compose([
        T.ToImage(),
        T.Resize(spec.resize_size, interpolation=_interp(spec.interpolation), antialias=True),
        T.CenterCrop(spec.image_size),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(spec.mean, spec.std),
    ])
