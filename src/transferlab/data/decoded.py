"""Decode each image once: keep it in memory as a uint8 tensor, resized so its short side is `short_side`.

Small-dataset fine-tuning on a CPU re-decodes and re-resizes every full-size JPEG every epoch. Decoding once
into a compact uint8 tensor (short side = the eval resize size, so crops keep their detail) and applying the
torchvision v2 transforms to tensors takes that work out of every epoch after the first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as F
from tqdm.auto import tqdm

from transferlab.data.folders import Sample
from transferlab.data.images import load_rgb

log = logging.getLogger(__name__)


def decode_resized(path: str, short_side: int, max_pixels: int | None = None) -> torch.Tensor:
    """(3, H, W) uint8 with min(H, W) == short_side (never upscaled)."""
    image = load_rgb(path, max_pixels=max_pixels)
    w, h = image.size
    scale = short_side / min(w, h)
    if scale < 1:
        image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
    return F.pil_to_tensor(image)


class DecodedImages(Dataset):
    """Like ImageSamples, but images are decoded once (in parallel threads) and kept as uint8 tensors."""

    def __init__(self, samples: Sequence[Sample], transform: Callable | None, short_side: int,
                 threads: int = 4, max_pixels: int | None = None) -> None:
        self.samples = list(samples)
        self.transform = transform
        with ThreadPoolExecutor(max_workers=threads) as pool:  # PIL releases the GIL while decoding
            jobs = pool.map(lambda s: decode_resized(s.path, short_side, max_pixels), self.samples)
            self.images = list(tqdm(jobs, total=len(self.samples), desc="decoding images", leave=False))
        nbytes = sum(t.numel() for t in self.images)
        log.info("Decoded %d images once (%.1f MB as uint8)", len(self.images), nbytes / 2**20)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.samples[index].label
