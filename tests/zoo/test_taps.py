"""Tap points: pooled intermediate features of every backbone, all from one
forward pass of one ONNX graph, cut down to any one of them, with what each
costs."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import edgetl
from edgetl.export import backbone_onnx
from edgetl.export.backbone_onnx import FEATURES_NAME, export_backbone
from edgetl.export.graph_ops import truncate_to_tap
from edgetl.features.extract import FeatureExtractor
from edgetl.runtime.session import make_session
from edgetl.zoo import FINAL_TAP, get_spec, list_backbones
from edgetl.zoo._taps import FINAL, tap_names, tap_points, tapped_features
from edgetl.zoo.grayscale import gray_input_spec
from edgetl.zoo.profile import profile_backbone, profile_taps, tap_dims, tap_macs

LITE = "efficientnet_lite0"
SIZE = 64  # small input: the taps graph exports in seconds


def test_final_is_one_name():
    assert FINAL == FINAL_TAP == backbone_onnx.FINAL_TAP == "final"


# ------------------------------------------------- every family, meta device


@pytest.mark.parametrize("name", list_backbones())
def test_tap_points_resolve_and_cost_grows(name):
    spec = get_spec(name)
    with torch.device("meta"):
        model = spec.builder(num_classes=0)
    points = tap_points(model)
    assert 3 <= len(points) + 1 <= 8, points
    modules = [model.get_submodule(path) for _, path in points]
    assert len({id(m) for m in modules}) == len(modules)
    # Declared earliest first: the order the modules run in.
    order = [path for _, path in points]
    assert order == sorted(order, key=[n for n, _ in model.named_modules()].index)
    taps = profile_taps(name)
    assert [t.name for t in taps] == [n for n, _ in points] + ["final"]
    assert [t.module for t in taps[:-1]] == order
    values = [t.macs for t in taps]
    assert all(a < b for a, b in zip(values, values[1:])), taps
    assert taps[-1].dim == spec.num_features and all(t.dim > 0 for t in taps)
    # Never the stem alone: no tap at the resolution of a stride-2 stem.
    assert all(t.map_size[0] < spec.input_spec.image_size // 2 for t in taps), taps


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "vgg11", "alexnet", "googlenet",
                                  "mobilenet_v3_small", "inception_v3"])
def test_named_families(name):
    spec = get_spec(name)
    with torch.device("meta"):
        model = spec.builder(num_classes=spec.num_classes)
    assert hasattr(model, "tap_points") and len(model.tap_points()) >= 3
    final = tap_macs(name)["final"]
    profile = profile_backbone(name)
    head = spec.num_features * spec.num_classes  # the final Linear, not part of forward_features
    assert final == profile.macs - head


def test_resnet18_taps():
    assert tap_dims("resnet18") == {"layer1": 64, "layer2": 128, "layer3": 256, "final": 512}


def test_gray_stem_costs_a_third():
    rgb, gray = tap_macs(LITE), tap_macs(LITE, channels=1)
    stem = 112 * 112 * 32 * 3 * 3 * 3  # lite0 at 224: 3x3/2 convolution to 32 channels
    assert all(rgb[t] - gray[t] == stem * 2 // 3 for t in rgb)


# ------------------------------------------- efficientnet_lite0, real weights


@pytest.fixture(scope="module")
def lite0():
    return edgetl.create_backbone(LITE)


@pytest.fixture(scope="module")
def spec():
    return get_spec(LITE).input_spec.replace(image_size=SIZE)


@pytest.fixture(scope="module")
def taps_graph(spec):
    return export_backbone(LITE, input_spec=spec, taps=True)


@pytest.fixture(scope="module")
def plain_graph(spec):
    return export_backbone(LITE, input_spec=spec)


@pytest.fixture(scope="module")
def chelsea(spec):
    from skimage import data

    return spec.batch([Image.fromarray(data.chelsea()), Image.fromarray(data.coffee())])


def test_lite0_tap_points(lite0):
    points = lite0.tap_points()
    assert [n for n, _ in points] == ["block2", "block4", "block7", "block10", "block14", "block15"]
    assert [p for _, p in points] == [f"_blocks.{i}" for i in lite0.stage_ends[1:]]
    assert tap_names(lite0)[-1] == "final"


def test_taps_graph_outputs(taps_graph, plain_graph, lite0, chelsea):
    assert taps_graph.taps == tap_names(lite0) and not taps_graph.has_logits
    assert taps_graph.key != plain_graph.key and plain_graph.taps == ()
    outputs = [o.name for o in onnx.load(taps_graph.onnx_path, load_external_data=False).graph.output]
    assert outputs == [f"tap:{t}" for t in taps_graph.taps[:-1]] + [FEATURES_NAME]
    got = dict(zip(outputs, make_session(taps_graph.onnx_path).run(outputs, {"input": chelsea})))

    # Torch side, with a hook of its own on one tap...
    seen = {}
    handle = lite0.get_submodule("_blocks.7").register_forward_hook(lambda m, i, o: seen.update(x=o.mean((2, 3))))
    with torch.no_grad():
        final = lite0.forward_features(torch.from_numpy(chelsea))
    handle.remove()
    np.testing.assert_allclose(got["tap:block7"], seen["x"].numpy(), atol=1e-4)
    # ...and every tap through the shared capture.
    with torch.no_grad():
        ref = tapped_features(lite0, torch.from_numpy(chelsea))
    assert list(ref) == list(taps_graph.taps)
    for tap, value in ref.items():
        name = FEATURES_NAME if tap == "final" else f"tap:{tap}"
        assert got[name].shape == (2, value.shape[1]) and got[name].dtype == np.float32
        np.testing.assert_allclose(got[name], value.numpy(), atol=1e-4, err_msg=tap)
    np.testing.assert_allclose(got[FEATURES_NAME], final.numpy(), atol=1e-4)
    # The features are the plain graph's.
    (plain,) = make_session(plain_graph.onnx_path).run([FEATURES_NAME], {"input": chelsea})
    np.testing.assert_allclose(got[FEATURES_NAME], plain, atol=1e-5)
    assert taps_graph.tap_dims() == tap_dims(LITE, SIZE)


def test_second_export_is_cached(taps_graph, spec):
    again = export_backbone(LITE, input_spec=spec, taps=True)
    assert again == taps_graph


@pytest.mark.parametrize("tap", ["block4", "block10", "final"])
def test_truncate_to_tap(taps_graph, chelsea, tap, tmp_path):
    full = onnx.load(taps_graph.onnx_path)
    cut = truncate_to_tap(taps_graph.onnx_path, tap)
    assert [o.name for o in cut.graph.output] == [FEATURES_NAME]
    path = str(tmp_path / f"{tap}.onnx")
    onnx.save(cut, path)
    name = FEATURES_NAME if tap == "final" else f"tap:{tap}"
    (want,) = make_session(taps_graph.onnx_path).run([name], {"input": chelsea})
    (got,) = make_session(path).run([FEATURES_NAME], {"input": chelsea})
    np.testing.assert_array_equal(got, want)
    if tap != "final":
        assert len(cut.graph.node) < len(full.graph.node)
        assert os.path.getsize(path) < os.path.getsize(taps_graph.onnx_path)
        # Nothing after the tap survives: no later block's weights.
        later = int(tap[5:]) + 1
        assert any(f"_blocks.{later}." in t.name for t in full.graph.initializer)
        assert not any(f"_blocks.{later}." in t.name for t in cut.graph.initializer)
    assert cut.graph.input[0].name == "input"
    with pytest.raises(KeyError):
        truncate_to_tap(taps_graph.onnx_path, "block3")


def test_truncated_files_shrink_with_depth(taps_graph, tmp_path):
    sizes = []
    for tap in ("block2", "block7", "block15", "final"):
        onnx.save(truncate_to_tap(taps_graph.onnx_path, tap), str(tmp_path / "m.onnx"))
        sizes.append(os.path.getsize(tmp_path / "m.onnx"))
    assert sizes == sorted(sizes) and len(set(sizes)) == 4


def test_tap_macs_lite0():
    macs = tap_macs(LITE)
    values = list(macs.values())
    assert all(a < b for a, b in zip(values, values[1:]))
    profile = profile_backbone(LITE)
    assert macs["final"] == profile.conv_macs  # lite0: every forward_features MAC is a convolution's
    assert profile.fc_macs == 1280 * 1000


def test_extraction_through_the_cache(taps_graph, plain_graph, tmp_path):
    from skimage import data

    paths = []
    for i, img in enumerate((data.chelsea(), data.coffee(), data.astronaut())):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(img).save(paths[-1])
    first = FeatureExtractor(taps_graph).extract(paths, progress=False)
    dims = taps_graph.tap_dims()
    assert first.features.shape == (3, sum(dims.values())) and first.num_extracted == 3
    slices = taps_graph.tap_slices()
    assert first.tap_slices == slices and list(slices) == list(taps_graph.taps)
    assert [s.stop - s.start for s in slices.values()] == list(dims.values())
    assert slices["final"].stop == first.features.shape[1]
    # Rows are the outputs concatenated in graph order.
    session = make_session(taps_graph.onnx_path)
    x = taps_graph.input_spec.batch([Image.open(p) for p in paths])
    outs = dict(zip(taps_graph.feature_outputs, session.run(taps_graph.feature_outputs, {"input": x})))
    for tap in taps_graph.taps:
        name = FEATURES_NAME if tap == "final" else f"tap:{tap}"
        np.testing.assert_allclose(first.tap(tap), outs[name], atol=1e-5, err_msg=tap)
    # The final tap is what the plain graph's extraction gives; separate cache folders.
    plain = FeatureExtractor(plain_graph).extract(paths, progress=False)
    np.testing.assert_allclose(first.tap("final"), plain.features, atol=1e-5)
    assert plain.tap_slices == {"final": slice(0, 1280)}
    np.testing.assert_array_equal(plain.tap("final"), plain.features)
    again = FeatureExtractor(taps_graph).extract(paths, progress=False)
    assert again.num_cached == 3 and again.num_extracted == 0
    np.testing.assert_array_equal(again.features, first.features)
    np.testing.assert_array_equal(again.tap("block7"), first.tap("block7"))
    with pytest.raises(KeyError):
        first.tap("layer1")


def test_gray_taps_graph(spec):
    from skimage import data

    gray_spec = gray_input_spec(spec)
    graph = export_backbone(LITE, input_spec=gray_spec, taps=True)
    rgb = export_backbone(LITE, input_spec=spec, taps=True)
    assert graph.key != rgb.key and graph.taps == rgb.taps
    grey = Image.fromarray(data.camera())
    x1 = gray_spec.batch([grey])
    x3 = spec.batch([grey.convert("RGB")])
    assert x1.shape[1] == 1
    names = graph.feature_outputs
    a = make_session(graph.onnx_path).run(names, {"input": x1})
    b = make_session(rgb.onnx_path).run(names, {"input": x3})
    for name, u, v in zip(names, a, b):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(v).max())), err_msg=name)
