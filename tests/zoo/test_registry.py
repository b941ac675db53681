"""Contract tests over the whole registry: a new backbone is tested by
registering it, with no new test code. Tiny inputs, random weights: fast."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import edgetl
from edgetl.zoo import get_spec, list_backbones
from edgetl.zoo.profile import profile_backbone
from zoo_oracle import deterministic_state, fixture_path, load_fixture, oracle_input

NAMES = list_backbones()

# torchvision's published figures (num_params; GFLOPS column, which counts
# multiply-accumulates) and the TF release's for EfficientNet-Lite.
PUBLISHED_PARAMS = {
    "alexnet": 61_100_840, "vgg16": 138_357_544, "googlenet": 6_624_904, "inception_v3": 27_161_264,
    "resnet18": 11_689_512, "resnet50": 25_557_032, "mobilenet_v2": 3_504_872,
    "mobilenet_v3_large": 5_483_032, "mobilenet_v3_small": 2_542_856, "efficientnet_lite0": 4_652_008,
}
PUBLISHED_GMACS = {
    "alexnet": 0.714, "vgg16": 15.47, "googlenet": 1.50, "inception_v3": 5.71, "resnet18": 1.81,
    "resnet50": 4.09, "mobilenet_v2": 0.301, "mobilenet_v3_large": 0.217, "mobilenet_v3_small": 0.057,
}


@pytest.fixture(scope="module", params=NAMES)
def model_and_spec(request):
    name = request.param
    return edgetl.create_backbone(name, weights=None), get_spec(name)


def test_num_params_recomputed(model_and_spec):
    model, spec = model_and_spec
    assert sum(p.numel() for p in model.parameters()) == spec.num_params
    if spec.name in PUBLISHED_PARAMS:
        assert spec.num_params == PUBLISHED_PARAMS[spec.name]


def test_contract(model_and_spec):
    model, spec = model_and_spec
    assert not model.training
    size = max(spec.min_image_size, 32)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model(x)
    assert feats.shape == (2, model.num_features) and model.num_features == spec.num_features
    assert logits.shape == (2, spec.num_classes)
    assert torch.isfinite(feats).all()
    stem = model.get_submodule(spec.stem_conv)
    assert isinstance(stem, torch.nn.Conv2d) and stem.in_channels == 3
    head_keys = [k for k in model.state_dict() if k.startswith(spec.head_prefix)]
    assert head_keys, f"{spec.head_prefix!r} names no parameters"


def test_reset_classifier_drops_only_the_head(model_and_spec):
    _, spec = model_and_spec
    model = edgetl.create_backbone(spec.name, weights=None)
    before = set(model.state_dict())
    model.reset_classifier(0)
    after = set(model.state_dict())
    assert before - after == {k for k in before if k.startswith(spec.head_prefix)}
    size = max(spec.min_image_size, 32)
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, spec.num_features)


def test_onnx_export_parity(model_and_spec, tmp_path):
    from edgetl.export.backbone_onnx import export_backbone
    from edgetl.runtime.session import make_session

    model, spec = model_and_spec
    size = max(spec.min_image_size, 32)
    graph = export_backbone(spec.name, weights=None, input_spec=spec.input_spec.replace(image_size=size),
                            cache_dir=str(tmp_path))
    x = np.random.default_rng(0).normal(size=(2, 3, size, size)).astype(np.float32)
    (feats,) = make_session(graph.onnx_path).run(["features"], {"input": x})
    with torch.no_grad():
        ref = model.forward_features(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(feats, ref, rtol=1e-3, atol=1e-4 * max(1.0, float(np.abs(ref).max())))


@pytest.mark.parametrize("name", [n for n in NAMES if os.path.exists(fixture_path(n))])
def test_same_outputs_as_torchvision(name):
    shapes, size, expected = load_fixture(name)
    model = edgetl.create_backbone(name, weights=None)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    spec = get_spec(name)
    published = {k: v for k, v in shapes.items() if not k.startswith(spec.ignore_prefixes or ("\0",))}
    assert own == published  # identical keys and shapes: published checkpoints load strictly
    model.load_state_dict(deterministic_state(own), strict=True)
    with torch.no_grad():
        logits = model(oracle_input(size)).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(expected).max())))


@pytest.mark.parametrize("name", NAMES)
def test_profile(name):
    prof = profile_backbone(name)
    spec = get_spec(name)
    assert prof.params == spec.num_params
    assert 0 < prof.conv_param_share + prof.fc_param_share <= 1.0
    assert abs(prof.conv_mac_share + prof.fc_mac_share - 1.0) < 1e-9
    if name in PUBLISHED_GMACS:
        assert prof.macs / 1e9 == pytest.approx(PUBLISHED_GMACS[name], rel=0.02)
    if name == "efficientnet_lite0":
        assert prof.macs / 1e9 == pytest.approx(0.40, rel=0.05)
