"""What the report and the model card read from a run folder: metrics.json
and labels.txt (through ``runtime.bundle.read_run``) and the ONNX files,
plus figures measured on the spot when the metrics lack them (MACs from the
graph, latency with ONNX Runtime)."""

from __future__ import annotations

import os
import statistics
import time

import numpy as np

from .._files import write_bytes
from ..runtime.bundle import read_run


def run_name(run_dir: str) -> str:
    """The run folder's name; for 'edgetl train''s not-yet-published folder
    ('.NAME.tmp-PID' beside NAME) the name it is about to get."""
    import re

    base = os.path.basename(os.path.abspath(run_dir))
    match = re.fullmatch(r"\.(.+)\.tmp-\d+", base)
    return match.group(1) if match else base


def load_run(run_dir: str) -> dict:
    """metrics.json with ``labels`` set to the run's labels (labels.txt, else
    metrics.json's own); BundleError if the folder is not a run."""
    run = read_run(run_dir, complete=False)
    metrics = run.metrics
    metrics["labels"] = run.labels
    return metrics


def onnx_macs(onnx_path: str) -> int | None:
    """Multiply-accumulates of one image through the graph (Conv, Gemm, MatMul)."""
    import onnx
    from onnx import shape_inference

    if not os.path.isfile(onnx_path):
        return None
    model = onnx.load(onnx_path)
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].dim_value = 1
    try:
        model = shape_inference.infer_shapes(model)
    except Exception:  # shape inference is best effort; no figure beats a wrong one
        return None
    shapes = {}
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    total = 0
    for node in model.graph.node:
        out = shapes.get(node.output[0])
        if node.op_type == "Conv" and out and len(node.input) > 1 and node.input[1] in shapes:
            w = shapes[node.input[1]]
            total += int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul") and out and node.input[1] in shapes:
            w = shapes[node.input[1]]
            k = w[0] if node.op_type == "MatMul" else (w[1] if any(
                a.name == "transB" and a.i for a in node.attribute) else w[0])
            total += int(np.prod(out)) * int(k)
    return total or None


def measure_latency_ms(onnx_path: str, runs: int = 20) -> float | None:
    """Median wall time of one image (batch 1) with ONNX Runtime, after a warm-up."""
    import onnxruntime as ort

    if not os.path.isfile(onnx_path):
        return None
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [1] + [d if isinstance(d, int) else 1 for d in inp.shape[1:]]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(3):
        sess.run(None, {inp.name: x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {inp.name: x})
        times.append((time.perf_counter() - t) * 1e3)
    return float(statistics.median(times))


def model_figures(run_dir: str, metrics: dict) -> dict:
    """Size (MB), MACs and latency (ms) for fp32 and int8, from the metrics
    where they are, measured here where they are not."""
    chosen = metrics.get("chosen") if isinstance(metrics.get("chosen"), dict) else {}
    sizes = metrics.get("model_mb") or {}
    out = {}
    for key, name in (("fp32", "model.onnx"), ("int8", "model.int8.onnx")):
        path = os.path.join(run_dir, name)
        size = sizes.get(key) if isinstance(sizes, dict) else None
        if size is None and os.path.isfile(path):
            size = os.path.getsize(path) / 1e6
        latency = None
        lat = chosen.get("latency_ms")
        if isinstance(lat, dict):
            latency = lat.get(key)
        elif isinstance(lat, (int, float)) and key == "fp32":
            latency = float(lat)
        source = "metrics.json" if latency is not None else "measured now (ONNX Runtime, batch 1, median of 20)"
        if latency is None:
            latency = measure_latency_ms(path)
        out[key] = {"file": name, "model_mb": size, "latency_ms": latency, "latency_source": source}
    macs = chosen.get("macs") or metrics.get("macs")
    out["macs"] = int(macs) if macs else onnx_macs(os.path.join(run_dir, "model.onnx"))
    return out


def worst_predictions(metrics: dict, limit: int = 12) -> list[dict]:
    """The validation images the model got most wrong: misclassified first
    (most confident first), then the least confident correct ones; images
    that no longer exist are skipped."""
    rows = [r for r in metrics.get("val_predictions") or []
            if isinstance(r, dict) and os.path.isfile(str(r.get("path") or ""))]
    wrong = sorted((r for r in rows if r.get("predicted") != r.get("label")),
                   key=lambda r: -float(r.get("probability") or 0))
    right = sorted((r for r in rows if r.get("predicted") == r.get("label")),
                   key=lambda r: float(r.get("probability") or 0))
    return (wrong + right)[:limit]


def recorded_data_dir(run_dir: str) -> str | None:
    """The data folder the run was trained on, as its config.toml records it
    (``[train] data_dir``); None when the run records none."""
    import tomllib

    try:
        with open(os.path.join(run_dir, "config.toml"), "rb") as fh:
            config = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None
    table = config.get("train", config)
    data_dir = table.get("data_dir") if isinstance(table, dict) else None
    return data_dir if isinstance(data_dir, str) and data_dir else None


def inside(folder: str | None, path: str) -> bool:
    """Whether ``path`` is a file under ``folder``, symlinks followed (a link
    that leads out of the folder is outside it)."""
    if not folder:
        return False
    try:
        root, target = os.path.realpath(folder), os.path.realpath(path)
        return os.path.commonpath([root, target]) == root and os.path.isfile(target)
    except (OSError, ValueError):  # different drives, NUL in a path
        return False


def write_text_atomic(path: str, text: str) -> str:
    """Write ``text`` to a temporary name beside ``path``, then rename it over
    ``path``. Non-UTF-8 file names (surrogates) are written escaped."""
    return write_bytes(path, text.encode("utf-8", "backslashreplace"))
