"""ONNX Runtime static int8 quantization of a bundle's graph, calibrated on
its own images."""

from __future__ import annotations

import glob
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from edgetl.quantize import quantize_int8
from edgetl.runtime import Predictor


def test_int8_graph_keeps_metadata_softmax_and_answers(shared_run, tmp_path):
    fp32 = os.path.join(shared_run.run_dir, "model.onnx")
    images = sorted(glob.glob(os.path.join(shared_run.data_dir, "*", "*.png")))
    batch = Predictor(shared_run.run_dir).preprocess(images)
    out = str(tmp_path / "model.int8.onnx")
    softmax = [n.name for n in onnx.load(fp32).graph.node if n.op_type == "Softmax"]
    quantize_int8(fp32, out, [batch[i:i + 8] for i in range(0, len(batch), 8)], exclude_nodes=tuple(softmax))
    assert os.listdir(tmp_path) == ["model.int8.onnx"]  # the work folder is gone
    model = onnx.load(out)
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    # The first convolution reads raw pixels and stays float; the probabilities come from the float Softmax.
    first_conv = next(n for n in model.graph.node if n.op_type == "Conv")
    assert first_conv.input[0] == "input"
    assert next(n for n in model.graph.node if "probabilities" in n.output).op_type == "Softmax"
    assert {(p.key, p.value) for p in model.metadata_props} == {
        (p.key, p.value) for p in onnx.load(fp32, load_external_data=False).metadata_props}
    ref = ort.InferenceSession(fp32).run(None, {"input": batch})[0]
    got = ort.InferenceSession(out).run(None, {"input": batch})[0]
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.9
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-3)  # probabilities, not 1/255 steps of them


def test_calibration_runs_one_image_at_a_time_and_the_split_does_not_matter(shared_run, tmp_path, monkeypatch):
    """MinMax ranges do not depend on how the images are batched; ORT's
    calibration memory does (~100 MB per 224-px image of a run), so every
    batch is fed one image per run."""
    import onnxruntime.quantization as ortq

    from edgetl.quantize import int8

    fp32 = os.path.join(shared_run.run_dir, "features.onnx")
    images = sorted(glob.glob(os.path.join(shared_run.data_dir, "*", "*.png")))[:12]
    batch = Predictor(shared_run.run_dir).preprocess(images)
    fed = []
    real = ortq.quantize_static

    def spy(model, out, reader, **kwargs):
        class Reader:
            def get_next(self):
                item = reader.get_next()
                if item is not None:
                    fed.append(item["input"].shape[0])
                return item

        return real(model, out, Reader(), **kwargs)

    monkeypatch.setattr(ortq, "quantize_static", spy)
    one, many = str(tmp_path / "a.onnx"), str(tmp_path / "b.onnx")
    int8.quantize_int8(fp32, one, [batch])
    assert fed == [1] * len(batch)
    int8.quantize_int8(fp32, many, [batch[:5], batch[5:]])
    assert fed == [1] * 2 * len(batch)
    ranges = [{t.name: numpy_helper.to_array(t).tolist() for t in onnx.load(p).graph.initializer
               if t.name.endswith("_scale") or t.name.endswith("_zero_point")} for p in (one, many)]
    assert ranges[0] and ranges[0] == ranges[1]
