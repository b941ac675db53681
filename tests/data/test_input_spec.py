"""data.input_spec: resizing, cropping and normalisation of a batch, the
JSON round trip, and the validation of every field."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgetl.data.input_spec import InputSpec


def solid(color=(200, 30, 30), size=(16, 12), mode="RGB") -> Image.Image:
    return Image.new(mode, size, color)


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
