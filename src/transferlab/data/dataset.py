"""A map-style dataset over scanned samples, with a predictable answer to a file that breaks mid-training."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset

from transferlab.data.folders import Sample
from transferlab.data.images import BadImageError, load_rgb

log = logging.getLogger(__name__)

ON_BAD_FILE = ("error", "skip")


class ImageSamples(Dataset):
    """(image, label) pairs loaded with `load_rgb`.

    The doctor excludes bad files before training; a file that still fails here (changed since the scan)
    raises a BadImageError naming it with `on_bad_file="error"`. With `"skip"` the next readable sample
    (index+1, index+2, ...) is returned instead, so a run never dies at step 600, and the path is logged and
    kept in `skipped` (per process: each DataLoader worker keeps its own).
    """

    def __init__(self, samples: Sequence[Sample], transform: Callable | None = None,
                 on_bad_file: str = "error", max_pixels: int | None = None) -> None:
        if on_bad_file not in ON_BAD_FILE:
            raise ValueError(f"on_bad_file={on_bad_file!r}; use one of {ON_BAD_FILE}.")
        self.samples = list(samples)
        self.transform = transform
        self.on_bad_file = on_bad_file
        self.max_pixels = max_pixels
        self.skipped: list[str] = []

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        try:
            image = load_rgb(sample.path, self.max_pixels)
        except BadImageError as e:
            if self.on_bad_file == "error":
                raise
            image, sample = self._substitute(index, e)
        if self.transform is not None:
            try:
                image = self.transform(image)
            except Exception as e:
                raise RuntimeError(f"Transform failed on image {sample.path}: {type(e).__name__}: {e}") from e
        return image, sample.label

    def _substitute(self, index: int, error: BadImageError):
        self._record(self.samples[index].path, error)
        n = len(self.samples)
        for step in range(1, n):
            candidate = self.samples[(index + step) % n]
            if candidate.path in self.skipped:
                continue
            try:
                return load_rgb(candidate.path, self.max_pixels), candidate
            except BadImageError as e:
                self._record(candidate.path, e)
        raise BadImageError(f"No readable image left among {n} samples; skipped: {self.skipped}") from error

    def _record(self, path: str, error: BadImageError) -> None:
        self.skipped.append(path)
        log.warning("Skipping unreadable image mid-training (dataset.on_bad_file=skip): %s", error)


class RowPerFile(ImageSamples):
    """(image, readable) per sample, for a pass that keeps one row per file (feature extraction).

    A file that fails to decode raises a BadImageError naming it with `on_bad_file="error"`. With `"skip"` it
    is logged and kept in `skipped`, and its item is a blank image with readable=False: the caller drops that
    row. ImageSamples' answer (the next readable image in its place) would put another file's pixels in the
    row of this file's label. The blank image goes through the transform with the random generator's state
    saved and restored, so the other files' random crops are the same as without the bad file. (Its samples,
    transform, policy and `skipped` list are ImageSamples'.)"""

    def __getitem__(self, index: int):
        path = self.samples[index].path
        try:
            image, readable = load_rgb(path, self.max_pixels), True
        except BadImageError as e:
            if self.on_bad_file == "error":
                raise BadImageError(f"{e} (dataset.on_bad_file=skip leaves such a file out)") from e
            level = logging.DEBUG if path in self.skipped else logging.WARNING  # once, not once per view
            self.skipped.append(path)
            log.log(level, "Leaving out an unreadable image (dataset.on_bad_file=skip): %s", e)
            image, readable = Image.new("RGB", (64, 64)), False
        if self.transform is None:
            return image, readable
        try:
            if readable:
                return self.transform(image), readable
            with torch.random.fork_rng(devices=[]):
                return self.transform(image), readable
        except Exception as e:
            raise RuntimeError(f"Transform failed on image {path}: {type(e).__name__}: {e}") from e
