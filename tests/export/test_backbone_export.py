"""export_module: the TorchScript exporter for every family it can convert
(one graph per input size, batch dynamic), torch.export for the rest; the
graph computes what eager torch does, is made of operators the TFLite/Core ML
export translates, keeps the layers' names, and prints nothing."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgetl.export.backbone_onnx import export_module, exportable
from edgetl.export.onnx_torch import check_supported
from edgetl.runtime.session import make_session
from edgetl.zoo import create_tiny, get_spec, list_backbones
from edgetl.zoo._taps import tapped_features

# A tiny model of every family the TorchScript exporter converts (AlexNet and
# VGG pool adaptively to a side that does not divide their map at small sizes:
# those take torch.export, below).
FAMILIES = ["efficientnet_lite0", "mobilenet_v2", "mobilenet_v3_small", "resnet18", "googlenet"]


def _eager(model, x: np.ndarray, taps: bool) -> list[np.ndarray]:
    with torch.no_grad():
        xt = torch.from_numpy(x)
        if taps:
            return [t.numpy() for t in tapped_features(model, xt).values()]
        feats = model.forward_features(xt)
        return [feats.numpy()] + ([model.forward_head(feats).numpy()] if model.num_classes else [])


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("size", [40, 72])
def test_graph_matches_eager_torch_at_any_batch(name, size, tmp_path, capfd):
    assert name in list_backbones()
    spec = get_spec(name)
    size = max(size, spec.min_image_size)
    model = create_tiny(name)
    wrapper, outputs = exportable(model, taps=True)
    path = export_module(wrapper, spec.input_spec.replace(image_size=size), str(tmp_path / "m.onnx"), outputs)
    assert capfd.readouterr() == ("", "")  # nothing in the user's console
    graph = onnx.load(path)
    onnx.checker.check_model(graph, full_check=True)
    check_supported(graph)  # the tracer's run-time pads are folded into the convolutions
    assert not any(t.name.startswith("onnx::") for t in graph.graph.initializer)  # the layers' own names
    session = make_session(path)
    for batch in (1, 3):  # traced with 2: the batch stays dynamic
        x = np.random.default_rng(batch).normal(size=(batch, 3, size, size)).astype(np.float32)
        for got, want in zip(session.run(outputs, {"input": x}), _eager(model, x, taps=True)):
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * max(1.0, float(np.abs(want).max())))


class _Unconvertible(nn.Module):
    """Adaptive pooling to a side that does not divide the map: the
    TorchScript exporter refuses it (and prints the graph from C++)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2)
        self.pool = nn.AdaptiveAvgPool2d((3, 3))

    def forward(self, x):
        y = self.pool(self.conv(x)).flatten(1)
        return (y,)


def test_what_tracing_cannot_convert_goes_through_torch_export(tmp_path, capfd, caplog):
    caplog.set_level(logging.DEBUG, logger="edgetl.export.backbone_onnx")
    torch.manual_seed(0)
    module = _Unconvertible().eval()
    spec = get_spec("efficientnet_lite0").input_spec.replace(image_size=22)  # a 10x10 map pooled to 3x3
    path = export_module(module, spec, str(tmp_path / "m.onnx"), ["features"])
    assert capfd.readouterr() == ("", "")
    assert "using torch.export" in caplog.text
    x = np.random.default_rng(0).normal(size=(3, 3, 22, 22)).astype(np.float32)
    (got,) = make_session(path).run(["features"], {"input": x})
    with torch.no_grad():
        (want,) = module(torch.from_numpy(x))
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-5)


def test_plain_graph_has_features_and_logits(tmp_path):
    model = create_tiny("resnet18")
    spec = get_spec("resnet18").input_spec.replace(image_size=48)
    threads = torch.get_num_threads()
    wrapper, outputs = exportable(model)
    path = export_module(wrapper, spec, str(tmp_path / "m.onnx"), outputs)
    assert torch.get_num_threads() == threads  # the export's one thread is given back
    assert [o.name for o in onnx.load(path).graph.output] == ["features", "logits"]
    x = np.random.default_rng(0).normal(size=(2, 3, 48, 48)).astype(np.float32)
    for got, want in zip(make_session(path).run(outputs, {"input": x}), _eager(model, x, taps=False)):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * max(1.0, float(np.abs(want).max())))
