"""ONNX Runtime sessions, configured one way for host and device."""

from __future__ import annotations

import onnxruntime as ort


def make_session(path: str, num_threads: int | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only; ORT's warnings are not the user's business
    if num_threads:
        options.intra_op_num_threads = num_threads
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
