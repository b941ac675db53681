"""``edgetl export RUN_DIR --format onnx``: the bundle is already ONNX; check
that each model file carries the labels (and so the InputSpec) and record it."""

from __future__ import annotations

import json
import os

from ..errors import BundleError
from ..runtime.bundle import KEY_LABELS, MODEL_FP32, MODEL_INT8, read_model_info, read_run
from .record import size_mb, update_metrics
from .registry import register_format


@register_format("onnx")
def export_onnx(run_dir: str, int8: bool = False, images=None) -> dict:
    """The bundle is already ONNX: check it carries labels and InputSpec, and record it."""
    run = read_run(run_dir)
    record = {"file": MODEL_FP32, "model_mb": round(size_mb(os.path.join(run_dir, MODEL_FP32)), 3)}
    names = [MODEL_FP32] + ([MODEL_INT8] if int8 else [])
    for name in names:
        path = os.path.join(run_dir, name)
        if not os.path.isfile(path):
            raise BundleError(f"{run_dir} has no {name}: re-run 'edgetl train'")
        try:
            embedded = json.loads(read_model_info(path).metadata.get(KEY_LABELS, "[]"))
        except ValueError:  # damaged metadata: not the labels either
            embedded = None
        if embedded != run.labels:
            raise BundleError(f"{path} metadata labels differ from labels.txt: re-run 'edgetl train'")
    if int8:
        record["file_int8"] = MODEL_INT8
        record["model_mb_int8"] = round(size_mb(os.path.join(run_dir, MODEL_INT8)), 3)
    update_metrics(run_dir, "onnx", record)
    return record
