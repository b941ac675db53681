"""``edgetl export RUN_DIR --format coreml [--int8]``: model.mlpackage (and
model.int8.mlpackage, int8 weights) through coremltools (the bundle's ONNX
graph run in torch, traced -> ML Program) as an image classifier: image
input, normalisation and class labels inside the model. Its spec is checked
here; prediction needs macOS."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time

import numpy as np

from .._files import atomic_path
from ..errors import BundleError
from ..runtime.bundle import MODEL_FP32, read_run
from .extras import native_quiet, need, quiet, version_of
from .record import size_mb, update_metrics
from .registry import register_format

log = logging.getLogger(__name__)

COREML_FP32, COREML_INT8 = "model.mlpackage", "model.int8.mlpackage"


def _normalised(model, spec: dict):
    """``model`` behind a (pixel - mean) / std step: pixels 0-255 in."""
    import torch

    class Normalised(torch.nn.Module):
        """Pixels 0-255 in, (pixel - mean) / std into the bundle's graph."""

        def __init__(self, model):
            super().__init__()
            self.model = model
            self.register_buffer("mean", torch.tensor(spec["mean"], dtype=torch.float32).reshape(1, -1, 1, 1))
            self.register_buffer("inv_std", 1.0 / torch.tensor(spec["std"], dtype=torch.float32).reshape(1, -1, 1, 1))

        def forward(self, x):
            return self.model((x - self.mean) * self.inv_std)

    return Normalised(model).eval()


def _coreml_model(onnx_path: str, spec: dict, labels: list[str], name: str):
    import torch

    ct = need("coremltools", "coreml")
    from .onnx_torch import load_torch_model

    gray = spec.get("channels") == "L"
    size = int(spec["image_size"])
    wrapped = _normalised(load_torch_model(onnx_path), spec)
    example = torch.rand(1, 1 if gray else 3, size, size) * 255
    with torch.no_grad():
        traced = torch.jit.trace(wrapped, example)
    layout = ct.colorlayout.GRAYSCALE if gray else ct.colorlayout.RGB
    with quiet(), native_quiet():
        mlmodel = ct.convert(
            traced, inputs=[ct.ImageType(name="image", shape=example.shape, color_layout=layout)],
            classifier_config=ct.ClassifierConfig(list(labels)), convert_to="mlprogram",
            minimum_deployment_target=ct.target.iOS15,
        )
    mlmodel.short_description = f"edgetl image classifier ({name}): {len(labels)} classes"
    mlmodel.input_description["image"] = (
        f"{'grey' if gray else 'RGB'} image {size}x{size}: resize the shorter side to "
        f"{size / float(spec.get('crop_fraction', 1.0)):.0f} px and centre-crop (Vision: centerCrop)")
    mlmodel.user_defined_metadata["edgetl.labels"] = json.dumps(list(labels))
    mlmodel.user_defined_metadata["edgetl.input_spec"] = json.dumps(spec, sort_keys=True)
    return mlmodel


def _program_labels(spec) -> list[str]:
    """An ML Program classifier keeps its labels in the program's classify op."""
    labels: list[str] = []
    for fn in spec.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            for op in block.operations:
                if op.type == "classify" and "classes" in op.inputs:
                    for arg in op.inputs["classes"].arguments:
                        values = arg.value.immediateValue.list.values
                        labels = [v.immediateValue.tensor.strings.values[0] for v in values]
    return labels


def inspect_coreml(path: str) -> dict:
    """What the .mlpackage declares: inputs, outputs, class labels."""
    ct = need("coremltools", "coreml")
    spec = ct.utils.load_spec(path)
    desc = spec.description
    inputs = []
    for f in desc.input:
        kind = f.type.WhichOneof("Type")
        item = {"name": f.name, "type": kind}
        if kind == "imageType":
            item.update(width=f.type.imageType.width, height=f.type.imageType.height,
                        color_space=ct.proto.FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(
                            f.type.imageType.colorSpace))
        inputs.append(item)
    outputs = [{"name": f.name, "type": f.type.WhichOneof("Type")} for f in desc.output]
    labels = list(spec.neuralNetworkClassifier.stringClassLabels.vector) \
        if spec.WhichOneof("Type") == "neuralNetworkClassifier" else []
    if spec.WhichOneof("Type") == "mlProgram":
        labels = _program_labels(spec)
    return {"inputs": inputs, "outputs": outputs, "labels": labels,
            "predicted_feature": desc.predictedFeatureName,
            "predicted_probabilities": desc.predictedProbabilitiesName,
            "metadata": dict(desc.metadata.userDefined)}


def _check_coreml(info: dict, spec: dict, labels: list[str], name: str) -> None:
    size = int(spec["image_size"])
    image = info["inputs"][0] if info["inputs"] else {}
    problems = []
    if image.get("type") != "imageType" or (image.get("width"), image.get("height")) != (size, size):
        problems.append(f"input is {image}, expected a {size}x{size} image")
    if info["labels"] != labels:
        problems.append(f"class labels {info['labels'][:5]}... differ from labels.txt")
    if info["predicted_feature"] != "classLabel":
        problems.append("no classLabel output")
    if problems:
        raise BundleError(f"the converted {name} is not the classifier expected ({'; '.join(problems)}); "
                          f"please report this with the run's metrics.json")


def _save_checked(model, final: str, spec: dict, labels: list[str]) -> dict:
    """Save ``model`` as the package ``final`` (temporary name, checked, then
    renamed); returns what the package declares."""
    name = os.path.basename(final)
    with atomic_path(final) as tmp:
        staged = f"{tmp}.mlpackage"  # coremltools saves a package only under a name ending in .mlpackage
        try:
            model.save(staged)
            os.replace(staged, tmp)
        finally:
            shutil.rmtree(staged, ignore_errors=True)  # left only when the save failed
        info = inspect_coreml(tmp)
        _check_coreml(info, spec, labels, name)
    return info


def _int8_weights(mlmodel):
    from coremltools.optimize.coreml import OpLinearQuantizerConfig, OptimizationConfig, linear_quantize_weights

    config = OptimizationConfig(global_config=OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8"))
    # A channel of zeros gets scale 0: coremltools warns dividing by it, the
    # dequantized channel is still exactly 0.
    with quiet(), native_quiet(), np.errstate(divide="ignore", invalid="ignore"):
        return linear_quantize_weights(mlmodel, config=config)


@register_format("coreml")
def export_coreml(run_dir: str, int8: bool = False, images=None) -> dict:
    """model.mlpackage (and model.int8.mlpackage: int8 weights); returns the
    ``exports.coreml`` record written to metrics.json. (``images``: unused,
    Core ML predictions need macOS.)"""
    run = read_run(run_dir)
    need("coremltools", "coreml")
    spec, labels = run.input_spec, run.labels
    record = {"converter": version_of("coremltools"), "file": COREML_FP32,
              "prediction": "Core ML runs on macOS/iOS only; this machine checked the spec"}
    t = time.perf_counter()
    log.info("converting %s to %s", MODEL_FP32, COREML_FP32)
    mlmodel = _coreml_model(os.path.join(run_dir, MODEL_FP32), spec, labels, run.metrics.get("backbone", "?"))
    outputs = [(COREML_FP32, mlmodel, "")]
    if int8:
        outputs.append((COREML_INT8, _int8_weights(mlmodel), "_int8"))
        record["file_int8"] = COREML_INT8
        record["int8"] = "weights int8 (linear symmetric, per channel), activations float16"
    for name, model, suffix in outputs:
        final = os.path.join(run_dir, name)
        info = _save_checked(model, final, spec, labels)
        record[f"model_mb{suffix}"] = round(size_mb(final), 3)
        record[f"spec{suffix}"] = {k: info[k] for k in ("inputs", "outputs", "predicted_feature")}
        record[f"labels_ok{suffix}"] = info["labels"] == labels
    record["convert_s"] = round(time.perf_counter() - t, 2)
    update_metrics(run_dir, "coreml", record)
    return record
