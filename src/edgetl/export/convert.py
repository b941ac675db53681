"""``edgetl export RUN_DIR --format onnx|tflite|coreml [--int8]``.

The bundle's own ONNX graph is run in torch (``onnx_torch``) and handed to
the converters, so the exported files compute what model.onnx computes:

- TFLite through litert-torch (torch -> LiteRT flatbuffer, no TensorFlow);
  int8 from model.int8.onnx's QDQ graph, i.e. with the scales ONNX Runtime
  calibrated on the training images; checked by running the .tflite with the
  LiteRT interpreter (ai-edge-litert) on validation images against ONNX Runtime.
- Core ML through coremltools (traced torch model -> ML Program) as an image
  classifier: image input, normalisation and class labels inside the model;
  its spec is checked here (prediction needs macOS).

Files are written under temporary names and renamed; metrics.json gains an
``exports`` entry per format (read, update, write to a temporary file, rename).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import time

import numpy as np

from ..errors import BundleError, DataError, MissingExtraError

log = logging.getLogger(__name__)

FORMATS = ("onnx", "tflite", "coreml")
TFLITE_FP32, TFLITE_INT8 = "model.tflite", "model.int8.tflite"
TFLITE_JSON = "model.tflite.json"
COREML_FP32, COREML_INT8 = "model.mlpackage", "model.int8.mlpackage"
MAX_CHECK_IMAGES = 500
_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@contextlib.contextmanager
def _native_quiet():
    """The converters' native libraries (absl, XNNPACK, oneDNN) log on file
    descriptor 2 when imported and run; keep the command's output to edgetl's
    own lines unless --verbose. Python exceptions are unaffected."""
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _need(module: str, extra: str):
    import importlib

    try:
        with _native_quiet():
            return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{extra} export needs the '{extra}' extra ({module} is not installed): "
            f'pip install "edgetl[{extra}]"'
        ) from exc


# ---------------------------------------------------------------- the bundle

def read_run(run_dir: str) -> dict:
    """labels, InputSpec dict and metrics of a run folder (BundleError if it is not one)."""
    run_dir = os.fspath(run_dir)
    if not os.path.isdir(run_dir):
        raise BundleError(f"{run_dir} is not a folder: pass the RUN_DIR written by 'edgetl train'")
    for name in ("model.onnx", "labels.txt", "metrics.json"):
        if not os.path.isfile(os.path.join(run_dir, name)):
            raise BundleError(f"{run_dir} has no {name}: pass the RUN_DIR written by 'edgetl train'")
    with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as fh:
        try:
            metrics = json.load(fh)
        except json.JSONDecodeError as exc:
            raise BundleError(f"{run_dir}/metrics.json is not valid JSON ({exc}); re-run 'edgetl train'") from exc
    with open(os.path.join(run_dir, "labels.txt"), encoding="utf-8") as fh:
        labels = [line.rstrip("\n") for line in fh if line.strip()]
    spec = metrics.get("input_spec")
    if spec is None:
        import onnx

        props = {p.key: p.value for p in onnx.load(os.path.join(run_dir, "model.onnx"),
                                                   load_external_data=False).metadata_props}
        spec = json.loads(props["edgetl.input_spec"])
    return {"labels": labels, "input_spec": spec, "metrics": metrics}


def update_metrics(run_dir: str, key: str, value: dict) -> dict:
    """metrics.json["exports"][key] = value, atomically."""
    path = os.path.join(run_dir, "metrics.json")
    with open(path, encoding="utf-8") as fh:
        metrics = json.load(fh)
    metrics.setdefault("exports", {})[key] = value
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(metrics, indent=2) + "\n")
    os.replace(tmp, path)
    return metrics


def check_images(run_dir: str, images=None, limit: int = MAX_CHECK_IMAGES) -> list[str]:
    """Validation images to compare the exports on: ``images`` (files or
    folders) if given, else metrics.json's ``val_predictions`` that still exist."""
    paths: list[str] = []
    if images:
        for item in images:
            item = os.fspath(item)
            if os.path.isdir(item):
                for root, _dirs, files in os.walk(item):
                    paths += [os.path.join(root, f) for f in sorted(files) if f.lower().endswith(_IMAGE_EXT)]
            elif os.path.isfile(item):
                paths.append(item)
            else:
                raise DataError(f"{item} does not exist: pass image files or folders to --images")
    else:
        with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as fh:
            metrics = json.load(fh)
        paths = [p["path"] for p in metrics.get("val_predictions", []) if os.path.isfile(p.get("path", ""))]
    if not paths:
        raise DataError(
            f"no validation images to check the export of {run_dir} on (the run's validation images are gone "
            f"or not listed): pass --images FOLDER with a few labeled photos"
        )
    if len(paths) > limit:
        idx = np.random.default_rng(0).permutation(len(paths))[:limit]
        paths = [paths[i] for i in sorted(idx)]
    return paths


@contextlib.contextmanager
def _quiet():
    """Converters print progress bars and banners on stdout; the library does not."""
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    import warnings

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _replace_path(tmp: str, final: str) -> None:
    """os.replace that also works for a folder (an .mlpackage) over an old one."""
    if os.path.isdir(final) and not os.path.islink(final):
        old = f"{final}.old-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def _size_mb(path: str) -> float:
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(r, f)) for r, _d, fs in os.walk(path) for f in fs) / 1e6
    return os.path.getsize(path) / 1e6


# ---------------------------------------------------------------- TFLite

def _to_tflite(onnx_path: str, out_path: str, image_size: int, channels: int, int8: bool) -> None:
    import torch

    litert_torch = _need("litert_torch", "tflite")
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
    with _quiet(), _native_quiet():
        edge = litert_torch.convert(nhwc.eval(), sample, **kwargs)
        tmp = f"{out_path}.tmp-{os.getpid()}"
        edge.export(tmp)
    os.replace(tmp, out_path)


def run_tflite(tflite_path: str, batch_nchw: np.ndarray) -> np.ndarray:
    """Probabilities of a .tflite on an NCHW float32 batch, one image at a time
    (the LiteRT interpreter, as on the phone)."""
    Interpreter = _need("ai_edge_litert.interpreter", "tflite").Interpreter
    with _native_quiet():
        interp = Interpreter(model_path=tflite_path)
        interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    rows = []
    for x in batch_nchw:
        interp.set_tensor(inp["index"], np.ascontiguousarray(x.transpose(1, 2, 0)[None], np.float32))
        interp.invoke()
        rows.append(interp.get_tensor(out["index"])[0].copy())
    return np.stack(rows)


def _onnx_proba(onnx_path: str, batch: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"input": batch[i:i + 32]})[0] for i in range(0, len(batch), 32)])


def _preprocess(run_dir: str, paths: list[str]) -> np.ndarray:
    from ..runtime import Predictor

    return Predictor(run_dir).preprocess(paths)


def export_tflite(run_dir: str, int8: bool = False, images=None) -> dict:
    """model.tflite (and model.int8.tflite with ``int8``) + model.tflite.json;
    returns the ``exports.tflite`` record written to metrics.json."""
    run = read_run(run_dir)
    _need("litert_torch", "tflite")
    _need("ai_edge_litert.interpreter", "tflite")
    spec = run["input_spec"]
    size, channels = int(spec["image_size"]), 1 if spec.get("channels") == "L" else 3
    paths = check_images(run_dir, images)
    batch = _preprocess(run_dir, paths)
    record = {"converter": _version_of("litert-torch"), "interpreter": _version_of("ai-edge-litert"),
              "num_check_images": len(paths), "file": TFLITE_FP32,
              "input": {"name": "input", "shape": [1, size, size, channels], "layout": "NHWC", "dtype": "float32"}}
    variants = [(False, "model.onnx", TFLITE_FP32, "agreement")]
    if int8:
        if not os.path.isfile(os.path.join(run_dir, "model.int8.onnx")):
            raise BundleError(f"{run_dir} has no model.int8.onnx: re-run 'edgetl train' to export int8 models")
        variants.append((True, "model.int8.onnx", TFLITE_INT8, "agreement_int8"))
    ref_fp32 = _onnx_proba(os.path.join(run_dir, "model.onnx"), batch)
    for q, onnx_name, out_name, key in variants:
        t = time.perf_counter()
        log.info("converting %s to %s", onnx_name, out_name)
        out_path = os.path.join(run_dir, out_name)
        _to_tflite(os.path.join(run_dir, onnx_name), out_path, size, channels, q)
        record[f"convert_s{'_int8' if q else ''}"] = round(time.perf_counter() - t, 2)
        log.info("running %s with the LiteRT interpreter on %d images", out_name, len(paths))
        got = run_tflite(out_path, batch).argmax(axis=1)
        ref = _onnx_proba(os.path.join(run_dir, onnx_name), batch).argmax(axis=1) if q else ref_fp32.argmax(axis=1)
        record[key] = float((got == ref).mean())
        record[f"model_mb{'_int8' if q else ''}"] = round(_size_mb(out_path), 3)
        if q:
            record["file_int8"] = out_name
            # The same int8 TFLite against the fp32 ONNX model: what int8 costs.
            record["agreement_int8_vs_fp32"] = float((got == ref_fp32.argmax(axis=1)).mean())
    sidecar = {
        "model": TFLITE_FP32, "model_int8": TFLITE_INT8 if int8 else None, "labels_file": "labels.txt",
        "labels": run["labels"], "input": record["input"], "output": {"name": "probabilities", "shape": [1, len(run["labels"])]},
        "input_spec": spec,
        "preprocessing": "RGB (or grey for channels 'L'), resize the shorter side to image_size / crop_fraction, "
                         "centre-crop image_size x image_size, x = (pixel - mean) / std per channel, NHWC float32",
        "normalization": {"mean": spec["mean"], "std": spec["std"]},
    }
    tmp = os.path.join(run_dir, f".{TFLITE_JSON}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(sidecar, indent=2) + "\n")
    os.replace(tmp, os.path.join(run_dir, TFLITE_JSON))
    record["sidecar"] = TFLITE_JSON
    update_metrics(run_dir, "tflite", record)
    return record


# ---------------------------------------------------------------- Core ML

def _coreml_model(onnx_path: str, spec: dict, labels: list[str], name: str):
    import torch

    ct = _need("coremltools", "coreml")
    from .onnx_torch import load_torch_model

    class Normalised(torch.nn.Module):
        """Pixels 0-255 in, (pixel - mean) / std into the bundle's graph."""

        def __init__(self, model):
            super().__init__()
            self.model = model
            self.register_buffer("mean", torch.tensor(spec["mean"], dtype=torch.float32).reshape(1, -1, 1, 1))
            self.register_buffer("inv_std", 1.0 / torch.tensor(spec["std"], dtype=torch.float32).reshape(1, -1, 1, 1))

        def forward(self, x):
            return self.model((x - self.mean) * self.inv_std)

    gray = spec.get("channels") == "L"
    size = int(spec["image_size"])
    wrapped = Normalised(load_torch_model(onnx_path)).eval()
    example = torch.rand(1, 1 if gray else 3, size, size) * 255
    with torch.no_grad():
        traced = torch.jit.trace(wrapped, example)
    layout = ct.colorlayout.GRAYSCALE if gray else ct.colorlayout.RGB
    with _quiet(), _native_quiet():
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


def inspect_coreml(path: str) -> dict:
    """What the .mlpackage declares: inputs, outputs, class labels."""
    ct = _need("coremltools", "coreml")
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
        # An ML Program classifier keeps its labels in the program's classify op.
        for fn in spec.mlProgram.functions.values():
            for block in fn.block_specializations.values():
                for op in block.operations:
                    if op.type == "classify" and "classes" in op.inputs:
                        for arg in op.inputs["classes"].arguments:
                            values = arg.value.immediateValue.list.values
                            labels = [v.immediateValue.tensor.strings.values[0] for v in values]
    return {"inputs": inputs, "outputs": outputs, "labels": labels,
            "predicted_feature": desc.predictedFeatureName,
            "predicted_probabilities": desc.predictedProbabilitiesName,
            "metadata": dict(desc.metadata.userDefined)}


def export_coreml(run_dir: str, int8: bool = False) -> dict:
    """model.mlpackage (and model.int8.mlpackage: int8 weights); returns the
    ``exports.coreml`` record written to metrics.json."""
    run = read_run(run_dir)
    ct = _need("coremltools", "coreml")
    spec, labels = run["input_spec"], run["labels"]
    record = {"converter": _version_of("coremltools"), "file": COREML_FP32,
              "prediction": "Core ML runs on macOS/iOS only; this machine checked the spec"}
    t = time.perf_counter()
    log.info("converting model.onnx to %s", COREML_FP32)
    mlmodel = _coreml_model(os.path.join(run_dir, "model.onnx"), spec, labels, run["metrics"].get("backbone", "?"))
    outputs = [(COREML_FP32, mlmodel, "")]
    if int8:
        from coremltools.optimize.coreml import OpLinearQuantizerConfig, OptimizationConfig, linear_quantize_weights

        config = OptimizationConfig(global_config=OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8"))
        # A channel of zeros gets scale 0: coremltools warns dividing by it, the
        # dequantized channel is still exactly 0.
        with _quiet(), _native_quiet(), np.errstate(divide="ignore", invalid="ignore"):
            q = linear_quantize_weights(mlmodel, config=config)
        outputs.append((COREML_INT8, q, "_int8"))
        record["file_int8"] = COREML_INT8
        record["int8"] = "weights int8 (linear symmetric, per channel), activations float16"
    for name, model, suffix in outputs:
        final = os.path.join(run_dir, name)
        tmp = os.path.join(run_dir, f".{name}.tmp-{os.getpid()}.mlpackage")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save(tmp)
        info = inspect_coreml(tmp)
        _check_coreml(info, spec, labels, name)
        _replace_path(tmp, final)
        record[f"model_mb{suffix}"] = round(_size_mb(final), 3)
        record[f"spec{suffix}"] = {k: info[k] for k in ("inputs", "outputs", "predicted_feature")}
        record[f"labels_ok{suffix}"] = info["labels"] == labels
    record["convert_s"] = round(time.perf_counter() - t, 2)
    update_metrics(run_dir, "coreml", record)
    return record


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


# ---------------------------------------------------------------- ONNX

def export_onnx(run_dir: str, int8: bool = False) -> dict:
    """The bundle is already ONNX: check it carries labels and InputSpec, and record it."""
    import onnx

    run = read_run(run_dir)
    record = {"file": "model.onnx", "model_mb": round(_size_mb(os.path.join(run_dir, "model.onnx")), 3)}
    names = ["model.onnx"] + (["model.int8.onnx"] if int8 else [])
    for name in names:
        path = os.path.join(run_dir, name)
        if not os.path.isfile(path):
            raise BundleError(f"{run_dir} has no {name}: re-run 'edgetl train'")
        props = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
        if json.loads(props.get("edgetl.labels", "[]")) != run["labels"]:
            raise BundleError(f"{path} metadata labels differ from labels.txt: re-run 'edgetl train'")
    if int8:
        record["file_int8"] = "model.int8.onnx"
        record["model_mb_int8"] = round(_size_mb(os.path.join(run_dir, "model.int8.onnx")), 3)
    update_metrics(run_dir, "onnx", record)
    return record


def export_model(run_dir: str, format: str, int8: bool = False, images=None) -> dict:
    """Export a run folder to ``format`` (onnx, tflite, coreml) beside the bundle."""
    run_dir = os.fspath(run_dir)
    if format not in FORMATS:
        raise DataError(f"Unknown export format '{format}': use one of {', '.join(FORMATS)}")
    if format == "tflite":
        return export_tflite(run_dir, int8=int8, images=images)
    if format == "coreml":
        return export_coreml(run_dir, int8=int8)
    return export_onnx(run_dir, int8=int8)


def _version_of(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{dist} {version(dist)}"
    except PackageNotFoundError:
        return dist
