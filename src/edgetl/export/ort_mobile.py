"""``edgetl export RUN_DIR --format ort``: the bundle's ONNX files in ONNX
Runtime's own ORT format, converted by ONNX Runtime's tool
(``onnxruntime.tools.convert_onnx_models_to_ort``), for ONNX Runtime on
Android and iOS:

    model.onnx -> model.ort            model.int8.onnx -> model.int8.ort
    features.onnx -> features.ort      features.int8.onnx -> features.int8.ort
    train_step.onnx -> train_step.ort

An .ort file is the graph already optimised for the phone's CPU (fixed
optimisations, level "all", target "arm": no x86-only layouts), so it loads
faster; it is also the only format a reduced-operator build of ONNX Runtime
reads. Each is loaded back in an onnxruntime session and run against its
.onnx before it is written: the models and feature models on validation
images, the train step on the head's exemplar features.

``ort_operators.json`` lists what each file needs (domain, opset, op types,
from the required-operators config the tool writes) and
``ort.required_operators.config`` all of them together: the file a custom
reduced build takes (``build.py --include_ops_by_config``).

Which phone runtimes have those operators: the packages ONNX Runtime ships
for phones since 1.19 (``onnxruntime-android``, ``onnxruntime-objc`` /
``onnxruntime-c``) are full builds with the same CPU kernels as this
machine's onnxruntime, on which every file here ran. The reduced
``onnxruntime-mobile`` packages (deprecated in 1.18, removed in 1.19) had a
fixed operator list, for opsets 12-15; each file is checked against it
(``MOBILE_PACKAGE_OPS``: ONNX Runtime's published list for 1.17, the last)."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time

import numpy as np

from .._files import atomic_path, write_json, write_text
from ..errors import BundleError
from ..runtime.bundle import (FEATURES_FP32, FEATURES_INT8, HEAD, MODEL_FP32, MODEL_INT8, TRAIN_STEP, read_device_files,
                              read_run)
from .agreement import check_images, onnx_proba, preprocess
from .extras import native_quiet, quiet, version_of
from .record import size_mb, update_metrics
from .registry import register_format

log = logging.getLogger(__name__)

ORT_FP32, ORT_INT8 = "model.ort", "model.int8.ort"
ORT_NAMES = {MODEL_FP32: ORT_FP32, MODEL_INT8: ORT_INT8, FEATURES_FP32: "features.ort",
             FEATURES_INT8: "features.int8.ort", TRAIN_STEP: "train_step.ort"}
ORT_JSON = "ort_operators.json"
ORT_CONFIG = "ort.required_operators.config"
TARGET_PLATFORM = "arm"  # phones: no NCHWc (x86) layout, int8 QDQ kept as int8
MAX_CHECK_IMAGES = 64

# The onnxruntime-mobile pre-built packages' operators (ONNX Runtime's docs,
# "ORT 1.17 Mobile Package Operators"): ai.onnx ones for opsets 12-15, plus
# the contrib ops ONNX Runtime's optimisers insert.
MOBILE_PACKAGE_OPSETS = (12, 13, 14, 15)
MOBILE_PACKAGE_OPS = {
    "ai.onnx": frozenset(
        "Abs Add And ArgMax ArgMin AveragePool Cast Ceil Clip Concat ConstantOfShape Conv ConvTranspose Cos CumSum "
        "DepthToSpace DequantizeLinear Div DynamicQuantizeLinear Elu Equal Erf Exp Expand Flatten Floor Gather "
        "GatherND Gemm GlobalAveragePool Greater GreaterOrEqual HardSigmoid Identity If InstanceNormalization LRN "
        "LeakyRelu Less LessOrEqual Log LogSoftmax Loop MatMul MatMulInteger Max MaxPool Mean Min Mul Neg "
        "NonMaxSuppression NonZero Not Or PRelu Pad Pow QLinearConv QLinearMatMul QuantizeLinear Range Reciprocal "
        "ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum Relu Reshape Resize ReverseSequence Round Scan "
        "ScatterND Shape Sigmoid Sin Size Slice Softmax SpaceToDepth Split Sqrt Squeeze Sub Sum Tanh "
        "ThresholdedRelu Tile TopK Transpose Unique Unsqueeze Where".split()),
    "com.microsoft": frozenset(
        "DynamicQuantizeMatMul FusedConv FusedGemm FusedMatMul Gelu MatMulIntegerToFloat NhwcMaxPool QLinearAdd "
        "QLinearAveragePool QLinearConv QLinearGlobalAveragePool QLinearLeakyRelu QLinearMul QLinearSigmoid".split()),
}
FULL_PACKAGES = "onnxruntime-android (Maven), onnxruntime-objc / onnxruntime-c (CocoaPods)"


def read_required_operators(config_path: str) -> list[dict]:
    """The tool's required-operators config (``domain;opset;Op1,Op2`` lines)
    as ``[{"domain", "opset", "ops"}]``; ``opset`` is the version of the
    operators' schema (their since_version), not the model's opset import."""
    out = []
    with open(config_path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith("#") or line.startswith("!"):
                continue
            domain, opset, ops = line.split(";")
            out.append({"domain": domain, "opset": int(opset), "ops": sorted(op for op in ops.split(",") if op)})
    return sorted(out, key=lambda e: (e["domain"], e["opset"]))


def format_required_operators(entries: list[dict]) -> str:
    """``entries`` (one file's or several) merged, in the config file format."""
    merged: dict[tuple[str, int], set[str]] = {}
    for e in entries:
        merged.setdefault((e["domain"], e["opset"]), set()).update(e["ops"])
    return "".join(f"{d};{v};{','.join(sorted(ops))}\n" for (d, v), ops in sorted(merged.items()))


def onnx_graph_ops(onnx_path: str) -> dict:
    """What the .onnx graph itself uses: ``{"ops": ["domain:Op", ...], "opsets": {domain: version}}``
    (only the opset imports some node uses)."""
    import onnx

    model = onnx.load(onnx_path, load_external_data=False)
    used = {(n.domain or "ai.onnx", n.op_type) for n in model.graph.node}
    imports = {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import}
    domains = {d for d, _ in used}
    return {"ops": sorted(f"{d}:{op}" for d, op in used),
            "opsets": {d: v for d, v in sorted(imports.items()) if d in domains}}


def _mobile_package_has(domain: str, since: int, op: str) -> bool:
    """Whether the onnxruntime-mobile package had a kernel for ``op`` at schema version ``since``."""
    if op not in MOBILE_PACKAGE_OPS.get(domain, ()):
        return False
    if domain != "ai.onnx":
        return since == 1
    import onnx.defs

    for opset in MOBILE_PACKAGE_OPSETS:
        try:
            if onnx.defs.get_schema(op, opset, "").since_version == since:
                return True
        except Exception:  # not an ONNX op at that opset (onnx raises SchemaError)
            continue
    return False


def mobile_package_check(entries: list[dict]) -> dict:
    """``{"covered": bool, "missing": ["domain:Op (opset N)", ...]}`` against the onnxruntime-mobile op list."""
    missing = sorted({f"{e['domain']}:{op} (opset {e['opset']})" for e in entries for op in e["ops"]
                      if not _mobile_package_has(e["domain"], e["opset"], op)})
    return {"covered": not missing, "missing": missing}


def _ort_tools():
    """onnxruntime's converter, imported without its side effects on logging:
    its logger module calls ``logging.basicConfig`` (a handler on the root
    logger, for the whole process) and logs each config file it writes."""
    root = logging.getLogger()
    handlers = root.handlers[:]
    try:
        from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort
    finally:
        root.handlers[:] = handlers
    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)
    return OptimizationStyle, convert_onnx_models_to_ort


def convert_to_ort(onnx_path: str, work_dir: str) -> tuple[str, list[dict]]:
    """ONNX Runtime's converter on one file, into ``work_dir``: the .ort path
    and the operators it needs (from the config file the tool writes)."""
    import pathlib

    OptimizationStyle, convert_onnx_models_to_ort = _ort_tools()
    name = os.path.basename(onnx_path)
    try:
        with quiet(), native_quiet():
            convert_onnx_models_to_ort(pathlib.Path(onnx_path), output_dir=pathlib.Path(work_dir),
                                       optimization_styles=[OptimizationStyle.Fixed], target_platform=TARGET_PLATFORM)
    except Exception as exc:  # the tool raises whatever onnxruntime raised
        raise BundleError(f"ONNX Runtime could not convert {name} to the ORT format ({exc}); please report this "
                          f"with the run's metrics.json") from exc
    stem = os.path.splitext(name)[0]
    ort_path = os.path.join(work_dir, f"{stem}.ort")
    config = os.path.join(work_dir, f"{stem}.required_operators.config")
    if not (os.path.isfile(ort_path) and os.path.isfile(config)):
        raise BundleError(f"ONNX Runtime's converter wrote no {stem}.ort for {name}; please report this")
    return ort_path, read_required_operators(config)


def _ort_version() -> str:
    import onnxruntime as ort

    return ort.__version__


def run_session(path: str, feeds: dict) -> list[np.ndarray]:
    """Every output of the ONNX or ORT file at ``path`` on ``feeds`` (CPU)."""
    import onnxruntime as ort

    with native_quiet():
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _train_step_feeds(run_dir: str, batch: np.ndarray) -> dict:
    """train_step.onnx's inputs: the bundle's head and its exemplar features
    (the features of the check images, labelled as model.onnx labels them,
    when the head keeps no exemplars)."""
    dev = read_device_files(run_dir)
    head = dev.head
    features, labels = head["exemplar_features"], head["exemplar_labels"]
    if not len(features):
        features = run_session(dev.features_path, {"input": batch})[0]
        labels = onnx_proba(os.path.join(run_dir, MODEL_FP32), batch).argmax(axis=1)
    return {"weight": head["weight"].astype(np.float32), "bias": head["bias"].astype(np.float32),
            "features": np.asarray(features, np.float32), "labels": np.asarray(labels, np.int64),
            "learning_rate": np.array(0.1, np.float32), "l2": np.array(dev.l2, np.float32)}


def compare_outputs(onnx_path: str, ort_path: str, feeds: dict, int8: bool) -> dict:
    """Run both files on ``feeds``: the largest difference of any output
    (relative to the output's scale), and for classifiers the share of equal
    top-1 answers. BundleError when the .ort computes something else."""
    ref, got = run_session(onnx_path, feeds), run_session(ort_path, feeds)
    name = os.path.basename(ort_path)
    if len(ref) != len(got) or any(a.shape != b.shape for a, b in zip(ref, got)):
        raise BundleError(f"{name} does not give the outputs {os.path.basename(onnx_path)} gives; please report this")
    diff = max(float(np.abs(a.astype(np.float64) - b).max(initial=0.0)) for a, b in zip(ref, got))
    scale = max(1.0, max(float(np.abs(a).max(initial=0.0)) for a in ref))
    result = {"max_abs_diff": diff, "max_rel_diff": diff / scale}
    if ref[0].ndim == 2 and os.path.basename(onnx_path).startswith("model."):
        result["agreement"] = float((ref[0].argmax(axis=1) == got[0].argmax(axis=1)).mean())
    # fp32: the same kernels, rounding apart; int8: a quantisation step where the kernels differ.
    if not all(np.isfinite(b).all() for b in got) or diff / scale > (2e-2 if int8 else 1e-4):
        raise BundleError(f"{name} differs from {os.path.basename(onnx_path)} by up to {diff:.3g} on the check "
                          f"inputs; please report this with the run's metrics.json")
    return result


def _sources(run_dir: str, int8: bool) -> list[str]:
    """The bundle's ONNX files to convert: those it has (model.onnx always);
    the learning files only when all of them are there."""
    has = {n for n in ORT_NAMES if os.path.isfile(os.path.join(run_dir, n))}
    if int8 and MODEL_INT8 not in has:
        raise BundleError(f"{run_dir} has no {MODEL_INT8}: re-run 'edgetl train' to export int8 models")
    if not {FEATURES_FP32, TRAIN_STEP} <= has or not os.path.isfile(os.path.join(run_dir, HEAD)):
        has -= {FEATURES_FP32, FEATURES_INT8, TRAIN_STEP}  # an older bundle: the models only
    return [n for n in ORT_NAMES if n in has]


def _convert_checked(run_dir: str, names: list[str], work: str, batch: np.ndarray) -> dict:
    """Convert and check every file in ``work``; returns the per-file records."""
    files = {}
    step_feeds = _train_step_feeds(run_dir, batch) if TRAIN_STEP in names else None
    for name in names:
        src = os.path.join(run_dir, name)
        t = time.perf_counter()
        log.info("converting %s to %s", name, ORT_NAMES[name])
        ort_path, ops = convert_to_ort(src, work)
        feeds = step_feeds if name == TRAIN_STEP else {"input": batch}
        check = compare_outputs(src, ort_path, feeds, int8=".int8." in name)
        graph = onnx_graph_ops(src)
        files[ORT_NAMES[name]] = {
            "source": name, "mb": round(size_mb(ort_path), 4), "source_mb": round(size_mb(src), 4),
            "bytes": os.path.getsize(ort_path), "source_bytes": os.path.getsize(src),
            "required_operators": ops, "onnx_ops": graph["ops"], "onnx_opsets": graph["opsets"],
            "mobile_package": mobile_package_check(ops), **check, "convert_s": round(time.perf_counter() - t, 2)}
    return files


def _operators_document(record: dict) -> dict:
    """ort_operators.json: the operators each .ort needs, and where they run."""
    return {
        "converter": record["converter"], "optimization": record["optimization"],
        "full_packages": {"packages": FULL_PACKAGES, "covered": True,
                          "why": "every file ran here on onnxruntime's CPU execution provider, whose kernels the "
                                 "full phone packages share"},
        "mobile_package": {"packages": "onnxruntime-mobile (reduced; removed in ONNX Runtime 1.19)",
                           "opsets": list(MOBILE_PACKAGE_OPSETS), **record["mobile_package"]},
        "config_file": ORT_CONFIG,
        "files": {name: {k: f[k] for k in ("source", "required_operators", "onnx_ops", "onnx_opsets",
                                           "mobile_package")} for name, f in record["files"].items()},
    }


@register_format("ort")
def export_ort(run_dir: str, int8: bool = False, images=None) -> dict:
    """model.ort, model.int8.ort, features(.int8).ort and train_step.ort (every
    one the bundle has the .onnx of; ``int8``: model.int8.onnx must be there),
    each checked against its .onnx, plus ort_operators.json and
    ort.required_operators.config; returns the ``exports.ort`` record written
    to metrics.json."""
    run = read_run(run_dir)
    names = _sources(run.run_dir, int8)
    paths = check_images(run.run_dir, images, limit=MAX_CHECK_IMAGES)
    batch = preprocess(run.run_dir, paths)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgetl-ort-") as work:
        files = _convert_checked(run.run_dir, names, work, batch)
        for name in files:  # every file checked: now publish them
            with atomic_path(os.path.join(run.run_dir, name)) as tmp:
                shutil.copyfile(os.path.join(work, name), tmp)
    all_ops = [e for f in files.values() for e in f["required_operators"]]
    record = {
        "converter": version_of("onnxruntime") + " (onnxruntime.tools.convert_onnx_models_to_ort)",
        "optimization": {"style": "Fixed", "level": "all", "target_platform": TARGET_PLATFORM},
        # An .ort file is read by the release that wrote it and newer ones: the phone's must not be older.
        "min_runtime_version": _ort_version(),
        "file": ORT_FP32, "file_int8": ORT_INT8 if ORT_INT8 in files else None,
        "num_check_images": len(paths), "files": files, "full_packages": FULL_PACKAGES,
        "runs_on_cpu_ep": True, "mobile_package": mobile_package_check(all_ops),
        "operators_file": ORT_JSON, "config_file": ORT_CONFIG, "convert_s": round(time.perf_counter() - t, 2),
    }
    write_text(os.path.join(run.run_dir, ORT_CONFIG), f"# ONNX Runtime operators of {', '.join(files)} "
               f"(edgetl export --format ort)\n" + format_required_operators(all_ops))
    write_json(os.path.join(run.run_dir, ORT_JSON), _operators_document(record))
    update_metrics(run.run_dir, "ort", record)
    return record
