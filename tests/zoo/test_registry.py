"""Contract tests over the whole registry: a new backbone is tested by
registering it, with no new test code.

The contract runs on each backbone's tiny configuration (``BackboneSpec.tiny``,
``create_tiny``: milliseconds, real numbers) and on the full-size network
built on the meta device (shapes only, no weights allocated: the published
parameter counts and feature widths, cheaply). Where the numbers of the
full-size network matter, outputs recorded from torchvision are reproduced:
one backbone per family by default, every one in the full suite."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch import nn

import edgetl
from edgetl.zoo import create_tiny, get_spec, list_backbones
from edgetl.zoo._taps import tap_names, tapped_features
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
# Families built of stages (last-K fine-tuning splits them); VGG, AlexNet, GoogLeNet, Inception have none.
STAGED = {"efficientnet_lite", "mobilenet", "resnet"}
# The torchvision fixtures whose numbers the default run reproduces (AlexNet's and VGG's
# fully-connected layers make their deterministic weights seconds to draw: full suite only).
ORACLE_DEFAULT = {"googlenet", "inception_v3", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
                  "resnet18", "resnet50"}
# ONNX export costs seconds whatever the size: one tiny backbone by default (response
# normalisation, adaptive pooling, fully-connected layers); every full-size one in the full suite
# (test_onnx_export_parity).
ONNX_TINY = ("alexnet_2012",)
FIXTURES = [n for n in NAMES if os.path.exists(fixture_path(n))]


def _size(spec) -> int:
    return max(spec.min_image_size, 32)


def _meta(spec, num_classes=None):
    with torch.device("meta"):
        return spec.builder(num_classes=spec.num_classes if num_classes is None else num_classes).eval()


def _select(names, default):
    return [n if n in default else pytest.param(n, marks=pytest.mark.slow) for n in names]


@pytest.fixture(scope="module", params=NAMES)
def tiny(request):
    name = request.param
    return create_tiny(name), get_spec(name)


# ------------------------------------------------------------ tiny, every backbone


def test_contract(tiny):
    model, spec = tiny
    assert not model.training
    x = torch.randn(2, 3, _size(spec), _size(spec))
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model(x)
        head = model.forward_head(feats)
    assert feats.shape == (2, model.num_features)
    assert logits.shape == (2, spec.num_classes)
    torch.testing.assert_close(head, logits)
    assert torch.isfinite(feats).all()
    stem = model.get_submodule(spec.stem_conv)
    assert isinstance(stem, nn.Conv2d) and stem.in_channels == 3
    head_keys = [k for k in model.state_dict() if k.startswith(spec.head_prefix)]
    assert head_keys, f"{spec.head_prefix!r} names no parameters"


def test_reset_classifier_drops_only_the_head_tiny(tiny):
    _, spec = tiny
    model = create_tiny(spec.name)
    before = set(model.state_dict())
    model.reset_classifier(0)
    assert before - set(model.state_dict()) == {k for k in before if k.startswith(spec.head_prefix)}
    with torch.no_grad():
        assert model(torch.randn(1, 3, _size(spec), _size(spec))).shape == (1, model.num_features)


def test_stage_groups(tiny):
    """Applied in order, the groups compute forward_feature_map; pooled, the
    features; they hold the model's own parameters. Families not built of
    stages have none (and last-K refuses them)."""
    model, spec = tiny
    groups = model.stage_groups()
    assert groups or spec.family not in STAGED
    with torch.device("meta"):
        assert len(spec.builder(num_classes=0).stage_groups()) == len(groups)  # the tiny one has as many
    if not groups:
        return
    own = {id(p) for p in model.parameters()}
    assert {id(p) for g in groups for p in g.parameters()} <= own
    x = torch.randn(2, 3, _size(spec), _size(spec))
    with torch.no_grad():
        z = x
        for group in groups:
            z = group(z)
        torch.testing.assert_close(z, model.forward_feature_map(x))
        torch.testing.assert_close(model.pool_feature_map(z), model.forward_features(x))


def test_taps_tiny(tiny):
    model, spec = tiny
    x = torch.randn(2, 3, _size(spec), _size(spec))
    with torch.no_grad():
        taps = tapped_features(model, x)
        final = model.forward_features(x)
    assert tuple(taps) == tap_names(model) and len(taps) == len(model.tap_points()) + 1
    assert all(t.shape[0] == 2 and t.dim() == 2 for t in taps.values())
    torch.testing.assert_close(taps["final"], final)


@pytest.mark.parametrize("name", ONNX_TINY)
def test_onnx_export_parity_tiny(name, tmp_path):
    from edgetl.export.backbone_onnx import export_module, exportable
    from edgetl.runtime.session import make_session

    spec = get_spec(name)
    model = create_tiny(name)
    size = _size(spec)
    wrapper, outputs = exportable(model)
    path = export_module(wrapper, spec.input_spec.replace(image_size=size), str(tmp_path / "m.onnx"), outputs)
    x = np.random.default_rng(0).normal(size=(2, 3, size, size)).astype(np.float32)
    feats, logits = make_session(path).run(outputs, {"input": x})
    with torch.no_grad():
        ref = model.forward_features(torch.from_numpy(x))
        ref_logits = model.forward_head(ref).numpy()
    np.testing.assert_allclose(feats, ref.numpy(), rtol=1e-3, atol=1e-4 * max(1.0, float(ref.abs().max())))
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-3, atol=1e-4 * max(1.0, float(np.abs(ref_logits).max())))


# ------------------------------------------------- full size, on the meta device


@pytest.mark.parametrize("name", NAMES)
def test_num_params_recomputed(name):
    spec = get_spec(name)
    model = _meta(spec)
    assert sum(p.numel() for p in model.parameters()) == spec.num_params
    if spec.name in PUBLISHED_PARAMS:
        assert spec.num_params == PUBLISHED_PARAMS[spec.name]


@pytest.mark.parametrize("name", NAMES)
def test_contract_full_size(name):
    spec = get_spec(name)
    model = _meta(spec)
    x = torch.empty(2, 3, _size(spec), _size(spec), device="meta")
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model(x)
    assert feats.shape == (2, model.num_features) and model.num_features == spec.num_features
    assert logits.shape == (2, spec.num_classes)
    stem = model.get_submodule(spec.stem_conv)
    assert isinstance(stem, nn.Conv2d) and stem.in_channels == 3
    head_keys = [k for k in model.state_dict() if k.startswith(spec.head_prefix)]
    assert head_keys, f"{spec.head_prefix!r} names no parameters"


@pytest.mark.parametrize("name", NAMES)
def test_reset_classifier_drops_only_the_head(name):
    spec = get_spec(name)
    model = _meta(spec)
    before = set(model.state_dict())
    model.reset_classifier(0)
    after = set(model.state_dict())
    assert before - after == {k for k in before if k.startswith(spec.head_prefix)}
    with torch.no_grad():
        out = model(torch.empty(1, 3, _size(spec), _size(spec), device="meta"))
    assert out.shape == (1, spec.num_features)


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


@pytest.mark.parametrize("name", FIXTURES)
def test_published_keys_and_shapes(name):
    """Identical keys and shapes to torchvision's: published checkpoints load strictly."""
    shapes, _, _ = load_fixture(name)
    spec = get_spec(name)
    own = {k: tuple(v.shape) for k, v in _meta(spec).state_dict().items()}
    published = {k: v for k, v in shapes.items() if not k.startswith(spec.ignore_prefixes or ("\0",))}
    assert own == published


# ----------------------------------------------- full size, numbers that matter


@pytest.mark.parametrize("name", _select(FIXTURES, ORACLE_DEFAULT))
def test_same_outputs_as_torchvision(name):
    shapes, size, expected = load_fixture(name)
    spec = get_spec(name)
    model = _meta(spec)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(deterministic_state(own), strict=True, assign=True)
    with torch.no_grad():
        logits = model(oracle_input(size)).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(expected).max())))


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_onnx_export_parity(name, tmp_path):
    from edgetl.export.backbone_onnx import export_backbone
    from edgetl.runtime.session import make_session

    spec = get_spec(name)
    model = edgetl.create_backbone(name, weights=None)
    assert not model.training
    size = _size(spec)
    graph = export_backbone(spec.name, weights=None, input_spec=spec.input_spec.replace(image_size=size),
                            cache_dir=str(tmp_path))
    x = np.random.default_rng(0).normal(size=(2, 3, size, size)).astype(np.float32)
    (feats,) = make_session(graph.onnx_path).run(["features"], {"input": x})
    with torch.no_grad():
        ref = model.forward_features(torch.from_numpy(x)).numpy()
    assert ref.shape == (2, spec.num_features) and np.isfinite(ref).all()
    np.testing.assert_allclose(feats, ref, rtol=1e-3, atol=1e-4 * max(1.0, float(np.abs(ref).max())))
