"""Decode each image once: keep it as a uint8 tensor, resized so its short side is `short_side`.

Small-dataset fine-tuning on a CPU re-decodes and re-resizes every full-size JPEG every epoch. Decoding once
into a compact uint8 tensor (short side = the eval resize size, so crops keep their detail) and applying the
torchvision v2 transforms to tensors takes that work out of every epoch after the first.

`cache_dir` (dataset.cache_images=disk) also writes the decoded images to one file, keyed on the file list
with sizes and mtimes, the short side and the pixel limit, and memory-maps it (`torch.load(mmap=True)`) in
later runs and sweep jobs: they skip decoding altogether, and pages are shared by processes, not copied.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as F
from tqdm.auto import tqdm

from transferlab.data.folders import Sample, file_identity
from transferlab.data.images import load_rgb
from transferlab.files import atomic_save, digest

log = logging.getLogger(__name__)


def decode_resized(path: str, short_side: int, max_pixels: int | None = None) -> torch.Tensor:
    """(3, H, W) uint8 with min(H, W) == short_side (never upscaled)."""
    image = load_rgb(path, max_pixels=max_pixels)
    w, h = image.size
    scale = short_side / min(w, h)
    if scale < 1:
        image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
    return F.pil_to_tensor(image)


def decoded_cache_path(cache_dir: str | os.PathLike, samples: Sequence[Sample], short_side: int,
                       max_pixels: int | None) -> Path:
    key = digest({"version": 1, "files": file_identity(samples), "short_side": short_side, "max_pixels": max_pixels})
    return Path(cache_dir) / "images" / f"{key}.pt"


class DecodedImages(Dataset):
    """Like ImageSamples, but images are decoded once (in parallel threads) and kept as uint8 tensors.

    With `cache_dir`, the tensors live in one memory-mapped file there, written on first use."""

    def __init__(self, samples: Sequence[Sample], transform: Callable | None, short_side: int,
                 threads: int = 4, max_pixels: int | None = None, cache_dir: str | os.PathLike | None = None) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.cache_path = None if cache_dir is None else decoded_cache_path(cache_dir, samples, short_side, max_pixels)
        self.cache_hit = self.cache_path is not None and self.cache_path.is_file()
        if self.cache_hit:
            self.images = _unpack(torch.load(self.cache_path, mmap=True, weights_only=True))
            log.info("Memory-mapped %d decoded images from %s", len(self.images), self.cache_path)
            return
        with ThreadPoolExecutor(max_workers=threads) as pool:  # PIL releases the GIL while decoding
            jobs = pool.map(lambda s: decode_resized(s.path, short_side, max_pixels), self.samples)
            self.images = list(tqdm(jobs, total=len(self.samples), desc="decoding images", leave=False))
        nbytes = sum(t.numel() for t in self.images)
        log.info("Decoded %d images once (%.1f MB as uint8)", len(self.images), nbytes / 2**20)
        if self.cache_path is not None:
            atomic_save(_pack(self.images), self.cache_path)
            log.info("Cached decoded images in %s", self.cache_path)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.samples[index].label


def _pack(images: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """One flat uint8 buffer plus shapes: a single tensor to map, rather than thousands of small ones."""
    shapes = torch.tensor([list(t.shape) for t in images], dtype=torch.int64).reshape(-1, 3)
    flat = torch.cat([t.reshape(-1) for t in images]) if images else torch.empty(0, dtype=torch.uint8)
    return {"data": flat, "shapes": shapes}


def _unpack(packed: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Views into the (memory-mapped) buffer, one (3, H, W) tensor per image; nothing is read until used."""
    images, offset = [], 0
    for c, h, w in packed["shapes"].tolist():
        n = c * h * w
        images.append(packed["data"][offset:offset + n].view(c, h, w))
        offset += n
    return images
