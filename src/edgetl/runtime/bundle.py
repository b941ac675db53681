"""The bundle contract between host and device.

A RUN_DIR holds ``model.onnx`` (fp32), ``model.int8.onnx``, ``labels.txt`` and
``metrics.json``. Labels and the InputSpec are also inside each ONNX file's
``metadata_props`` so a model file alone is enough on a phone.

For learning on the device it also holds the same model in three parts:
``features.onnx`` / ``features.int8.onnx`` (the frozen feature model, output
``features``), ``head.safetensors`` (``weight`` C x D and ``bias`` C acting on
standardised features, the standardisation ``mean`` and ``scale``, and
``exemplar_features`` / ``exemplar_labels``: a few training features per class
so old classes are rehearsed when new ones are learned; optionally
``exemplar_optimism``, how much higher the head's best logit is on each
exemplar than out of fold) and ``train_step.onnx``
(one gradient step of the head; see ``edgetl.export.train_step``).

This module is the one reader of a run folder: :func:`read_bundle` and
:func:`read_device_files` for the device (every file checked against the
others; ONNX files read with ``onnx_info``, no onnx package), and
:func:`read_run` / :func:`read_metrics` for the host's export and report."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np

from ..data.input_spec import InputSpec
from ..errors import BundleError
from .onnx_info import OnnxInfo, WireError, read_onnx_info

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


def file_sha256(path: str) -> str:
    """Hex sha256 of a file, read in 1 MB blocks: the identity of a feature
    model that a learning state (Python's or the web app's) was made with."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_labels(path: str) -> list[str]:
    with open(path, encoding="utf-8") as fh:
        return [line.rstrip("\n") for line in fh if line.rstrip("\n")]


def check_external_data(info: OnnxInfo, model_path: str) -> None:
    """Refuse tensors stored outside the model's own folder.

    An ONNX file may keep its weights in side files named by a path; a model
    received from someone else could name ``../../home/you/.ssh/id_rsa`` or
    ``/etc/shadow`` and have it read as weights (ONNX's path-traversal CVEs).
    edgetl never writes external data; a side file is accepted only when it
    resolves, symlinks followed, inside the model's folder. (Recent ONNX
    Runtime releases refuse such paths too; this check does not depend on it.)"""
    folder = os.path.realpath(os.path.dirname(os.path.abspath(model_path)))
    for name, locations in info.external:
        for location in locations or [""]:
            target = os.path.realpath(os.path.join(folder, location))
            if (not location or os.path.isabs(location) or ".." in location.replace("\\", "/").split("/")
                    or os.path.commonpath([folder, target]) != folder):
                raise BundleError(
                    f"'{model_path}' reads tensor '{name}' from '{location}', outside its own folder; refused "
                    f"(a model must not read other files): re-export it with its weights inside the .onnx file"
                )


def read_model_info(path: str, again: str = "re-run 'edgetl train'") -> OnnxInfo:
    """Metadata, inputs and outputs of the ONNX file at ``path``, read
    without loading it; BundleError (ending with ``again``: what to do) if it
    is not readable ONNX, or if it names side files outside its folder."""
    try:
        info = read_onnx_info(path)
    except (OSError, WireError, RecursionError):
        raise BundleError(f"'{path}' is not a readable ONNX model; {again}") from None
    check_external_data(info, path)
    return info


def _interrupted_hint(run_dir: str) -> str:
    """A run killed between moving the old bundle aside and moving the new one
    in leaves the old one as RUN_DIR.old-PID: say so."""
    parent, base = os.path.split(os.path.abspath(run_dir))
    try:
        old = sorted(n for n in os.listdir(parent) if n.startswith(f"{base}.old-"))
    except OSError:
        return ""
    return f" (an interrupted 'edgetl train' left the previous bundle as '{old[-1]}': rename it back)" if old else ""


def _embedded(meta: dict[str, str], model_path: str, fix: str) -> tuple[list[str], InputSpec]:
    """The labels and InputSpec a model carries in its metadata."""
    if KEY_LABELS not in meta or KEY_SPEC not in meta:
        raise BundleError(f"'{model_path}' carries no edgetl metadata (labels, input spec); {fix}")
    try:
        for key in (KEY_LABELS, KEY_SPEC):
            meta[key].encode("utf-8")  # text that is not UTF-8 (read as surrogates): damaged
        embedded = json.loads(meta[KEY_LABELS])
        spec = InputSpec.from_json(meta[KEY_SPEC])
        if not (isinstance(embedded, list) and embedded and all(isinstance(x, str) for x in embedded)):
            raise TypeError("labels are not a list of names")  # found by bench/fuzz.py: "null"
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        raise BundleError(f"'{model_path}' has damaged edgetl metadata; {fix} again") from None
    return embedded, spec


def _check_io(info: OnnxInfo, model_path: str, labels: list[str], spec: InputSpec, fix: str) -> None:
    """The graph outputs one probability per label and takes the images the spec makes."""
    out = [dims for name, dims in info.outputs if name == OUTPUT_NAME]
    dims = out[0] if out else []
    if not out or len(dims) != 2 or (dims[1] and dims[1] != len(labels)):
        raise BundleError(f"'{model_path}' does not output {len(labels)} class probabilities; {fix} again")
    _check_input(info, model_path, spec, f"{fix} again")


def _check_input(info: OnnxInfo, model_path: str, spec: InputSpec, fix: str) -> None:
    """The graph takes the images the spec makes (N x C x H x W)."""
    inputs = [dims for name, dims in info.inputs if name == INPUT_NAME]
    dims = [d or None for d in inputs[0]] if inputs else []
    expected = [spec.num_channels, spec.image_size, spec.image_size]
    # The spec decides how big each preprocessed image is: it must be the size
    # the graph takes, or a damaged spec could ask for any amount of memory.
    if len(dims) != 4 or dims[1:] != expected:
        raise BundleError(f"'{model_path}' does not take '{INPUT_NAME}' images of {expected} (N x C x H x W) as its "
                          f"input spec says; {fix}")


def read_bundle(run_dir: str, int8: bool = False) -> Bundle:
    """The bundle in ``run_dir`` for prediction, every part checked against
    the others (labels.txt, the model's metadata, its input and output
    shapes, its side files); BundleError naming what is wrong otherwise."""
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
    info = read_model_info(model_path, f"{fix} again")
    embedded, spec = _embedded(info.metadata, model_path, fix)
    try:
        labels = read_labels(labels_path)
    except (UnicodeDecodeError, OSError):
        raise BundleError(f"{LABELS} in '{run_dir}' is not readable UTF-8 text; restore it or {fix} again") from None
    if labels != embedded:
        raise BundleError(
            f"{LABELS} in '{run_dir}' ({len(labels)} labels) does not match the model's own labels "
            f"({len(embedded)}); restore {LABELS} or {fix} again"
        )
    _check_io(info, model_path, labels, spec, fix)
    return Bundle(run_dir, model_path, labels, spec, info.metadata.get(KEY_BACKBONE, "unknown"))


@dataclass(frozen=True)
class DeviceFiles:
    """What learning on the device needs from a bundle."""

    bundle: Bundle  # labels and InputSpec
    features_path: str  # features.onnx or features.int8.onnx
    train_step_path: str
    head: dict  # weight, bias, mean, scale, exemplar_features, exemplar_labels (+ exemplar_optimism) (numpy)
    l2: float


HEAD_ARRAYS = ("weight", "bias", "mean", "scale", "exemplar_features", "exemplar_labels")
FEATURES_OUTPUT = "features"


def check_finite(arrays: dict, path: str, fix: str) -> None:
    """Refuse arrays holding NaN or infinity: one such weight turns every
    prediction into NaN (printed as label 0), and training only spreads it."""
    bad = [key for key, value in arrays.items()
           if value.dtype.kind in "fc" and value.size and not np.isfinite(value).all()]
    if bad:
        raise BundleError(f"'{path}' holds values that are not finite numbers (NaN or infinity) in "
                          f"{', '.join(repr(k) for k in bad)}; {fix}")


def _read_head(path: str, num_labels: int, again: str) -> tuple[dict, float]:
    """head.safetensors: its arrays, checked against the labels and each other, and its l2."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="numpy") as fh:
            head = {key: fh.get_tensor(key) for key in fh.keys()}
            meta = fh.metadata() or {}
        l2 = float(meta.get("l2", 1e-4))
    except (SafetensorError, OSError, ValueError, TypeError):
        raise BundleError(f"'{path}' is not a readable safetensors file; {again}") from None
    mismatch = BundleError(f"'{path}' does not match the bundle's {num_labels} labels; {again}")
    if any(k not in head for k in HEAD_ARRAYS):
        raise mismatch
    shape, ex_labels = head["weight"].shape, head["exemplar_labels"]
    if (len(shape) != 2 or shape[0] != num_labels or head["bias"].shape != shape[:1]
            or head["mean"].shape != shape[1:] or head["scale"].shape != shape[1:]
            or head["exemplar_features"].ndim != 2 or head["exemplar_features"].shape[1:] != shape[1:]
            or ex_labels.shape != head["exemplar_features"].shape[:1] or ex_labels.dtype.kind not in "iu"
            or (ex_labels.size and not (0 <= ex_labels.min() and ex_labels.max() < num_labels))
            or ("exemplar_optimism" in head and head["exemplar_optimism"].shape != ex_labels.shape)):
        raise mismatch
    check_finite(head, path, again)
    if (head["scale"] <= 0).any():  # features divided by it: infinity
        raise BundleError(f"'{path}' holds a standardisation 'scale' of 0 or less; {again}")
    if not np.isfinite(l2) or l2 < 0:
        raise BundleError(f"'{path}' records an l2 penalty of {l2}, not a finite number >= 0; {again}")
    return head, l2


def _check_parts(features: OnnxInfo, features_path: str, train_step: OnnxInfo, train_step_path: str,
                 spec: InputSpec, dim: int, again: str) -> None:
    """The feature model takes the bundle's images and gives the features the
    head reads; the train step trains a head of that width."""
    _check_input(features, features_path, spec, again)
    out = [dims for name, dims in features.outputs if name == FEATURES_OUTPUT]
    if not out or len(out[0]) != 2 or out[0][1] not in (0, dim):
        raise BundleError(f"'{features_path}' does not output '{FEATURES_OUTPUT}' of {dim} values per image as "
                          f"{HEAD} expects; {again}")
    weight = [dims for name, dims in train_step.inputs if name == "weight"]
    if not weight or len(weight[0]) != 2 or weight[0][1] not in (0, dim):
        raise BundleError(f"'{train_step_path}' does not train a head on {dim} features as {HEAD} holds; {again}")


def read_device_files(run_dir: str, int8: bool = False) -> DeviceFiles:
    """The bundle plus its on-device learning files (features model, head,
    train step), each checked against the others and the head's numbers
    checked finite; BundleError naming the file otherwise."""
    bundle = read_bundle(run_dir, int8=int8)
    again = "train it again with this edgetl ('edgetl train') to add the on-device learning files"
    features_name = FEATURES_INT8 if int8 else FEATURES_FP32
    paths = {name: os.path.join(bundle.run_dir, name) for name in (features_name, HEAD, TRAIN_STEP)}
    infos = {}
    for name, path in paths.items():
        if not os.path.isfile(path):
            raise BundleError(f"'{bundle.run_dir}' has no {name}; {again}")
        if name != HEAD:
            infos[name] = read_model_info(path, again)
    head, l2 = _read_head(paths[HEAD], len(bundle.labels), "train the bundle again ('edgetl train')")
    _check_parts(infos[features_name], paths[features_name], infos[TRAIN_STEP], paths[TRAIN_STEP],
                 bundle.input_spec, int(head["weight"].shape[1]), "train the bundle again ('edgetl train')")
    return DeviceFiles(bundle, paths[features_name], paths[TRAIN_STEP], head, l2)


# ---------------------------------------------------------------- the host's view: metrics.json


@dataclass(frozen=True)
class RunFolder:
    """What the host tools (export, report, model card) read from a run folder."""

    run_dir: str
    labels: list[str]
    metrics: dict  # metrics.json as written by 'edgetl train' (and 'edgetl export')
    input_spec: dict | None  # the InputSpec as a dict: metrics.json's, else the model's own


_TRAIN_FIX = "pass the RUN_DIR written by 'edgetl train'"


def read_metrics(run_dir: str) -> dict:
    """RUN_DIR/metrics.json (BundleError if missing or not JSON)."""
    path = os.path.join(run_dir, METRICS)
    if not os.path.isfile(path):
        raise BundleError(f"{run_dir} has no {METRICS}: {_TRAIN_FIX}")
    with open(path, encoding="utf-8") as fh:
        try:
            return json.load(fh)
        except json.JSONDecodeError as exc:
            raise BundleError(f"{path} is not valid JSON ({exc}); re-run 'edgetl train'") from exc


def _run_labels(run_dir: str, fallback) -> list[str]:
    """labels.txt, else ``fallback`` (metrics.json's labels); BundleError if neither."""
    path = os.path.join(run_dir, LABELS)
    labels = fallback
    if os.path.isfile(path):
        try:
            labels = read_labels(path)
        except (UnicodeDecodeError, OSError):
            raise BundleError(f"{LABELS} in '{run_dir}' is not readable UTF-8 text; restore it or "
                              f"re-run 'edgetl train'") from None
    if not labels:
        raise BundleError(f"{run_dir} has no {LABELS}: {_TRAIN_FIX}")
    return list(labels)


def read_run(run_dir: str, complete: bool = True) -> RunFolder:
    """The run folder as the host tools see it.

    ``complete`` (export): the folder must hold model.onnx, labels.txt and
    metrics.json; the InputSpec comes from metrics.json or, for older runs,
    model.onnx's metadata. Otherwise (report, model card) metrics.json is
    enough: labels come from labels.txt or metrics.json's ``labels``."""
    run_dir = os.fspath(run_dir)
    if complete:
        if not os.path.isdir(run_dir):
            raise BundleError(f"{run_dir} is not a folder: {_TRAIN_FIX}")
        for name in (MODEL_FP32, LABELS, METRICS):
            if not os.path.isfile(os.path.join(run_dir, name)):
                raise BundleError(f"{run_dir} has no {name}: {_TRAIN_FIX}")
    metrics = read_metrics(run_dir)
    labels = _run_labels(run_dir, None if complete else metrics.get("labels"))
    spec = metrics.get("input_spec")
    if spec is None and complete:
        model_path = os.path.join(run_dir, MODEL_FP32)
        meta = read_model_info(model_path, "re-run 'edgetl train'").metadata
        if KEY_SPEC not in meta:
            raise BundleError(f"'{model_path}' carries no edgetl metadata (labels, input spec); re-run 'edgetl train'")
        spec = json.loads(meta[KEY_SPEC])
    return RunFolder(run_dir, labels, metrics, spec)
