"""One-channel input: folding the first convolution is exactly the same as
repeating the grey image on three channels, at a third of that layer's work."""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import edgetl
from edgetl.data import InputSpec
from edgetl.zoo import create_tiny, get_spec, list_backbones
from edgetl.zoo.grayscale import fold_to_grayscale, gray_input_spec
from edgetl.zoo.profile import count_macs

IMAGENET = InputSpec(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))


def _check_fold(name: str, model) -> None:
    spec = get_spec(name)
    size = max(spec.min_image_size, 40)
    rng = np.random.default_rng(0)
    gray = [Image.fromarray(rng.integers(0, 256, (size + 7, size + 3), dtype=np.uint8), "L") for _ in range(2)]
    # Both the backbone's own normalisation and a per-channel one (which needs
    # the border-aware offset map) must fold exactly.
    for rgb in {spec.input_spec.replace(image_size=size), IMAGENET.replace(image_size=size)}:
        folded = fold_to_grayscale(copy.deepcopy(model), spec.stem_conv, rgb, gray_input_spec(rgb))
        x3 = torch.from_numpy(rgb.batch([g.convert("RGB") for g in gray]))
        x1 = torch.from_numpy(gray_input_spec(rgb).batch(gray))
        assert x1.shape[1] == 1
        with torch.no_grad():
            a, b = model.forward_features(x3), folded.forward_features(x1)
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * max(1.0, float(a.abs().max())))


@pytest.mark.parametrize("name", list_backbones())
def test_fold_equals_repeated_gray_tiny(name):
    """Every family's stem, in its tiny configuration."""
    _check_fold(name, create_tiny(name))


@pytest.mark.slow
@pytest.mark.parametrize("name", list_backbones())
def test_fold_equals_repeated_gray(name):
    _check_fold(name, edgetl.create_backbone(name, weights=None))


def test_first_layer_does_a_third_of_the_work():
    spec = get_spec("efficientnet_lite0")
    model = edgetl.create_backbone("efficientnet_lite0", weights=None)
    stem_rgb, _ = count_macs(torch.nn.Sequential(model.get_submodule(spec.stem_conv)), 224)
    folded = fold_to_grayscale(model, spec.stem_conv, IMAGENET, gray_input_spec(IMAGENET))
    stem_gray, _ = count_macs(torch.nn.Sequential(folded.get_submodule(spec.stem_conv)), 224, in_channels=1)
    assert stem_gray * 3 == stem_rgb


@pytest.mark.slow  # a whole train (~9 s): the full suite; the grey decision itself is tested above
def test_train_uses_one_channel_for_gray_folders(tmp_path):
    from conftest import make_shapes_folder

    from edgetl.runtime import Predictor

    data = make_shapes_folder(tmp_path / "color", num_per_class=8)
    gray_dir = tmp_path / "gray"
    for cls in os.listdir(data):
        os.makedirs(gray_dir / cls)
        for f in os.listdir(os.path.join(data, cls)):
            Image.open(os.path.join(data, cls, f)).convert("L").save(gray_dir / cls / f)
    result = edgetl.train(gray_dir, tmp_path / "run", image_size=64, search="off")  # the search has its own tests
    assert result.metrics["input_spec"]["channels"] == "L"
    model = onnx.load(tmp_path / "run" / "model.onnx")
    assert model.graph.input[0].type.tensor_type.shape.dim[1].dim_value == 1
    assert result.metrics["agreement_fp32"] == 1.0
    pred = Predictor(tmp_path / "run")
    # The device runtime turns colour photos to grey for a grey bundle.
    colour = os.path.join(data, "disc", "000.png")
    assert pred.preprocess([colour]).shape == (1, 1, 64, 64)
    assert pred.predict([colour])[0].label in {"bars", "checker", "disc"}
    colour_run = edgetl.train(data, tmp_path / "run-rgb", image_size=64, search="off")
    assert colour_run.metrics["input_spec"]["channels"] == "RGB"
    assert json.load(open(tmp_path / "run" / "metrics.json"))["input_spec"]["mean"] == [127.0]
