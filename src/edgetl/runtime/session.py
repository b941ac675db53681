"""ONNX Runtime sessions, configured one way for host and device."""

from __future__ import annotations

import onnxruntime as ort

from ..errors import BundleError


def make_session(path: str, num_threads: int | None = None, spinning: bool = True) -> ort.InferenceSession:
    """``spinning=False`` when several sessions take turns on the same cores:
    ORT's idle worker threads otherwise spin after each run and starve the
    next session's."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only; ORT's warnings are not the user's business
    if num_threads:
        options.intra_op_num_threads = num_threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail / InvalidGraph / InvalidProtobuf / NoSuchFile
        lines = [line for line in str(exc).splitlines() if line.strip()]
        detail = (lines[0] if lines else type(exc).__name__)[:200]
        raise BundleError(f"ONNX Runtime cannot load '{path}' ({detail}); re-create it ('edgetl train')") from None
