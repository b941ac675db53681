"""The bundle's ONNX graph run in torch, op by op (what the converters take)."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgetl.errors import BundleError
from edgetl.export.onnx_ops import OPS
from edgetl.export.onnx_torch import check_supported, load_torch_model


def preprocessed(run_dir, paths):
    from edgetl.runtime import Predictor

    return Predictor(run_dir).preprocess(paths)


@pytest.mark.parametrize("name", ["model.onnx", "model.int8.onnx"])
def test_onnx_graph_in_torch_matches_onnxruntime(bundle, name):
    import torch

    run_dir, images = bundle
    x = preprocessed(run_dir, images[:8])
    module = load_torch_model(os.path.join(run_dir, name))
    with torch.no_grad():
        got = module(torch.from_numpy(x)).numpy()
    ref = ort.InferenceSession(os.path.join(run_dir, name)).run(None, {"input": x})[0]
    if name == "model.onnx":
        np.testing.assert_allclose(got, ref, atol=1e-4)
    else:  # int8 rounding may differ by one step: the same classes, close probabilities
        assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.85
        np.testing.assert_allclose(got, ref, atol=0.1)


def test_not_supported_graph(tmp_path):
    node = onnx.helper.make_node("Erf", ["input"], ["probabilities"])
    graph = onnx.helper.make_graph(
        [node], "g", [onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 3])],
        [onnx.helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, [1, 3])])
    path = tmp_path / "m.onnx"
    onnx.save(onnx.helper.make_model(graph), path)
    with pytest.raises(BundleError, match="Erf"):
        load_torch_model(str(path))
    with pytest.raises(BundleError, match="is missing"):
        load_torch_model(str(tmp_path / "gone.onnx"))


def test_every_supported_operator_has_a_handler():
    model = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node(op, [], ["y"]) for op in sorted(OPS) + ["Constant"]], "g", [], []))
    check_supported(model)
    assert {"Conv", "Gemm", "Softmax", "QuantizeLinear", "DequantizeLinear", "Gather", "GatherND", "Where"} <= set(OPS)


def test_gather_where_graph_matches_onnxruntime(tmp_path):
    """The index ops AlexNet's and VGG's adaptive pooling export as."""
    import torch
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(np.array([3, 0, 2], np.int64), "idx"),
        numpy_helper.from_array(rng.random((1, 2, 4, 3)) > 0.5, "cond"),
        numpy_helper.from_array(np.array(-1.0, np.float32), "fill"),
        numpy_helper.from_array(np.array([[[0, 1], [0, 0]], [[0, 0], [0, 1]]], np.int64), "nd"),
    ]
    nodes = [
        helper.make_node("Gather", ["input", "idx"], ["g"], axis=3),
        helper.make_node("Where", ["cond", "g", "fill"], ["w"]),
        helper.make_node("GatherND", ["w", "nd"], ["probabilities"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = str(tmp_path / "g.onnx")
    onnx.save(model, path)
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    ref = ort.InferenceSession(path).run(None, {"input": x})[0]
    with torch.no_grad():
        got = load_torch_model(path)(torch.from_numpy(x)).numpy()
    assert got.shape == ref.shape == (2, 2, 4, 3)
    np.testing.assert_array_equal(got, ref)
