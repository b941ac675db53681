"""``edgetl export RUN_DIR --format tflite [--int8]``: model.tflite (and
model.int8.tflite) + model.tflite.json, through litert-torch (torch ->
LiteRT flatbuffer, no TensorFlow).

The bundle's own ONNX graph is run in torch (``onnx_torch``) and converted,
so the .tflite computes what model.onnx computes; int8 comes from
model.int8.onnx's QDQ graph, i.e. with the scales ONNX Runtime calibrated on
the training images. Each file is checked by running it with the LiteRT
interpreter (ai-edge-litert) on validation images against ONNX Runtime."""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from .._files import atomic_path, write_json
from ..errors import BundleError
from ..runtime.bundle import LABELS, MODEL_FP32, MODEL_INT8, RunFolder, read_run
from .agreement import check_images, onnx_proba, preprocess
from .extras import native_quiet, need, quiet, version_of
from .record import size_mb, update_metrics
from .registry import register_format

log = logging.getLogger(__name__)

TFLITE_FP32, TFLITE_INT8 = "model.tflite", "model.int8.tflite"
TFLITE_JSON = "model.tflite.json"


def _to_tflite(onnx_path: str, out_path: str, image_size: int, channels: int, int8: bool) -> None:
    import torch

    litert_torch = need("litert_torch", "tflite")
    from .onnx_torch import load_torch_model

    module = load_torch_model(onnx_path)
    # Phones hand images over as NHWC; the model takes NHWC and transposes inside.
    nhwc = litert_torch.to_channel_last_io(module, args=[0])
    sample = (torch.zeros(1, image_size, image_size, channels),)
    kwargs = {}
    if int8:
        from litert_torch.quantize import pt2e_quantizer, quant_config

        # The graph already carries ONNX Runtime's Q/DQ pairs; a static PT2E
        # config only tells the converter to fuse them into int8 kernels.
        quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
            pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))
        kwargs["quant_config"] = quant_config.QuantConfig(pt2e_quantizer=quantizer)
    with quiet(), native_quiet():
        edge = litert_torch.convert(nhwc.eval(), sample, **kwargs)
        with atomic_path(out_path) as tmp:
            edge.export(tmp)


def run_tflite(tflite_path: str, batch_nchw: np.ndarray) -> np.ndarray:
    """Probabilities of a .tflite on an NCHW float32 batch, one image at a time
    (the LiteRT interpreter, as on the phone)."""
    Interpreter = need("ai_edge_litert.interpreter", "tflite").Interpreter
    with native_quiet():
        interp = Interpreter(model_path=tflite_path)
        interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    rows = []
    for x in batch_nchw:
        interp.set_tensor(inp["index"], np.ascontiguousarray(x.transpose(1, 2, 0)[None], np.float32))
        interp.invoke()
        rows.append(interp.get_tensor(out["index"])[0].copy())
    return np.stack(rows)


def _sidecar(run: RunFolder, record: dict, int8: bool) -> dict:
    """model.tflite.json: what an app needs to feed the model and read its output."""
    spec = run.input_spec
    return {
        "model": TFLITE_FP32, "model_int8": TFLITE_INT8 if int8 else None, "labels_file": LABELS,
        "labels": run.labels, "input": record["input"], "output": {"name": "probabilities", "shape": [1, len(run.labels)]},
        "input_spec": spec,
        "preprocessing": "RGB (or grey for channels 'L'), resize the shorter side to image_size / crop_fraction, "
                         "centre-crop image_size x image_size, x = (pixel - mean) / std per channel, NHWC float32",
        "normalization": {"mean": spec["mean"], "std": spec["std"]},
    }


def _convert_and_check(run_dir: str, variant: tuple, batch: np.ndarray, ref_fp32: np.ndarray, record: dict,
                       size: int, channels: int) -> None:
    """Convert one ONNX file, run the .tflite on the check images, record agreement and size."""
    q, onnx_name, out_name, key = variant
    t = time.perf_counter()
    log.info("converting %s to %s", onnx_name, out_name)
    out_path = os.path.join(run_dir, out_name)
    _to_tflite(os.path.join(run_dir, onnx_name), out_path, size, channels, q)
    record[f"convert_s{'_int8' if q else ''}"] = round(time.perf_counter() - t, 2)
    log.info("running %s with the LiteRT interpreter on %d images", out_name, len(batch))
    got = run_tflite(out_path, batch).argmax(axis=1)
    ref = onnx_proba(os.path.join(run_dir, onnx_name), batch).argmax(axis=1) if q else ref_fp32.argmax(axis=1)
    record[key] = float((got == ref).mean())
    record[f"model_mb{'_int8' if q else ''}"] = round(size_mb(out_path), 3)
    if q:
        record["file_int8"] = out_name
        # The same int8 TFLite against the fp32 ONNX model: what int8 costs.
        record["agreement_int8_vs_fp32"] = float((got == ref_fp32.argmax(axis=1)).mean())


@register_format("tflite")
def export_tflite(run_dir: str, int8: bool = False, images=None) -> dict:
    """model.tflite (and model.int8.tflite with ``int8``) + model.tflite.json;
    returns the ``exports.tflite`` record written to metrics.json."""
    run = read_run(run_dir)
    need("litert_torch", "tflite")
    need("ai_edge_litert.interpreter", "tflite")
    spec = run.input_spec
    size, channels = int(spec["image_size"]), 1 if spec.get("channels") == "L" else 3
    paths = check_images(run_dir, images)
    batch = preprocess(run_dir, paths)
    record = {"converter": version_of("litert-torch"), "interpreter": version_of("ai-edge-litert"),
              "num_check_images": len(paths), "file": TFLITE_FP32,
              "input": {"name": "input", "shape": [1, size, size, channels], "layout": "NHWC", "dtype": "float32"}}
    variants = [(False, MODEL_FP32, TFLITE_FP32, "agreement")]
    if int8:
        if not os.path.isfile(os.path.join(run_dir, MODEL_INT8)):
            raise BundleError(f"{run_dir} has no {MODEL_INT8}: re-run 'edgetl train' to export int8 models")
        variants.append((True, MODEL_INT8, TFLITE_INT8, "agreement_int8"))
    ref_fp32 = onnx_proba(os.path.join(run_dir, MODEL_FP32), batch)
    for variant in variants:
        _convert_and_check(run_dir, variant, batch, ref_fp32, record, size, channels)
    write_json(os.path.join(run_dir, TFLITE_JSON), _sidecar(run, record, int8))
    record["sidecar"] = TFLITE_JSON
    update_metrics(run_dir, "tflite", record)
    return record
