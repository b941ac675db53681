"""``edgetl export --format tflite``: both .tflite files executed with the
LiteRT interpreter against ONNX Runtime on real images."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgetl.export import export_model
from edgetl.export.tflite import run_tflite


def _batch(run_dir, paths):
    from edgetl.runtime import Predictor

    return Predictor(run_dir).preprocess(paths)


@pytest.mark.slow  # two TFLite conversions: the full suite
def test_tflite_fp32_and_int8_run_and_agree_with_onnx(bundle):
    run_dir, images = bundle
    record = export_model(run_dir, "tflite", int8=True, images=images)
    assert record["num_check_images"] == len(images)
    assert record["agreement"] >= 0.99
    assert record["agreement_int8"] >= 0.97
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    assert metrics["exports"]["tflite"]["agreement"] == record["agreement"]
    assert 0.0 <= metrics["exports"]["tflite"]["agreement_int8"] <= 1.0
    assert metrics["val_accuracy"] > 0  # the rest of metrics.json is kept

    # Independently of the exporter: run both .tflite files here and compare
    # probabilities with ONNX Runtime on the same preprocessed images.
    x = _batch(run_dir, images)
    ref = ort.InferenceSession(os.path.join(run_dir, "model.onnx")).run(None, {"input": x})[0]
    got = run_tflite(os.path.join(run_dir, "model.tflite"), x)
    np.testing.assert_allclose(got, ref, atol=1e-3)
    ref8 = ort.InferenceSession(os.path.join(run_dir, "model.int8.onnx")).run(None, {"input": x})[0]
    got8 = run_tflite(os.path.join(run_dir, "model.int8.tflite"), x)
    assert (got8.argmax(1) == ref8.argmax(1)).mean() >= 0.97

    # The int8 file really holds int8 kernels, not float ones.
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    num_conv = sum(n.op_type == "Conv" for n in onnx.load(os.path.join(run_dir, "model.onnx")).graph.node)
    interp = Interpreter(model_path=os.path.join(run_dir, "model.int8.tflite"),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    int8_tensors = [t for t in interp.get_tensor_details() if t["dtype"] == np.int8]
    assert num_conv > 0 and len(int8_tensors) >= 2 * num_conv  # int8 weights and outputs per convolution
    assert interp.get_input_details()[0]["shape"].tolist() == [1, 32, 32, 3]
    assert os.path.getsize(os.path.join(run_dir, "model.int8.tflite")) < os.path.getsize(
        os.path.join(run_dir, "model.tflite"))

    sidecar = json.load(open(os.path.join(run_dir, "model.tflite.json")))
    labels = open(os.path.join(run_dir, "labels.txt")).read().split()
    assert sidecar["labels"] == labels == ["bars", "checker", "disc"]
    assert sidecar["input"]["layout"] == "NHWC"
    assert sidecar["input_spec"] == metrics["input_spec"]
    assert not [f for f in os.listdir(run_dir) if ".tmp" in f]
