"""ONNX Runtime static int8 quantization (QDQ, per-channel), calibrated on
the user's own training images."""

from __future__ import annotations

import logging
import os
import tempfile

import onnx

log = logging.getLogger(__name__)


class _Images:
    """CalibrationDataReader: the calibration batches, one image per run.

    MinMax ranges are the same whatever the split, but the memory is not:
    ORT's calibration session (the model with a ReduceMin/ReduceMax on every
    tensor, optimisations off) peaked 100 MB higher per image of a batch
    (EfficientNet-Lite0 at 224 px, features cut at "final": +155 MB with one
    image, +1.7 GB with 16; 9.4 s either way for 128 images, measured here)."""

    def __init__(self, input_name: str, batches):
        self._items = ({input_name: batch[i : i + 1]} for batch in batches for i in range(len(batch)))

    def get_next(self):
        return next(self._items, None)


def quantize_int8(fp32_path: str, out_path: str, calibration_batches, input_name: str = "input",
                  exclude_nodes: tuple[str, ...] = ()) -> None:
    """Write ``out_path``: activations uint8, weights int8 per channel, QDQ.

    ``exclude_nodes`` stay float (the classifier's Softmax: its probabilities
    would be rounded to 1/255 steps). Two choices measured on EfficientNet-Lite0
    (digits at 96 px, top-1 agreement with fp32 on 450 images, this AMD AVX2
    machine): plain U8S8 per-channel 62 %; the layer reading raw pixels kept in
    float 96 %. Weights use 7 bits (``reduce_range``) because x86 CPUs without
    VNNI saturate 8-bit products (ORT's documented advice); that costs nothing
    measurable here and keeps one bundle right on every CPU."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    folder = os.path.dirname(os.path.abspath(out_path))
    with tempfile.TemporaryDirectory(dir=folder, prefix=".quant-") as work:
        prepared = os.path.join(work, "prepared.onnx")
        # Shape inference + graph optimisation first, as ORT's docs advise:
        # BatchNorm folded into Conv gets one scale per channel, not two.
        # ONNX's shape inference is enough (only the batch is dynamic); the
        # symbolic one imports sympy and, through onnxruntime.tools, torch
        # (~1.5 s, ~220 MB), for the same agreement on the runs measured.
        quant_pre_process(fp32_path, prepared, skip_symbolic_shape=True)
        model = onnx.load(prepared)
        # The first layers see raw pixels (a zero point mid-range, values up
        # to 255): the worst case for int8 saturation, and cheap in float.
        graph_inputs = {i.name for i in model.graph.input}
        exclude = list(exclude_nodes) + [
            n.name for n in model.graph.node if n.op_type == "Conv" and n.input[0] in graph_inputs
        ]
        meta = [(p.key, p.value) for p in onnx.load(fp32_path, load_external_data=False).metadata_props]
        tmp_out = os.path.join(work, "int8.onnx")
        quantize_static(
            model,
            tmp_out,
            _Images(input_name, calibration_batches),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=exclude,
            reduce_range=True,
            extra_options={"CalibTensorRangeSymmetric": False},
        )
        quantized = onnx.load(tmp_out)
        del quantized.metadata_props[:]
        for key, value in meta:
            quantized.metadata_props.add(key=key, value=value)
        onnx.save(quantized, out_path)
