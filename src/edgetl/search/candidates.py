"""The (size, tap, head) candidates: their costs and budget verdict before
anything is extracted, the table the console shows, and the choice."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..heads import head_class, head_kinds
from .costs import TapCost, tap_costs
from .sizes import Budget

TIE_TOLERANCE = 0.005  # half a point of accuracy
# A candidate replaces the reference (the naive head) only when its mean gain
# over the scored images exceeds this many standard errors of that gain.
SIGNIFICANCE_Z = 2.0
# ... or when it needs this many times fewer MACs and is, with the same
# confidence, at most EQUIVALENCE_MARGIN below it: the device's cost.
CHEAPER_FACTOR = 10
EQUIVALENCE_MARGIN = 0.01


@dataclass
class Candidate:
    image_size: int
    tap: str
    head: str
    dim: int
    macs: int  # backbone up to the tap + head, batch 1
    model_mb: float  # fp32: cut backbone + head
    latency_ms: float | None  # cut backbone, ONNX Runtime, batch 1, one thread
    fits_budget: bool = True
    over_budget: list[str] = field(default_factory=list)
    val_accuracy: float | None = None  # the selection score (k-fold mean or holdout); None: not scored
    note: str = ""
    # Per scored image: the share of the selection's fits that classified it right (not saved).
    correct: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        return f"{self.tap}@{self.image_size}px/{self.head}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("correct")
        d["macs"] = int(d["macs"])
        return d


def format_table(candidates: list[Candidate], chosen: Candidate | None = None, limit: int | None = None) -> str:
    """The candidates as a fixed-width table, best first ('*' marks the chosen)."""
    scored = sorted((c for c in candidates if c.val_accuracy is not None),
                    key=lambda c: (-c.val_accuracy, c.macs, c.model_mb))
    rest = [c for c in candidates if c.val_accuracy is None]
    rows = scored + rest
    if limit is not None:
        rows = rows[:limit]
    lines = [f"  {'tap':<8} {'size':>4} {'head':<7} {'val acc':>7} {'MACs':>8} {'latency':>9} {'model':>8}  note"]
    for c in rows:
        mark = "*" if chosen is not None and c is chosen else " "
        acc = f"{c.val_accuracy:.1%}" if c.val_accuracy is not None else "-"
        lat = f"{c.latency_ms:.2f} ms" if c.latency_ms is not None else "-"
        note = c.note or ("; ".join(c.over_budget) if c.over_budget else "")
        lines.append(f"{mark} {c.tap:<8} {c.image_size:>4} {c.head:<7} {acc:>7} {c.macs / 1e6:7.1f}M {lat:>9} "
                     f"{c.model_mb:6.2f}MB  {note}".rstrip())
    return "\n".join(lines)


def significantly_better(c: Candidate, reference: Candidate, z: float = SIGNIFICANCE_Z,
                         tolerance: float = TIE_TOLERANCE) -> bool:
    """Whether ``c`` beats ``reference`` by more than ``tolerance`` and by
    more than ``z`` standard errors of the paired per-image difference
    (both scored on the same images, the same folds)."""
    if c.correct is None or reference.correct is None or len(c.correct) != len(reference.correct):
        return (c.val_accuracy or 0.0) > (reference.val_accuracy or 0.0) + tolerance
    diff = np.asarray(c.correct, np.float64) - np.asarray(reference.correct, np.float64)
    gain = float(diff.mean())
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("inf")
    return gain > tolerance and gain > z * se


def not_worse(c: Candidate, reference: Candidate, margin: float = EQUIVALENCE_MARGIN,
              z: float = SIGNIFICANCE_Z) -> bool:
    """Whether ``c`` is confidently at most ``margin`` below ``reference``:
    its paired per-image gain exceeds ``-margin`` by ``z`` standard errors
    (an equivalence test; with few images nothing passes it)."""
    if c.correct is None or reference.correct is None or len(c.correct) != len(reference.correct) \
            or len(c.correct) < 2:
        return False
    diff = np.asarray(c.correct, np.float64) - np.asarray(reference.correct, np.float64)
    return float(diff.mean()) > -margin + z * float(diff.std(ddof=1) / np.sqrt(len(diff)))


def choose(candidates: list[Candidate], tolerance: float = TIE_TOLERANCE,
           reference: Candidate | None = None) -> Candidate:
    """The choice among the scored candidates within budget.

    With a ``reference`` (``Search.reference``), another candidate replaces
    it only when significantly better (:func:`significantly_better`), or when
    it needs CHEAPER_FACTOR times fewer MACs and is confidently at most a
    point worse (:func:`not_worse`): with dozens of candidates and a few
    hundred images the best score is partly luck, and a small gain in the
    score is not worth giving up the reference's features, while an order
    of magnitude of device work is. Among those (or among all, without a
    reference): the best score, and within ``tolerance`` of it the cheapest
    (MACs, then size, then the simpler head: registered first)."""
    scored = [c for c in candidates if c.val_accuracy is not None and c.fits_budget]
    if not scored:
        raise ValueError("no scored candidate")
    if reference is not None and reference in scored:
        others = [c for c in scored if c is not reference]
        better = [c for c in others if significantly_better(c, reference, tolerance=tolerance)]
        cheaper = [c for c in others if c.macs * CHEAPER_FACTOR <= reference.macs and not_worse(c, reference)]
        scored = better or cheaper
        if not scored:
            return reference
    best = max(c.val_accuracy for c in scored)
    ties = [c for c in scored if c.val_accuracy >= best - tolerance - 1e-12]
    order = head_kinds()
    return min(ties, key=lambda c: (c.macs, c.model_mb, order.index(c.head)))


def plan_candidates(backbone: str, graphs: dict, num_classes: int, heads: tuple[str, ...],
                    taps: tuple[str, ...] | None, budget: Budget, cache_dir: str | None) -> list[Candidate]:
    """Every (size, tap, head) with its costs and budget verdict; nothing is
    extracted. A head's cost is its default configuration's (``Head.cost``)."""
    defaults = {kind: head_class(kind)() for kind in heads}
    out = []
    for size, graph in graphs.items():
        costs: dict[str, TapCost] = tap_costs(graph, backbone, measure_latency=True, cache_dir=cache_dir, taps=taps)
        for tap, cost in costs.items():
            for kind in heads:
                hm, hmb = defaults[kind].cost(cost.dim, num_classes)
                c = Candidate(size, tap, kind, cost.dim, cost.macs + hm, cost.model_mb + hmb, cost.latency_ms)
                c.over_budget = budget.over(c.macs, c.model_mb, c.latency_ms)
                c.fits_budget = not c.over_budget
                out.append(c)
    return out


def no_fit_message(candidates: list[Candidate], budget: Budget) -> str:
    cheapest = min(candidates, key=lambda c: (c.macs, c.model_mb))
    lat = f", {cheapest.latency_ms:.2f} ms" if cheapest.latency_ms is not None else ""
    return (f"No candidate fits the budget ({'; '.join(cheapest.over_budget)} for the cheapest): the cheapest is "
            f"{cheapest.tap} at {cheapest.image_size} px with the {cheapest.head} head, "
            f"{cheapest.macs / 1e6:.1f}M MACs, {cheapest.model_mb:.2f} MB{lat}; raise the budget "
            f"(--max-macs / --max-model-mb / --max-latency-ms)")
