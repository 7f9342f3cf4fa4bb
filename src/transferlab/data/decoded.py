"""Decode each image once: keep it as a uint8 tensor, resized so its short side is `short_side`.

Small-dataset fine-tuning on a CPU re-decodes and re-resizes every full-size JPEG every epoch. Decoding once
into a compact uint8 tensor (short side = the eval resize size, so crops keep their detail) and applying the
torchvision v2 transforms to tensors takes that work out of every epoch after the first.

`cache_dir` (dataset.cache_images=disk) also writes the decoded images to one file, keyed on the files'
content digests in order (`transferlab.data.identity`: looked up by stat, so a file replaced by another of the
same size with its mtime put back changes the key), the short side and the pixel limit, and memory-maps it
(`torch.load(mmap=True)`) in later runs and sweep jobs: they skip decoding altogether, and pages are shared by
processes, not copied. A folder that cannot be written is warned about once; the images stay in memory.

`on_bad_file="skip"`: a file that cannot be decoded here is left out (warned about, listed in `skipped`; the
entry records which, so a run mapping it leaves out the same ones); `"error"` stops naming it.

Integrity: the file holds the sha256 of every image, computed once when it is written. Loading checks only the
layout (a sha256 over the shapes and the image digests, and that the sizes add up to the buffer), so mapping
stays instant and reads nothing; each image is checked against its digest the first time this process reads
it (about 0.2 ms per 256 px image, a small share of its transforms). A corrupt image makes the whole entry be
reported in one warning, deleted and rebuilt (under the entry's file lock, like the first build, so concurrent
jobs rebuild it once), and the read returns the rebuilt, correct pixels.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as F
from tqdm.auto import tqdm

from transferlab.data.folders import Sample
from transferlab.data.identity import FileIndex
from transferlab.data.images import BadImageError, load_rgb
from transferlab.files import (
    CorruptEntry,
    atomic_save,
    digest,
    discard_corrupt,
    entry_lock,
    load_or_build,
    save_or_warn,
    sha256_tensor,
)

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
    """The entry of these files' pixels: keyed on their content digests, in order (3: was sizes and mtimes)."""
    index = FileIndex(cache_dir)
    files = index.digests([s.path for s in samples])
    index.save()
    key = digest({"version": 3, "files": files, "short_side": short_side, "max_pixels": max_pixels})
    return Path(cache_dir) / "images" / f"{key}.pt"


WHAT = "decoded-image cache"
_REBUILDING = threading.Lock()  # threads of one process (decoding threads, a thread pool of loaders) rebuild once


class DecodedImages(Dataset):
    """Like ImageSamples, but images are decoded once (in parallel threads) and kept as uint8 tensors.

    With `cache_dir`, the tensors live in one memory-mapped file there, written on first use, each image
    verified against its stored sha256 on its first read (see the module's docstring)."""

    def __init__(self, samples: Sequence[Sample], transform: Callable | None, short_side: int,
                 threads: int = 4, max_pixels: int | None = None, cache_dir: str | os.PathLike | None = None,
                 on_bad_file: str = "error") -> None:
        self.all_samples = list(samples)
        self.samples = list(samples)  # less the files left out (on_bad_file="skip")
        self.skipped: list[str] = []
        self.on_bad_file = on_bad_file
        self.transform = transform
        self.short_side, self.threads, self.max_pixels = short_side, threads, max_pixels
        self.cache_path = None if cache_dir is None else decoded_cache_path(cache_dir, samples, short_side, max_pixels)
        self._digests: list[bytes] | None = None  # per image, when mapped from the cache file
        self._verified = bytearray()  # 1 once image i has matched its digest in this process
        self._mapped: tuple | None = None  # identity of the mapped file, to tell it from a rebuilt one
        if self.cache_path is None:
            self.images, self.cache_hit = self._decode(), False
        else:
            self.images, self.cache_hit = load_or_build(self.cache_path, self._map, self._build, WHAT)

    def _decode_one(self, sample: Sample) -> torch.Tensor | None:
        try:
            return decode_resized(sample.path, self.short_side, self.max_pixels)
        except BadImageError as e:
            if self.on_bad_file == "error":
                raise BadImageError(f"{e} (dataset.on_bad_file=skip leaves such a file out)") from e
            log.warning("Leaving out an unreadable image (dataset.on_bad_file=skip): %s", e)
            return None

    def _decode(self) -> list[torch.Tensor]:
        with ThreadPoolExecutor(max_workers=self.threads) as pool:  # PIL releases the GIL while decoding
            jobs = pool.map(self._decode_one, self.all_samples)
            decoded = list(tqdm(jobs, total=len(self.all_samples), desc="decoding images", leave=False))
        self._leave_out([i for i, t in enumerate(decoded) if t is None])
        images = [t for t in decoded if t is not None]
        nbytes = sum(t.numel() for t in images)
        log.info("Decoded %d images once (%.1f MB as uint8)", len(images), nbytes / 2**20)
        return images

    def _leave_out(self, indices: Sequence[int]) -> None:
        left_out = set(indices)
        self.samples = [s for i, s in enumerate(self.all_samples) if i not in left_out]
        self.skipped = [s.path for i, s in enumerate(self.all_samples) if i in left_out]

    def _build(self, path: Path) -> list[torch.Tensor]:
        images = self._decode()
        left_out = set(self.skipped)
        packed = _pack(images, [i for i, s in enumerate(self.all_samples) if s.path in left_out])
        if save_or_warn(lambda: atomic_save(packed, path), path, WHAT, packed["data"].numel()):
            log.info("Cached decoded images in %s", path)
        self._digests, self._mapped = None, None  # in memory, just decoded: nothing to verify
        return images

    def _map(self, path: Path) -> list[torch.Tensor]:
        identity = _identity(path)
        packed = torch.load(path, mmap=True, weights_only=True)
        skipped = packed.get("skipped") if isinstance(packed, dict) else None
        if not isinstance(skipped, torch.Tensor):
            raise CorruptEntry("not a decoded-image cache entry")
        images, digests = _unpack_checked(packed, len(self.all_samples) - len(skipped))
        self._leave_out(skipped.tolist())
        if self.skipped:
            log.warning("The cached images leave out %d file(s) that could not be read when they were decoded "
                        "(dataset.on_bad_file=skip): %s", len(self.skipped), ", ".join(self.skipped))
        if _identity(path) != identity:
            raise CorruptEntry("replaced while it was being loaded")
        self._digests, self._verified, self._mapped = digests, bytearray(len(images)), identity
        log.info("Memory-mapped %d decoded images from %s", len(images), path)
        return images

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        image = self.images[index]
        if self._digests is not None and not self._verified[index]:
            image = self._checked(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.samples[index].label

    def _checked(self, index: int) -> torch.Tensor:
        """Image `index`, verified against its digest; a mismatch rebuilds the entry and returns the new pixels."""
        images, digests = self.images, self._digests
        image = images[index]
        if digests is None or hashlib.sha256(image.numpy()).digest() == digests[index]:
            self._verified[index] = 1
            return image
        with _REBUILDING:
            if self.images is images:  # not yet rebuilt by another thread of this process
                with entry_lock(self.cache_path):
                    if _identity(self.cache_path) == self._mapped:  # not yet replaced by another job
                        discard_corrupt(self.cache_path, WHAT, f"checksum mismatch in image {index} of "
                                        f"{len(images)}, {self.samples[index].path}")
                self.images, self.cache_hit = load_or_build(self.cache_path, self._map, self._build, WHAT)
        return self._checked(index)


def _identity(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _pack(images: list[torch.Tensor], skipped: Sequence[int] = ()) -> dict:
    """One flat uint8 buffer plus shapes (a single tensor to map, rather than thousands of small ones), the
    sha256 of each image, the indices of the files left out, and a sha256 of the shapes, digests and indices
    together, checked on load."""
    shapes = torch.tensor([list(t.shape) for t in images], dtype=torch.int64).reshape(-1, 3)
    flat = torch.cat([t.reshape(-1) for t in images]) if images else torch.empty(0, dtype=torch.uint8)
    # hashed from the flat buffer, in the layout the reader verifies (decoded tensors are HWC views: hashing
    # them directly would copy each one again)
    ends = shapes.prod(dim=1).cumsum(0).tolist()
    flat_bytes = flat.numpy()
    joined = b"".join(hashlib.sha256(flat_bytes[start:end]).digest()
                      for start, end in zip([0, *ends][:-1], ends, strict=True))
    digests = torch.tensor(np.frombuffer(joined, dtype=np.uint8)).reshape(-1, 32)
    left_out = torch.tensor(list(skipped), dtype=torch.int64)
    return {"data": flat, "shapes": shapes, "sha256": digests, "skipped": left_out,
            "layout_sha256": _layout_digest(shapes, digests, left_out)}


def _layout_digest(shapes: torch.Tensor, digests: torch.Tensor, skipped: torch.Tensor) -> str:
    return sha256_tensor(shapes) + sha256_tensor(digests) + sha256_tensor(skipped)


def _unpack_checked(packed: dict, count: int) -> tuple[list[torch.Tensor], list[bytes]]:
    """Views into the (memory-mapped) buffer, one (3, H, W) tensor per image, and each image's digest; nothing
    of the pixels is read. Raises `CorruptEntry` if the layout does not match its checksum or the buffer."""
    if not isinstance(packed, dict) or not all(isinstance(packed.get(k), torch.Tensor)
                                               for k in ("data", "shapes", "sha256", "skipped")):
        raise CorruptEntry("not a decoded-image cache entry")
    data, shapes, digests = packed["data"], packed["shapes"], packed["sha256"]
    if packed.get("layout_sha256") != _layout_digest(shapes, digests, packed["skipped"]):
        raise CorruptEntry("checksum mismatch in the shapes, image digests or left-out files")
    if data.dtype != torch.uint8 or len(shapes) != count or int(shapes.prod(dim=1).sum()) != data.numel():
        raise CorruptEntry(f"{len(shapes)} images of {int(shapes.prod(dim=1).sum())} bytes, expected {count} "
                           f"images in a {data.numel()}-byte buffer")
    images, offset = [], 0
    for c, h, w in shapes.tolist():
        n = c * h * w
        images.append(data[offset:offset + n].view(c, h, w))
        offset += n
    return images, [bytes(d) for d in digests.numpy()]
