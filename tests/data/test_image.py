"""data.image: safe decoding of every format a photo folder holds (palette,
transparency, 16-bit, CMYK, animation, EXIF orientation) and refusal of
broken, mislabelled and oversized files.

Every input is built here in tmp_path with Pillow/numpy."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

import edgetl.data.image as image_mod
from edgetl.data.image import decode_image, load_image
from edgetl.errors import DataError
from imagefiles import encode, solid, write

ORIENTATION = 0x0112


@pytest.mark.parametrize(
    "fmt,kwargs",
    [("JPEG", {"quality": 95}), ("PNG", {}), ("BMP", {}), ("GIF", {}), ("WEBP", {"lossless": True})],
)
def test_decode_formats(tmp_path, fmt, kwargs):
    color = (200, 40, 90)
    path = tmp_path / f"img.{fmt.lower()}"
    write(path, solid(color, (20, 10)), fmt, **kwargs)
    image = load_image(path)
    assert image.mode == "RGB"
    assert image.size == (20, 10)
    px = np.asarray(image).reshape(-1, 3).astype(int)
    tol = 6 if fmt in ("JPEG", "GIF") else 0
    assert np.abs(px - color).max() <= tol


def test_decode_grayscale_L(tmp_path):
    data = encode(Image.new("L", (8, 6), 77), "PNG")
    rgb = decode_image(data, "g.png")
    assert rgb.mode == "RGB" and (np.asarray(rgb) == 77).all()
    gray = decode_image(data, "g.png", channels="L")
    assert gray.mode == "L" and gray.size == (8, 6) and (np.asarray(gray) == 77).all()


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_decode_palette_with_transparency(fmt):
    p = Image.new("P", (4, 4), 0)
    p.putpalette([255, 0, 0, 0, 0, 0] + [0] * (256 * 3 - 6))  # 0 red, 1 black (transparent)
    p.putpixel((0, 0), 1)
    out = decode_image(encode(p, fmt, transparency=1), f"p.{fmt.lower()}")
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255)  # transparent -> white, not black
    assert out.getpixel((2, 2)) == (255, 0, 0)


def test_decode_rgba_transparent_is_white():
    arr = np.zeros((4, 4, 4), np.uint8)
    arr[..., 1] = 255  # green everywhere ...
    arr[:2, :, 3] = 255  # ... opaque on the top two rows only
    arr[2, :, 3] = 128  # half transparent row
    out = np.asarray(decode_image(encode(Image.fromarray(arr, "RGBA"), "PNG"), "a.png")).astype(int)
    assert (out[:2] == (0, 255, 0)).all()
    assert (out[3] == (255, 255, 255)).all()
    # 50 % green over white
    assert np.abs(out[2] - (127, 255, 127)).max() <= 1


def test_decode_la_transparent_is_white():
    la = Image.new("LA", (2, 1))
    la.putpixel((0, 0), (0, 0))
    la.putpixel((1, 0), (0, 255))
    out = np.asarray(decode_image(encode(la, "PNG"), "la.png"))
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [0, 0, 0]


def test_decode_16bit_grayscale_is_scaled_not_clipped():
    ramp = np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (4, 1))
    image = Image.fromarray(ramp)
    assert image.mode == "I;16"
    data = encode(image, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    out = np.asarray(decode_image(data, "deep.png", channels="L")).astype(int)
    assert out.shape == (4, 256)
    assert out[0, 0] == 0 and out[0, -1] == 255
    assert np.abs(out[0] - np.arange(256)).max() <= 1  # linear, not saturated at 255
    assert len(np.unique(out[0])) > 250
    rgb = np.asarray(decode_image(data, "deep.png"))
    assert rgb.shape == (4, 256, 3) and (rgb[..., 0] == out).all()


def test_decode_cmyk_jpeg():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # red
    data = encode(cmyk, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = decode_image(data, "cmyk.jpg")
    assert out.mode == "RGB"
    assert np.abs(np.asarray(out).astype(int) - (255, 0, 0)).max() <= 6


@pytest.mark.parametrize("fmt,kwargs", [("GIF", {}), ("WEBP", {"lossless": True})])
def test_decode_animated_takes_first_frame(fmt, kwargs):
    frames = [solid(c, (8, 8)) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **kwargs)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    out = decode_image(data, f"anim.{fmt.lower()}")
    assert out.size == (8, 8)
    assert (np.asarray(out) == (255, 0, 0)).all()


def _with_orientation(image: Image.Image, fmt: str, orientation: int, **kwargs) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return encode(image, fmt, exif=exif, **kwargs)


# What a viewer shows for each EXIF orientation of the stored array a[row, col].
_UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored horizontally
    3: lambda a: a[::-1, ::-1],  # rotated 180
    4: lambda a: a[::-1, :],  # mirrored vertically
    5: lambda a: a.transpose(1, 0, 2),  # row 0 = left side, col 0 = top
    6: lambda a: np.rot90(a, -1),  # row 0 = right side: rotate 90 clockwise
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # row 0 = right side, col 0 = bottom
    8: lambda a: np.rot90(a, 1),  # row 0 = left side: rotate 90 counter-clockwise
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_pixel_placement(orientation):
    # 3 wide x 2 tall, every pixel distinct: any wrong flip or rotation shows
    stored = (np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 13)
    data = _with_orientation(Image.fromarray(stored), "PNG", orientation)
    out = np.asarray(decode_image(data, "oriented.png"))
    expected = _UPRIGHT[orientation](stored)
    assert out.shape == expected.shape
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_jpeg(orientation):
    # 64 wide x 32 tall, left half red, right half blue, a green top-left block
    arr = np.zeros((32, 64, 3), np.uint8)
    arr[:, :32] = (255, 0, 0)
    arr[:, 32:] = (0, 0, 255)
    arr[:16, :16] = (0, 255, 0)
    data = _with_orientation(Image.fromarray(arr), "JPEG", orientation, quality=95)
    out = decode_image(data, "phone.jpg")
    expected = _UPRIGHT[orientation](arr)
    assert (out.height, out.width) == expected.shape[:2]
    if orientation in (6, 8):
        assert out.size == (32, 64)  # width and height swapped
    got = np.asarray(out).astype(int)
    # compare block centres (JPEG blurs edges)
    for y in range(4, expected.shape[0], 8):
        for x in range(4, expected.shape[1], 8):
            assert np.abs(got[y, x] - expected[y, x]).max() <= 12, (y, x)


def test_corrupt_exif_does_not_cost_the_image():
    image = solid((10, 20, 30), (6, 4))
    exif = Image.Exif()
    exif[ORIENTATION] = 99  # not a valid orientation
    out = decode_image(encode(image, "PNG", exif=exif), "odd.png")
    assert out.size == (6, 4)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="empty") as exc:
        load_image(path)
    assert "empty.jpg" in str(exc.value)


def test_truncated_jpeg(tmp_path):
    rng = np.random.default_rng(0)
    data = encode(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as exc:
        load_image(path)
    assert "cut.jpg" in str(exc.value)


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image\n")
    with pytest.raises(DataError, match="not a readable image") as exc:
        load_image(path)
    assert "notes.jpg" in str(exc.value)


def test_tiff_named_png_is_refused(tmp_path):
    path = tmp_path / "scan.png"
    path.write_bytes(encode(solid(), "TIFF"))
    assert Image.open(path).format == "TIFF"  # Pillow itself would read it
    with pytest.raises(DataError) as exc:
        load_image(path)
    assert "scan.png" in str(exc.value)


def test_missing_file_and_folder_path(tmp_path):
    with pytest.raises(DataError, match="cannot read") as exc:
        load_image(tmp_path / "nope.png")
    assert "nope.png" in str(exc.value)
    with pytest.raises(DataError, match="cannot read"):
        load_image(tmp_path)


def test_decompression_bomb(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    write(path, solid(size=(200, 200)), "PNG")
    before = Image.MAX_IMAGE_PIXELS
    monkeypatch.setattr(image_mod, "MAX_IMAGE_PIXELS", 10_000)
    with pytest.raises(DataError, match="too large") as exc:
        load_image(path)
    assert "bomb.png" in str(exc.value)
    # just over the limit (not 2x) is refused too: warnings are errors here
    mid = encode(solid(size=(110, 100)), "PNG")
    with pytest.raises(DataError, match="too large"):
        decode_image(mid, "mid.png")
    # Pillow's global limit is restored, and a small image still decodes
    assert Image.MAX_IMAGE_PIXELS == before
    assert decode_image(encode(solid(size=(50, 50)), "PNG"), "small.png").size == (50, 50)
