"""The bundle contract between host and device.

A RUN_DIR holds ``model.onnx`` (fp32), ``model.int8.onnx``, ``labels.txt`` and
``metrics.json``. Labels and the InputSpec are also inside each ONNX file's
``metadata_props`` so a model file alone is enough on a phone.

For learning on the device it also holds the same model in three parts:
``features.onnx`` / ``features.int8.onnx`` (the frozen feature model, output
``features``), ``head.safetensors`` (``weight`` C x D and ``bias`` C acting on
standardised features, the standardisation ``mean`` and ``scale``, and
``exemplar_features`` / ``exemplar_labels``: a few training features per class
so old classes are rehearsed when new ones are learned) and ``train_step.onnx``
(one gradient step of the head; see ``edgetl.export.train_step``)."""

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
FEATURES_FP32 = "features.onnx"
FEATURES_INT8 = "features.int8.onnx"
HEAD = "head.safetensors"
TRAIN_STEP = "train_step.onnx"
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


def _all_tensors(graph: onnx.GraphProto):
    """Every TensorProto of a graph: initializers, sparse ones, and constants
    inside node attributes, subgraphs (If / Loop bodies) included."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _all_tensors(attr.g)
            for sub in attr.graphs:
                yield from _all_tensors(sub)


def check_external_data(model: onnx.ModelProto, model_path: str) -> None:
    """Refuse tensors stored outside the model's own folder.

    An ONNX file may keep its weights in side files named by a path; a model
    received from someone else could name ``../../home/you/.ssh/id_rsa`` or
    ``/etc/shadow`` and have it read as weights (ONNX's path-traversal CVEs).
    edgetl never writes external data; a side file is accepted only when it
    resolves, symlinks followed, inside the model's folder."""
    folder = os.path.realpath(os.path.dirname(os.path.abspath(model_path)))
    for tensor in _all_tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = os.path.realpath(os.path.join(folder, location))
        if (not location or os.path.isabs(location) or ".." in location.replace("\\", "/").split("/")
                or os.path.commonpath([folder, target]) != folder):
            raise BundleError(
                f"'{model_path}' reads tensor '{tensor.name}' from '{location}', outside its own folder; refused "
                f"(a model must not read other files): re-export it with its weights inside the .onnx file"
            )


def _interrupted_hint(run_dir: str) -> str:
    """A run killed between moving the old bundle aside and moving the new one
    in leaves the old one as RUN_DIR.old-PID: say so."""
    parent, base = os.path.split(os.path.abspath(run_dir))
    try:
        old = sorted(n for n in os.listdir(parent) if n.startswith(f"{base}.old-"))
    except OSError:
        return ""
    return f" (an interrupted 'edgetl train' left the previous bundle as '{old[-1]}': rename it back)" if old else ""


def read_bundle(run_dir: str, int8: bool = False) -> Bundle:
    run_dir = os.fspath(run_dir)
    fix = "pass a folder written by 'edgetl train'"
    if not os.path.isdir(run_dir):
        raise BundleError(f"Run folder '{run_dir}' does not exist{_interrupted_hint(run_dir)}; {fix}")
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
    check_external_data(model, model_path)
    meta = {p.key: p.value for p in model.metadata_props}
    if KEY_LABELS not in meta or KEY_SPEC not in meta:
        raise BundleError(f"'{model_path}' carries no edgetl metadata (labels, input spec); {fix}")
    try:
        embedded = json.loads(meta[KEY_LABELS])
        spec = InputSpec.from_json(meta[KEY_SPEC])
        if not (isinstance(embedded, list) and embedded and all(isinstance(x, str) for x in embedded)):
            raise TypeError("labels are not a list of names")  # found by bench/fuzz.py: "null"
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        raise BundleError(f"'{model_path}' has damaged edgetl metadata; {fix} again") from None
    try:
        labels = read_labels(labels_path)
    except (UnicodeDecodeError, OSError):
        raise BundleError(f"{LABELS} in '{run_dir}' is not readable UTF-8 text; restore it or {fix} again") from None
    if labels != embedded:
        raise BundleError(
            f"{LABELS} in '{run_dir}' ({len(labels)} labels) does not match the model's own labels "
            f"({len(embedded)}); restore {LABELS} or {fix} again"
        )
    out = [o for o in model.graph.output if o.name == OUTPUT_NAME]
    dims = out[0].type.tensor_type.shape.dim if out else []
    if not out or len(dims) != 2 or (dims[1].dim_value and dims[1].dim_value != len(labels)):
        raise BundleError(f"'{model_path}' does not output {len(labels)} class probabilities; {fix} again")
    inputs = [i for i in model.graph.input if i.name == INPUT_NAME]
    dims = [d.dim_value or None for d in inputs[0].type.tensor_type.shape.dim] if inputs else []
    expected = [spec.num_channels, spec.image_size, spec.image_size]
    # The spec decides how big each preprocessed image is: it must be the size
    # the graph takes, or a damaged spec could ask for any amount of memory.
    if len(dims) != 4 or dims[1:] != expected:
        raise BundleError(f"'{model_path}' does not take '{INPUT_NAME}' images of {expected} (N x C x H x W) as its "
                          f"input spec says; {fix} again")
    return Bundle(run_dir, model_path, labels, spec, meta.get(KEY_BACKBONE, "unknown"))


@dataclass(frozen=True)
class DeviceFiles:
    """What learning on the device needs from a bundle."""

    bundle: Bundle  # labels and InputSpec
    features_path: str  # features.onnx or features.int8.onnx
    train_step_path: str
    head: dict  # weight, bias, mean, scale, exemplar_features, exemplar_labels (numpy)
    l2: float


HEAD_ARRAYS = ("weight", "bias", "mean", "scale", "exemplar_features", "exemplar_labels")


def read_device_files(run_dir: str, int8: bool = False) -> DeviceFiles:
    from safetensors import SafetensorError, safe_open

    bundle = read_bundle(run_dir, int8=int8)
    again = "train it again with this edgetl ('edgetl train') to add the on-device learning files"
    paths = {name: os.path.join(bundle.run_dir, name) for name in
             (FEATURES_INT8 if int8 else FEATURES_FP32, HEAD, TRAIN_STEP)}
    for name, path in paths.items():
        if not os.path.isfile(path):
            raise BundleError(f"'{bundle.run_dir}' has no {name}; {again}")
        if name != HEAD:
            try:
                check_external_data(onnx.load(path, load_external_data=False), path)
            except BundleError:
                raise
            except Exception:
                raise BundleError(f"'{path}' is not a readable ONNX model; {again}") from None
    try:
        with safe_open(paths[HEAD], framework="numpy") as fh:
            head = {key: fh.get_tensor(key) for key in fh.keys()}
            meta = fh.metadata() or {}
        l2 = float(meta.get("l2", 1e-4))
    except (SafetensorError, OSError, ValueError):
        raise BundleError(f"'{paths[HEAD]}' is not a readable safetensors file; {again}") from None
    missing = [k for k in HEAD_ARRAYS if k not in head]
    shape = head["weight"].shape if "weight" in head else ()
    if (missing or len(shape) != 2 or shape[0] != len(bundle.labels) or head["mean"].shape != shape[1:]
            or head["exemplar_features"].shape[1:] != shape[1:]):
        raise BundleError(f"'{paths[HEAD]}' does not match the bundle's {len(bundle.labels)} labels; {again}")
    return DeviceFiles(bundle, paths[FEATURES_INT8 if int8 else FEATURES_FP32], paths[TRAIN_STEP], head, l2)
