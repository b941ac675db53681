"""What a candidate costs on the device: MACs, model size, measured latency.

The backbone is cut at a tap (``export.graph_ops.truncate_to_tap``): the
layers after it are not in the model, so an early tap is smaller and faster
as well as cheaper in MACs. MACs are counted on the meta device
(``zoo.profile.profile_taps``); size is the cut model's serialized bytes;
latency is measured with ONNX Runtime on this machine, batch 1, one thread
(the median of repeated runs; a tap measured slower than a later tap of the
same graph, which computes a superset, takes the later tap's figure and is
flagged). All of it is cached per graph, tap and machine: a run on a
machine that has measured this graph builds, cuts and times nothing."""

from __future__ import annotations

import logging
import os
import platform
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from ..export.backbone_onnx import FEATURES_NAME, INPUT_NAME
from ..heads import make_head
from ..zoo.registry import ALL_TAPS, FINAL_TAP
from .cache import JsonCache

log = logging.getLogger(__name__)

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


class CostCache(JsonCache):
    """``{graph key + tap + machine + threads: [dim, macs, model_mb, latency_ms]}``
    (latency None when not measured)."""

    VERSION = 1

    def __init__(self, cache_dir: str | None = None):
        super().__init__("tap-costs.json", cache_dir)

    def key(self, graph, tap: str) -> str:
        return f"v{self.VERSION}-{graph.key}-{tap}-{_machine_id()}-t{LATENCY_THREADS}"

    def get(self, graph, tap: str, need_latency: bool) -> TapCost | None:
        row = self.data.get(self.key(graph, tap))
        try:
            dim, macs, mb, latency = row
            cost = TapCost(tap, int(dim), int(macs), float(mb), None if latency is None else float(latency))
        except (TypeError, ValueError):
            return None
        return None if need_latency and cost.latency_ms is None else cost

    def put(self, graph, cost: TapCost) -> None:
        self.data[self.key(graph, cost.tap)] = [cost.dim, cost.macs, cost.model_mb, cost.latency_ms]


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


def candidate_taps(graph) -> tuple[str, ...]:
    """What a search may use of a taps graph: each tap, earliest first,
    ``"final"``, then ``"all"`` (every tap's pooled features joined)."""
    return tuple(graph.taps) + (ALL_TAPS,)


def tap_costs(graph, backbone: str, measure_latency: bool = True, cache_dir: str | None = None,
              taps: tuple[str, ...] | None = None) -> dict[str, TapCost]:
    """``{tap: TapCost}`` for every tap of a taps graph
    (``export_backbone(..., taps=True)``) and ``"all"``, earliest first; only
    ``taps`` when given."""
    wanted = [t for t in candidate_taps(graph) if taps is None or t in taps]
    cache = CostCache(cache_dir)
    cached = {t: cache.get(graph, t, measure_latency) for t in wanted}
    if all(cached.values()):
        return cached
    measured = _measure(graph, backbone, measure_latency)
    for cost in measured.values():
        cache.put(graph, cost)
    cache.save()
    return {t: measured[t] for t in wanted}


def _measure(graph, backbone: str, measure_latency: bool) -> dict[str, TapCost]:
    """Every tap's cost, measured: MACs on the meta device, each cut model's
    bytes and (``measure_latency``) its batch-1 latency, corrected so that no
    tap is slower than a later one (a prefix of it)."""
    from ..export.graph_ops import truncate_to_tap
    from ..zoo.profile import profile_taps

    spec = graph.input_spec
    profiles = {p.name: (p.dim, p.macs) for p in profile_taps(backbone, spec.image_size, spec.num_channels)}
    # "all": the whole backbone's work, every tap's width.
    profiles[ALL_TAPS] = (sum(profiles[t][0] for t in graph.taps), profiles[FINAL_TAP][1])
    taps = candidate_taps(graph)
    sizes, latencies = {}, {}
    with tempfile.TemporaryDirectory(prefix="edgetl-latency-") as tmp:
        for tap in taps:
            data = truncate_to_tap(graph.onnx_path, tap).SerializeToString()
            sizes[tap] = len(data) / 1e6
            if measure_latency:
                path = os.path.join(tmp, "cut.onnx")
                with open(path, "wb") as fh:
                    fh.write(data)
                latencies[tap] = measure_latency_ms(path, (1, spec.num_channels, spec.image_size, spec.image_size))
    later = float("inf")
    for tap in reversed(graph.taps):  # a prefix cannot take longer than the whole: the machine's noise
        # ("all" is left out: it is the whole plus a join)
        if tap in latencies:
            if latencies[tap] > later:
                log.debug("latency of %s at %d px measured %.2f ms, above a later tap's %.2f ms: noise; using the "
                          "later figure", tap, spec.image_size, latencies[tap], later)
                latencies[tap] = later
            later = latencies[tap]
    return {tap: TapCost(tap, *profiles[tap], sizes[tap], latencies.get(tap)) for tap in taps}
