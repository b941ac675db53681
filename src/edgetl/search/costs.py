"""What a candidate costs on the device: MACs, model size, measured latency.

The backbone is cut at a tap (``export.graph_ops.truncate_to_tap``): the
layers after it are not in the model, so an early tap is smaller and faster
as well as cheaper in MACs. MACs are counted on the meta device
(``zoo.profile.profile_taps``); size is the cut model's serialized bytes;
latency is measured with ONNX Runtime on this machine, batch 1, one thread
(the median of repeated runs), and cached per cut model and machine."""

from __future__ import annotations

import hashlib
import os
import platform
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from ..export.backbone_onnx import FEATURES_NAME, INPUT_NAME
from ..heads import make_head
from .cache import JsonCache

LATENCY_RUNS = 20
LATENCY_THREADS = 1


@dataclass(frozen=True)
class TapCost:
    tap: str
    dim: int  # width of the pooled features
    macs: int  # backbone up to the tap, batch 1 (conv + linear)
    model_mb: float  # the cut backbone, fp32 ONNX bytes / 1e6
    latency_ms: float | None  # measured, batch 1; None when not measured


def head_cost(kind: str, dim: int, num_classes: int) -> tuple[int, float]:
    """(MACs, fp32 MB) of a ``kind`` head with its default hyper-parameters
    on ``dim`` features: its layers plus the standardisation (``Head.cost``)."""
    return make_head(kind).cost(dim, num_classes)


def _machine_id() -> str:
    return f"{platform.machine()}-{platform.processor() or 'cpu'}-{os.cpu_count()}"


class LatencyCache(JsonCache):
    """``{model sha256 + machine + threads: ms}``."""

    def __init__(self, cache_dir: str | None = None):
        super().__init__("latency.json", cache_dir)

    def key(self, model_bytes: bytes) -> str:
        return f"{hashlib.sha256(model_bytes).hexdigest()[:24]}-{_machine_id()}-t{LATENCY_THREADS}"


def measure_latency_ms(model_path: str, input_shape: tuple[int, ...], runs: int = LATENCY_RUNS) -> float:
    """Median wall time of one batch-1 run of ``model_path`` with ONNX Runtime,
    one intra-op thread, after warm-up runs."""
    from ..runtime.session import make_session

    session = make_session(model_path, num_threads=LATENCY_THREADS)
    x = np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)
    for _ in range(3):
        session.run([FEATURES_NAME], {INPUT_NAME: x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run([FEATURES_NAME], {INPUT_NAME: x})
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000.0)


def tap_costs(graph, backbone: str, measure_latency: bool = True, cache_dir: str | None = None,
              taps: tuple[str, ...] | None = None) -> dict[str, TapCost]:
    """``{tap: TapCost}`` for every tap of a taps graph
    (``export_backbone(..., taps=True)``), earliest first; only ``taps`` when given."""
    from ..export.graph_ops import truncate_to_tap
    from ..zoo.profile import profile_taps

    spec = graph.input_spec
    profiles = {p.name: p for p in profile_taps(backbone, spec.image_size, spec.num_channels)}
    latencies = LatencyCache(cache_dir) if measure_latency else None
    out: dict[str, TapCost] = {}
    dirty = False
    with tempfile.TemporaryDirectory(prefix="edgetl-latency-") as tmp:
        for tap in graph.taps:
            if taps is not None and tap not in taps:
                continue
            model = truncate_to_tap(graph.onnx_path, tap)
            data = model.SerializeToString()
            latency = None
            if latencies is not None:
                key = latencies.key(data)
                latency = latencies.data.get(key)
                if latency is None:
                    path = os.path.join(tmp, "cut.onnx")
                    with open(path, "wb") as fh:
                        fh.write(data)
                    latency = measure_latency_ms(path, (1, spec.num_channels, spec.image_size, spec.image_size))
                    latencies.data[key] = latency
                    dirty = True
            p = profiles[tap]
            out[tap] = TapCost(tap, p.dim, p.macs, len(data) / 1e6, latency)
    if dirty:
        latencies.save()
    return out
