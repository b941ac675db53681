"""The bundle contract between host and device.

A RUN_DIR holds ``model.onnx`` (fp32), ``model.int8.onnx``, ``labels.txt`` and
``metrics.json``. Labels and the InputSpec are also inside each ONNX file's
``metadata_props`` so a model file alone is enough on a phone."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import onnx

from ..data.input_spec import InputSpec
from ..errors import BundleError

FORMAT_VERSION = "1"
MODEL_FP32 = "model.onnx"
MODEL_INT8 = "model.int8.onnx"
LABELS = "labels.txt"
METRICS = "metrics.json"
INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"

KEY_FORMAT = "edgetl.format_version"
KEY_LABELS = "edgetl.labels"
KEY_SPEC = "edgetl.input_spec"
KEY_BACKBONE = "edgetl.backbone"


@dataclass(frozen=True)
class Bundle:
    run_dir: str
    model_path: str
    labels: list[str]
    input_spec: InputSpec
    backbone: str


def read_labels(path: str) -> list[str]:
    with open(path, encoding="utf-8") as fh:
        return [line.rstrip("\n") for line in fh if line.rstrip("\n")]


def read_bundle(run_dir: str, int8: bool = False) -> Bundle:
    run_dir = os.fspath(run_dir)
    fix = "pass a folder written by 'edgetl train'"
    if not os.path.isdir(run_dir):
        raise BundleError(f"Run folder '{run_dir}' does not exist; {fix}")
    model_path = os.path.join(run_dir, MODEL_INT8 if int8 else MODEL_FP32)
    if not os.path.isfile(model_path):
        raise BundleError(f"'{run_dir}' is not an edgetl bundle: {os.path.basename(model_path)} is missing; {fix}")
    labels_path = os.path.join(run_dir, LABELS)
    if not os.path.isfile(labels_path):
        raise BundleError(f"'{run_dir}' is not a complete bundle: {LABELS} is missing; {fix} again")
    try:
        model = onnx.load(model_path, load_external_data=False)
    except Exception:
        raise BundleError(f"'{model_path}' is not a readable ONNX model; {fix} again") from None
    meta = {p.key: p.value for p in model.metadata_props}
    if KEY_LABELS not in meta or KEY_SPEC not in meta:
        raise BundleError(f"'{model_path}' carries no edgetl metadata (labels, input spec); {fix}")
    try:
        embedded = json.loads(meta[KEY_LABELS])
        spec = InputSpec.from_json(meta[KEY_SPEC])
    except (ValueError, TypeError, KeyError):
        raise BundleError(f"'{model_path}' has damaged edgetl metadata; {fix} again") from None
    labels = read_labels(labels_path)
    if labels != embedded:
        raise BundleError(
            f"{LABELS} in '{run_dir}' ({len(labels)} labels) does not match the model's own labels "
            f"({len(embedded)}); restore {LABELS} or {fix} again"
        )
    out = [o for o in model.graph.output if o.name == OUTPUT_NAME]
    dims = out[0].type.tensor_type.shape.dim if out else []
    if not out or len(dims) != 2 or (dims[1].dim_value and dims[1].dim_value != len(labels)):
        raise BundleError(f"'{model_path}' does not output {len(labels)} class probabilities; {fix} again")
    return Bundle(run_dir, model_path, labels, spec, meta.get(KEY_BACKBONE, "unknown"))
