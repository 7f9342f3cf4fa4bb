"""Open image files as RGB with explicit, tested colour handling, naming the file when it cannot be read.

Training, evaluation, prediction and the dataset doctor all go through `load_rgb`, so an image looks the
same wherever it is used:

- EXIF orientation is applied (`ImageOps.exif_transpose`), so a phone photo is upright at train and predict.
- Transparency (RGBA, LA, palette or RGB/L with a transparent colour) is composited on `BACKGROUND` (white)
  with `Image.alpha_composite`; a plain `convert("RGB")` would show whatever colour hides under alpha 0,
  often black.
- Grayscale (L, 1) is replicated to 3 channels; CMYK goes through PIL's CMYK->RGB conversion (no ICC).
- 16-bit grayscale (I;16, I) keeps its high byte, like Pillow does itself for 16-bit RGB PNGs; a plain
  `convert` clips every value above 255 to white.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from transferlab.errors import BadImageError

BACKGROUND = (255, 255, 255)
# PIL's decompression-bomb limit (~89.5 Mpx); above it PIL warns, above twice it refuses. dataset.max_pixels.
DEFAULT_MAX_PIXELS = 89_478_485
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def load_rgb(path: str, max_pixels: int | None = None) -> Image.Image:
    """Decode `path` to an RGB PIL image (see the module docstring for the colour rules).

    Images above `max_pixels` (default PIL's own limit) are refused with a BadImageError naming the file,
    before any pixel is decoded."""
    try:
        allow_pixels(max_pixels)
        with Image.open(path) as im:
            check_pixels(im, path, max_pixels)
            return to_rgb(im)
    except BadImageError:
        raise
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise BadImageError(f"Cannot read image {path}: {type(e).__name__}: {e}") from e


def allow_pixels(max_pixels: int | None) -> None:
    """Raise PIL's global decompression-bomb guard to our cap when the cap is higher.

    Image.open applies PIL's guard before we see the size, so a cap above PIL's default would never be
    reached otherwise; `check_pixels` enforces the cap itself. The guard is only ever raised, never lowered."""
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit


def check_pixels(im: Image.Image, path: str, max_pixels: int | None) -> None:
    """Refuse an image above the pixel cap from its header alone (nothing decoded yet)."""
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
    width, height = im.size
    if width * height > limit:
        raise BadImageError(
            f"Image {path} is {width}x{height} = {width * height:,} pixels, above the limit of {limit:,} "
            "(dataset.max_pixels); downscale the file or raise dataset.max_pixels."
        )


def has_transparency(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


def to_rgb(im: Image.Image) -> Image.Image:
    """Decode an opened image fully and convert it to RGB by the rules above."""
    im = ImageOps.exif_transpose(im)  # a decoded copy, orientation tag removed
    if im.mode in _SIXTEEN_BIT_MODES or im.mode == "I":
        im = _sixteen_bit_to_l(im)
    elif im.mode == "F":
        im = _float_to_l(im)
    if has_transparency(im):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def _sixteen_bit_to_l(im: Image.Image) -> Image.Image:
    """16-bit grayscale -> 8-bit by the high byte (65535 -> 255, 32768 -> 128).

    Hand-written because PIL's convert() clips instead of scaling. Mode "I" (32-bit ints, what some readers
    return for 16-bit files) is treated as 16-bit when its values fit, else scaled by its maximum."""
    transparency = im.info.get("transparency")
    values = np.asarray(im).astype(np.int64)
    peak = int(values.max(initial=0))
    if im.mode == "I" and (peak > 65535 or values.min(initial=0) < 0):
        low = int(values.min())
        values = (values - low) * 255 // max(1, peak - low)
    else:
        values = values >> 8
    out = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), mode="L")
    if isinstance(transparency, int):  # a 16-bit transparent grey level (PNG tRNS)
        alpha = np.where(np.asarray(im) == transparency, 0, 255).astype(np.uint8)
        out = Image.merge("LA", (out, Image.fromarray(alpha, mode="L")))
    return out


def _float_to_l(im: Image.Image) -> Image.Image:
    """32-bit float images: [0, 1] is scaled to [0, 255]; any other range is stretched to it."""
    values = np.nan_to_num(np.asarray(im, dtype=np.float64))
    low, high = float(values.min(initial=0.0)), float(values.max(initial=0.0))
    if low < 0.0 or high > 1.0:
        values = (values - low) / max(high - low, 1e-12)
    return Image.fromarray(np.round(values * 255.0).astype(np.uint8), mode="L")
