"""Data layer: folder scanning, safe image decoding, preprocessing, split.

Every input is built here in tmp_path with Pillow/numpy."""

from __future__ import annotations

import io
import os
import sys
import time

import numpy as np
import pytest
from PIL import Image

import edgetl.data.image as image_mod
from edgetl.data.folder import ImageFolder, scan_folder, stratified_split
from edgetl.data.image import decode_image, load_image
from edgetl.data.input_spec import InputSpec
from edgetl.errors import DataError, DataNotFoundError

ORIENTATION = 0x0112


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def write(path, image: Image.Image, fmt: str | None = None, **kwargs) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path, fmt, **kwargs)
    return str(path)


def solid(color=(200, 30, 30), size=(16, 12), mode="RGB") -> Image.Image:
    return Image.new(mode, size, color)


# --------------------------------------------------------------------------- ImageFolder


def test_scan_sorts_classes_and_lists_images(tmp_path):
    root = tmp_path / "data"
    for cls in ("zebra", "apple", "Mango"):
        for i in range(2):
            write(root / cls / f"{i}.png", solid())
    folder = scan_folder(root)
    assert isinstance(folder, ImageFolder)
    assert folder.classes == sorted(["zebra", "apple", "Mango"]) == ["Mango", "apple", "zebra"]
    assert len(folder) == 6
    assert folder.counts() == {"Mango": 2, "apple": 2, "zebra": 2}
    for path, target in zip(folder.paths, folder.targets):
        assert os.path.basename(os.path.dirname(path)) == folder.classes[target]
    assert folder.targets.dtype == np.int64
    assert folder.skipped == []


def test_scan_ignores_hidden_files_and_folders(tmp_path):
    root = tmp_path / "data"
    write(root / "cat" / "a.jpg", solid())
    write(root / "dog" / "b.png", solid())
    # macOS / Jupyter / zip debris, at every level
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "cat" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    write(root / "cat" / "._a.jpg", solid())  # AppleDouble companion, named like an image
    write(root / ".ipynb_checkpoints" / "c.png", solid())  # hidden top level: not a class
    write(root / "dog" / ".ipynb_checkpoints" / "b-checkpoint.png", solid())
    write(root / "__MACOSX" / "cat" / "._a.jpg", solid())
    folder = scan_folder(root)
    assert folder.classes == ["cat", "dog"]
    assert sorted(os.path.relpath(p, root) for p in folder.paths) == [
        os.path.join("cat", "a.jpg"),
        os.path.join("dog", "b.png"),
    ]
    assert folder.skipped == []


def test_scan_skips_non_images_with_reason(tmp_path):
    root = tmp_path / "data"
    write(root / "a" / "1.png", solid())
    write(root / "b" / "2.JPG", solid(), "JPEG")  # upper-case extension is an image
    (root / "a" / "notes.txt").write_text("hello")
    (root / "b" / "photo.tiff").write_bytes(encode(solid(), "TIFF"))
    (root / "README.md").write_text("loose file")
    folder = scan_folder(root)
    assert folder.classes == ["a", "b"]
    assert sorted(os.path.basename(p) for p in folder.paths) == ["1.png", "2.JPG"]
    skipped = {os.path.basename(item["path"]): item["reason"] for item in folder.skipped}
    assert set(skipped) == {"notes.txt", "photo.tiff", "README.md"}
    assert "not an image file type" in skipped["notes.txt"]
    assert "not an image file type" in skipped["photo.tiff"]
    assert "outside any class folder" in skipped["README.md"]
    assert all(item["reason"] for item in folder.skipped)


def test_scan_includes_nested_subfolders(tmp_path):
    root = tmp_path / "data"
    write(root / "a" / "top.png", solid())
    write(root / "a" / "2023" / "summer" / "deep.png", solid())
    write(root / "b" / "sub" / "x.jpg", solid())
    folder = scan_folder(root)
    rel = sorted(os.path.relpath(p, root) for p in folder.paths)
    assert rel == sorted([
        os.path.join("a", "top.png"),
        os.path.join("a", "2023", "summer", "deep.png"),
        os.path.join("b", "sub", "x.jpg"),
    ])
    assert folder.counts() == {"a": 2, "b": 1}
    # nested images carry their top-level class
    deep = [i for i, p in enumerate(folder.paths) if p.endswith("deep.png")][0]
    assert folder.classes[folder.targets[deep]] == "a"


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_scan_symlink_loop_does_not_hang(tmp_path):
    root = tmp_path / "data"
    write(root / "a" / "1.png", solid())
    write(root / "b" / "2.png", solid())
    os.symlink(root / "a", root / "a" / "loop")  # a/loop -> a
    os.symlink(root, root / "b" / "up")  # b/up -> data root
    start = time.perf_counter()
    folder = scan_folder(root)
    assert time.perf_counter() - start < 5
    assert folder.classes == ["a", "b"]
    # each real file once; nothing reached through the looping links
    assert sorted(os.path.relpath(p, root) for p in folder.paths) == [os.path.join("a", "1.png"), os.path.join("b", "2.png")]


def test_scan_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        scan_folder(tmp_path / "missing")
    (tmp_path / "file.png").write_bytes(encode(solid(), "PNG"))
    with pytest.raises(DataError, match="is a file"):
        scan_folder(tmp_path / "file.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        scan_folder(tmp_path / "empty")
    write(tmp_path / "one" / "only" / "1.png", solid())
    with pytest.raises(DataError, match="at least 2"):
        scan_folder(tmp_path / "one")
    assert scan_folder(tmp_path / "one", min_classes=1).classes == ["only"]
    write(tmp_path / "hole" / "a" / "1.png", solid())
    (tmp_path / "hole" / "b").mkdir()
    with pytest.raises(DataError, match="has no images") as exc:
        scan_folder(tmp_path / "hole")
    assert os.path.join("hole", "b") in str(exc.value)


def test_subset_keeps_classes(tmp_path):
    root = tmp_path / "data"
    for cls in ("a", "b"):
        for i in range(3):
            write(root / cls / f"{i}.png", solid())
    folder = scan_folder(root)
    sub = folder.subset([0, 4])
    assert sub.classes == folder.classes
    assert sub.paths == [folder.paths[0], folder.paths[4]]
    assert sub.targets.tolist() == [0, 1]


# --------------------------------------------------------------------------- decoding


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


# --------------------------------------------------------------------------- InputSpec


def test_input_spec_batch_shape_dtype():
    spec = InputSpec(image_size=32)
    images = [solid(size=(40, 30)), solid(size=(30, 60)), Image.new("L", (32, 32), 9)]
    batch = spec.batch(images)
    assert batch.shape == (3, 3, 32, 32)
    assert batch.dtype == np.float32
    assert batch.flags["C_CONTIGUOUS"]
    gray = InputSpec(image_size=16, channels="L", mean=(0.0,), std=(1.0,))
    gb = gray.batch(images[:2])
    assert gb.shape == (2, 1, 16, 16) and gb.dtype == np.float32


@pytest.mark.parametrize("resample", ["bilinear", "bicubic"])
def test_input_spec_normalisation_exact(resample):
    spec = InputSpec(image_size=24, mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 8.0), resample=resample)
    x = spec.to_array(solid((200, 100, 50), size=(50, 70)))
    assert x.shape == (3, 24, 24) and x.dtype == np.float32
    assert (x[0] == (200 - 10) / 2).all()
    assert (x[1] == (100 - 20) / 4).all()
    assert (x[2] == (50 - 30) / 8).all()
    default = InputSpec(image_size=24)
    y = default.to_array(solid((255, 0, 127), size=(24, 24)))
    np.testing.assert_allclose(y[:, 0, 0], [(255 - 127) / 128, (0 - 127) / 128, 0.0], rtol=0, atol=1e-7)


def test_input_spec_crop_fraction_one_keeps_square_image():
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    spec = InputSpec(image_size=32, crop_fraction=1.0, mean=(0.0,) * 3, std=(1.0,) * 3)
    x = spec.to_array(Image.fromarray(arr))
    np.testing.assert_array_equal(x.transpose(1, 2, 0), arr.astype(np.float32))  # untouched
    # downscaled, still the whole picture: corners survive
    big = np.zeros((64, 64, 3), np.uint8)
    big[:8, :8] = 255
    big[-8:, -8:] = 255
    y = spec.to_array(Image.fromarray(big))
    assert y[:, 0, 0].min() > 200 and y[:, -1, -1].min() > 200
    assert spec.resize_crop(Image.fromarray(big)).size == (32, 32)


def test_input_spec_center_crops_non_square():
    # 3 vertical bands; only the middle (green) band is in the centre square
    wide = np.zeros((40, 120, 3), np.uint8)
    wide[:, :40] = (255, 0, 0)
    wide[:, 40:80] = (0, 255, 0)
    wide[:, 80:] = (0, 0, 255)
    spec = InputSpec(image_size=40, crop_fraction=1.0, mean=(0.0,) * 3, std=(1.0,) * 3)
    x = spec.to_array(Image.fromarray(wide))
    assert x.shape == (3, 40, 40)
    assert (x.transpose(1, 2, 0) == (0, 255, 0)).all()
    tall = np.ascontiguousarray(wide.transpose(1, 0, 2))
    y = spec.to_array(Image.fromarray(tall))
    assert (y.transpose(1, 2, 0) == (0, 255, 0)).all()
    # with a smaller crop fraction the resize keeps the aspect ratio: still only green
    spec2 = InputSpec(image_size=20, crop_fraction=0.875, mean=(0.0,) * 3, std=(1.0,) * 3)
    z = spec2.to_array(Image.fromarray(wide))
    assert z.shape == (3, 20, 20)
    assert np.abs(z.transpose(1, 2, 0) - (0, 255, 0)).max() <= 1


def test_input_spec_json_round_trip():
    for spec in (
        InputSpec(),
        InputSpec(image_size=96, crop_fraction=1.0, mean=(1.0, 2.5, 3.0), std=(4.0, 5.0, 6.5), resample="bicubic"),
        InputSpec(image_size=28, channels="L", mean=(0.5,), std=(0.25,)),
    ):
        text = spec.to_json()
        back = InputSpec.from_json(text)
        assert back == spec
        assert isinstance(back.mean, tuple) and isinstance(back.std, tuple)
        assert back.to_json() == text
        assert hash(back) == hash(spec)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"image_size": 4},
        {"image_size": 224.0},
        {"image_size": "224"},
        {"crop_fraction": 0.0},
        {"crop_fraction": 1.5},
        {"crop_fraction": float("nan")},
        {"channels": "BGR"},
        {"channels": "L"},  # 3 mean/std values for 1 channel
        {"mean": (1.0, 2.0)},
        {"std": (1.0,)},
        {"std": (1.0, 0.0, 1.0)},
        {"std": (-1.0, 1.0, 1.0)},
        {"resample": "nearest"},
    ],
)
def test_input_spec_invalid(kwargs):
    with pytest.raises(ValueError):
        InputSpec(**kwargs)


def test_input_spec_replace_validates():
    spec = InputSpec()
    assert spec.replace(image_size=64).image_size == 64
    with pytest.raises(ValueError):
        spec.replace(image_size=2)


# --------------------------------------------------------------------------- split


def _targets():
    # imbalanced: 2, 3, 10 and 41 images
    return np.repeat(np.arange(4), [2, 3, 10, 41])


@pytest.mark.parametrize("fraction", [0.01, 0.2, 0.5, 0.99])
def test_split_keeps_every_class_on_both_sides(fraction):
    y = _targets()
    train, val = stratified_split(y, fraction, seed=3)
    assert len(np.intersect1d(train, val)) == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(y)))
    assert set(y[train]) == set(y[val]) == {0, 1, 2, 3}


def test_split_proportions():
    y = np.repeat(np.arange(2), [50, 100])
    train, val = stratified_split(y, 0.2, seed=0)
    assert np.bincount(y[val]).tolist() == [10, 20]
    assert np.bincount(y[train]).tolist() == [40, 80]


def test_split_deterministic_for_seed():
    y = _targets()
    a = stratified_split(y, 0.3, seed=7)
    b = stratified_split(y, 0.3, seed=7)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    others = [stratified_split(y, 0.3, seed=s)[1] for s in range(8, 13)]
    assert any(not np.array_equal(a[1], o) for o in others)
    assert a[0].dtype == np.int64 and a[1].dtype == np.int64


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_split_rejects_fraction_outside_open_interval(fraction):
    with pytest.raises(DataError, match="between 0 and 1"):
        stratified_split(_targets(), fraction)
    with pytest.raises(ValueError):  # DataError is also a ValueError
        stratified_split(_targets(), fraction)
