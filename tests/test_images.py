"""load_rgb: explicit colour handling, checked on pixels; bad files raise errors naming the path."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.fixtures_messy import (
    BLUE,
    RED,
    noisy,
    write_cmyk_jpeg,
    write_exif_jpeg,
    write_palette_with_transparency,
    write_png,
    write_png16,
    write_truncated_jpeg,
)
from transferlab.data.images import BACKGROUND, BadImageError, load_rgb, to_rgb

WHITE = np.array(BACKGROUND, dtype=np.uint8)


def pixels(path) -> np.ndarray:
    image = load_rgb(str(path))
    assert image.mode == "RGB"
    return np.asarray(image)


def test_rgba_is_composited_on_white_not_black(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[0] = [(255, 0, 0, 255), (0, 0, 255, 0), (0, 0, 255, 128)]  # opaque, transparent, half
    rgba[1] = [(0, 0, 0, 0), (10, 20, 30, 255), (0, 255, 0, 64)]
    out = pixels(write_png(tmp_path / "a.png", rgba))
    assert out[0, 0].tolist() == [255, 0, 0] and out[1, 1].tolist() == [10, 20, 30]
    assert out[0, 1].tolist() == out[1, 0].tolist() == [255, 255, 255]  # plain convert() gives blue / black
    # half transparent: src * a + white * (1 - a), to Pillow's integer rounding
    for (y, x), (r, g, b, a) in {(0, 2): (0, 0, 255, 128), (1, 2): (0, 255, 0, 64)}.items():
        expected = [round(c * a / 255 + 255 * (1 - a / 255)) for c in (r, g, b)]
        assert np.abs(out[y, x].astype(int) - expected).max() <= 1, (out[y, x], expected)


def test_palette_and_grey_with_transparency_are_composited(tmp_path):
    path = write_palette_with_transparency(tmp_path / "p.png")
    with Image.open(path) as im:
        palette = np.array(im.getpalette()).reshape(-1, 3)
        indices = np.asarray(im)
    out = pixels(path)
    assert (out[:, 0] == WHITE).all()  # index 0 is transparent
    assert (out[:, 1:] == palette[indices[:, 1:]]).all()
    la = np.zeros((1, 2, 2), np.uint8)
    la[0] = [(40, 255), (40, 0)]
    assert pixels(write_png(tmp_path / "la.png", la)).tolist() == [[[40, 40, 40], [255, 255, 255]]]
    gif = Image.fromarray(np.array([[1, 2]], np.uint8), mode="P")
    gif.putpalette([0, 0, 0, 200, 0, 0, 0, 200, 0] + [0] * 759)
    gif.save(tmp_path / "t.gif", transparency=2)
    assert pixels(tmp_path / "t.gif").tolist() == [[[200, 0, 0], [255, 255, 255]]]


def test_grayscale_is_replicated_to_three_channels(tmp_path):
    grey = noisy((100,), seed=1).squeeze()
    out = pixels(write_png(tmp_path / "g.png", grey))
    assert (out == grey[..., None]).all()
    bilevel = Image.fromarray(np.array([[0, 255]], np.uint8)).convert("1")
    bilevel.save(tmp_path / "b.png")
    assert pixels(tmp_path / "b.png").tolist() == [[[0, 0, 0], [255, 255, 255]]]


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path):
    cmyk = np.zeros((16, 32, 4), np.uint8)
    cmyk[:, :16] = (0, 255, 255, 0)  # cyan+... -> red
    cmyk[:, 16:] = (0, 0, 0, 0)  # no ink -> white
    out = pixels(write_cmyk_jpeg(tmp_path / "c.jpg", cmyk)).astype(int)
    assert np.abs(out[4:12, 2:12] - [255, 0, 0]).max() <= 3  # JPEG is lossy; away from the edge
    assert np.abs(out[4:12, 20:30] - [255, 255, 255]).max() <= 3


def test_16_bit_images_are_scaled_not_clipped_to_white(tmp_path):
    grey16 = np.array([[0, 256, 4095, 32768, 65535]], np.uint16)
    path = write_png(tmp_path / "g16.png", grey16)
    with Image.open(path) as im:
        assert im.mode == "I;16" and np.asarray(im.convert("RGB"))[0, 2, 0] == 255  # what convert() alone does
    assert pixels(path)[0, :, 0].tolist() == [0, 1, 15, 128, 255]
    rgb16 = np.array([[[65535, 32768, 0], [1000, 20000, 60000]]], np.uint16)
    assert pixels(write_png16(tmp_path / "c16.png", rgb16)).tolist() == [[[255, 128, 0], [3, 78, 234]]]
    # 32-bit integer and float images out of range: stretched, not clipped
    assert np.asarray(to_rgb(Image.fromarray(np.array([[0, 100_000, 200_000]], np.int32))))[0, :, 0].tolist() \
        == [0, 127, 255]
    assert np.asarray(to_rgb(Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32))))[0, :, 0].tolist() \
        == [0, 128, 255]


@pytest.mark.parametrize("orientation, size, top_left, bottom_right", [
    (1, (48, 32), RED, BLUE),   # stored as shown: red left, blue right
    (3, (48, 32), BLUE, RED),   # rotated 180
    (6, (32, 48), RED, BLUE),   # rotate 90 clockwise to show: red on top
    (8, (32, 48), BLUE, RED),   # rotate 90 counter-clockwise: blue on top
])
def test_exif_orientation_is_applied(tmp_path, orientation, size, top_left, bottom_right):
    stored = np.zeros((32, 48, 3), np.uint8)
    stored[:, :24], stored[:, 24:] = RED, BLUE
    image = load_rgb(str(write_exif_jpeg(tmp_path / "r.jpg", stored, orientation)))
    assert image.size == size
    out = np.asarray(image).astype(int)
    assert np.abs(out[2, 2] - top_left).max() <= 8 and np.abs(out[-3, -3] - bottom_right).max() <= 8


def test_bad_files_raise_an_error_naming_the_path(tmp_path):
    truncated = write_truncated_jpeg(tmp_path / "cut.jpg")
    with Image.open(truncated) as im:
        im.verify()  # PIL's verify() does not notice; the full decode does
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    for name in ("cut.jpg", "zero.jpg", "text.jpg"):
        with pytest.raises(BadImageError, match=str(tmp_path / name)):
            load_rgb(str(tmp_path / name))


def test_pixel_cap_is_ours_not_pils(tmp_path, monkeypatch):
    path = write_png(tmp_path / "n.png", noisy(RED))  # 32x32 = 1024 px
    with pytest.raises(BadImageError, match=r"32x32 = 1,024 pixels.*dataset.max_pixels"):
        load_rgb(str(path), max_pixels=1000)
    # A cap above PIL's own guard is honoured (PIL alone would refuse: 1024 > 2 x 400).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 400)
    assert load_rgb(str(path), max_pixels=2000).size == (32, 32)
    assert Image.MAX_IMAGE_PIXELS == 2000


def test_animated_gif_uses_the_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), c) for c in (RED, BLUE)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    out = pixels(tmp_path / "a.gif").astype(int)
    assert np.abs(out - RED).max() <= 8  # GIF palette quantisation
