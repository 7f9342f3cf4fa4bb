"""Builders for messy image folders: every fault the dataset doctor must find, planted on purpose.

Images are tiny (32 px) and noisy, so a planted colour case is never also a "flat graphic" by accident.
"""

from __future__ import annotations

import io
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 32
RED, BLUE, GREEN = (220, 30, 30), (30, 30, 220), (30, 200, 30)


def noisy(colour, size=(SIZE, SIZE), seed: int = 0) -> np.ndarray:
    """HxWxC uint8: a solid colour with +-25 noise (C = len(colour))."""
    rng = np.random.default_rng(seed)
    base = np.array(colour, dtype=np.int16)
    return np.clip(base + rng.integers(-25, 25, size=(size[1], size[0], len(colour))), 0, 255).astype(np.uint8)


def write_png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels[..., 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels).save(path)
    return path


def write_truncated_jpeg(path: Path, keep: float = 0.6, seed: int = 0) -> Path:
    """A real JPEG cut short: opens (header intact) and passes Image.verify(), but cannot be decoded."""
    buf = io.BytesIO()
    Image.fromarray(noisy(RED, seed=seed)).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def write_cmyk_jpeg(path: Path, cmyk: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(cmyk, mode="CMYK").save(path, "JPEG", quality=95)
    return path


def write_png16(path: Path, pixels: np.ndarray) -> Path:
    """A 16-bit PNG (HxW grey, or HxWx3 RGB, HxWx4 RGBA) written by hand: Pillow cannot save 16-bit colour."""
    pixels = pixels if pixels.ndim == 3 else pixels[..., None]
    h, w, c = pixels.shape
    colour_type = {1: 0, 3: 2, 4: 6}[c]
    raw = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(h))  # filter 0 per row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def write_exif_jpeg(path: Path, pixels: np.ndarray, orientation: int) -> Path:
    """A JPEG whose stored pixels must be rotated/flipped per its EXIF Orientation tag to look right."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, "JPEG", quality=95, exif=exif)
    return path


def write_palette_with_transparency(path: Path, seed: int = 0) -> Path:
    """A P-mode PNG with 200 noisy palette colours; index 0 is transparent (the left column)."""
    rng = np.random.default_rng(seed)
    indices = rng.integers(1, 200, size=(SIZE, SIZE)).astype(np.uint8)
    indices[:, 0] = 0
    im = Image.fromarray(indices, mode="P")
    im.putpalette(rng.integers(0, 256, size=768).astype(np.uint8).tobytes())
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, transparency=0)
    return path


def write_placeholder_gif(path: Path) -> Path:
    """Like hymenoptera's imageNotFound.gif: a flat grey graphic with a little dark text-like block."""
    pixels = np.full((SIZE, SIZE), 235, dtype=np.uint8)
    pixels[12:18, 6:26] = 60
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert("P").save(path, "GIF")
    return path


# Planted files of `make_messy`, relative to the root, by the finding that must name them.
BAD = {
    "unreadable": {"train/ant/truncated.jpg", "train/ant/empty.jpg", "train/ant/notes.jpg"},
    "too_large": {"train/bee/huge.png"},
}
NOTES = {
    "cmyk": {"train/ant/cmyk.jpg"},
    "high_bit_depth": {"train/ant/gray16.png", "train/bee/rgb16.png"},
    "grayscale": {"train/ant/gray.png", "train/ant/gray16.png"},
    "transparency": {"train/ant/rgba.png", "train/bee/palette.png"},
    "exif_rotated": {"train/ant/rotated.jpg"},
    "ignored_files": {"train/ant/.DS_Store", "train/bee/Thumbs.db", "train/ant/._000.png", "train/ant/readme.txt",
                      "val/bee/.DS_Store"},
    "ignored_dirs": {"train/.ipynb_checkpoints", "train/__pycache__", "train/ant/.ipynb_checkpoints",
                     "val/.git"},
}
WARNINGS = {
    "duplicate": {"train/ant/000.png"},  # same bytes as train/ant/000_copy.png
    "leak": {"val/ant/leaked.png"},  # same bytes as train/ant/001.png
    "missing_val_class": {"val/wasp"},
    "tiny": {"train/ant/tiny.png"},
    "suspicious": {"train/bee/placeholder.gif"},
    "imbalance": {"train"},
}
LAYOUT_ERRORS = {
    "empty_class": {"train/moth"},
    "unknown_val_class": {"val/hornet"},
}
MAX_PIXELS = 64 * 64  # huge.png (80x80) is above it; every other image is at most 48x32


def make_messy(root: Path, layout_faults: bool = False) -> Path:
    """train/{ant,bee,wasp} + val/{ant,bee} with every file-level fault; `layout_faults` adds an empty class
    and a val class unknown to train (which no policy can train around)."""
    t, v = root / "train", root / "val"
    for i in range(6):
        write_png(t / "ant" / f"{i:03d}.png", noisy(RED, seed=i))
        write_png(t / "bee" / f"{i:03d}.png", noisy(BLUE, seed=10 + i))
    for i in range(3):
        write_png(t / "wasp" / f"{i:03d}.png", noisy(GREEN, seed=20 + i))
        write_png(v / "ant" / f"{i:03d}.png", noisy(RED, seed=30 + i))
        write_png(v / "bee" / f"{i:03d}.png", noisy(BLUE, seed=40 + i))
    shutil.copy(t / "ant" / "000.png", t / "ant" / "000_copy.png")  # duplicate within train
    shutil.copy(t / "ant" / "001.png", v / "ant" / "leaked.png")  # leakage train -> val
    # files that do not decode
    write_truncated_jpeg(t / "ant" / "truncated.jpg")
    (t / "ant" / "empty.jpg").write_bytes(b"")
    (t / "ant" / "notes.jpg").write_text("these are my notes about ants, not a picture\n")
    write_png(t / "bee" / "huge.png", noisy(BLUE, size=(80, 80), seed=99))
    # colour cases, all readable
    write_cmyk_jpeg(t / "ant" / "cmyk.jpg", noisy((0, 200, 200, 20), seed=5))
    write_png(t / "ant" / "gray16.png", (noisy((128,), seed=6).astype(np.uint16) * 257))
    write_png16(t / "bee" / "rgb16.png", noisy(BLUE, seed=7).astype(np.uint16) * 257)
    write_png(t / "ant" / "gray.png", noisy((128,), seed=8))
    rgba = noisy((*RED, 255), seed=9)
    rgba[..., 3] = 255
    rgba[:, :8, 3] = 0  # a transparent band on the left
    write_png(t / "ant" / "rgba.png", rgba)
    write_palette_with_transparency(t / "bee" / "palette.png")
    write_exif_jpeg(t / "ant" / "rotated.jpg", noisy(RED, size=(48, 32), seed=11), orientation=6)
    write_png(t / "ant" / "tiny.png", noisy(RED, size=(8, 8), seed=12))
    write_placeholder_gif(t / "bee" / "placeholder.gif")
    # litter and tool folders
    (t / "ant" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (t / "bee" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (t / "ant" / "._000.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (t / "ant" / "readme.txt").write_text("ants\n")
    (v / "bee" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    write_png(t / ".ipynb_checkpoints" / "000-checkpoint.png", noisy(RED, seed=13))
    (t / "__pycache__").mkdir()
    write_png(t / "ant" / ".ipynb_checkpoints" / "001-checkpoint.png", noisy(RED, seed=14))
    (v / ".git").mkdir()
    (v / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    if layout_faults:
        (t / "moth").mkdir()
        for i in range(3):
            write_png(v / "hornet" / f"{i:03d}.png", noisy(GREEN, seed=50 + i))
    return root
