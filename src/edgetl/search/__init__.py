"""Budget-aware transfer search: which layer, input size and head.

Everything but the last layer transfers well only when the user's images
look like ImageNet photos; for scans, drawings or icons an earlier layer
often transfers better, and on a phone an earlier tap at a smaller input is
10-50x cheaper. So the choice is measured, every run:

1. **Candidates**: input sizes (halving from the backbone's default down to
   32 px: the extraction of all of them costs at most 4/3 of the largest
   alone) x tap points (the end of each stage, and the final features) x
   heads (softmax, nearest class mean, one hidden layer). One forward pass
   per size yields every tap (``export_backbone(taps=True)``), through the
   feature cache, so trying a candidate again costs nothing.
2. **Costs first**: MACs, model size and batch-1 latency of every (size,
   tap) are known before any image is read; candidates over the device
   budget are dropped, and when none is left the error names the cheapest.
3. **Selection on validation data only**: stratified k-fold over the
   labeled images when the set is small, the run's holdout split otherwise;
   the test set is never seen. Linear heads are scored for every (size,
   tap); the hidden-layer head for the best few. A candidate within
   ``TIE_TOLERANCE`` of the best is a tie, and ties go to the cheaper.
4. **Baselines, always**: logistic regression on raw pixels, and the naive
   head (softmax on the final layer at the default size), both on the same
   holdout split the chosen model is reported on."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import DataError
from ..export.backbone_onnx import FINAL_TAP
from .costs import JsonCache, TapCost, head_cost, tap_costs

log = logging.getLogger(__name__)

HEADS = ("softmax", "ncm", "mlp")
MIN_SEARCH_SIZE = 32
NUM_MLP_PAIRS = 3  # the hidden-layer head is tried on this many best (size, tap) pairs
TIE_TOLERANCE = 0.005  # half a point of accuracy
KFOLD_BELOW_IMAGES = 2000  # k-fold selection below this many labeled images (holdout above)
MAX_FOLDS = 5
FEWER_FOLDS_ABOVE = 500


def search_sizes(default_size: int, min_size: int = MIN_SEARCH_SIZE) -> list[int]:
    """Input sizes to try, largest first: the default, then halving (rounded
    down to multiples of 8) down to ``min_size``, which is always included:
    224 -> [224, 112, 56, 32]. Each size costs at most a quarter of the one
    before, so the whole ladder costs at most 4/3 of its largest size."""
    sizes, size = [], int(default_size)
    while size > min_size:
        sizes.append(size)
        size = max(min_size, size // 2 // 8 * 8)
    sizes.append(min_size)
    return sorted(set(sizes), reverse=True)


def with_native_size(sizes: list[int], native: int | None, max_cost: float = 1.5, near: float = 0.2) -> list[int]:
    """``sizes`` plus the images' own resolution (rounded down to a multiple
    of 8) when it lies inside the ladder, is not within ``near`` of a size
    already there, and the ladder's cost stays within ``max_cost`` times its
    largest size: a 72-px icon set is also tried at 72 px."""
    if not native or not sizes:
        return sizes
    size = native // 8 * 8
    if not sizes[-1] < size < sizes[0] or any(abs(size - s) <= near * s for s in sizes):
        return sizes
    if sum(s * s for s in sizes + [size]) > max_cost * sizes[0] ** 2:
        return sizes
    return sorted(sizes + [size], reverse=True)


def native_side(paths: list[str], sample: int = 200, seed: int = 0) -> int | None:
    """Median shorter side of up to ``sample`` images (headers only)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    chosen = [paths[i] for i in rng.permutation(len(paths))[:sample]]
    sides = []
    for path in chosen:
        try:
            with Image.open(path) as image:
                sides.append(min(image.size))
        except Exception:  # unreadable files are reported by the extraction
            continue
    return int(np.median(sides)) if sides else None


def parse_count(text: str | float | int | None) -> float | None:
    """'40M', '0.5G', '2.5e7', 1e6 -> a number; None stays None."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        return float(text)
    raw = str(text).strip()
    scale = {"k": 1e3, "m": 1e6, "g": 1e9}.get(raw[-1:].lower(), 1.0)
    number = raw[:-1] if scale != 1.0 else raw
    try:
        value = float(number) * scale
    except ValueError:
        raise DataError(f"--max-macs must be a number such as 40M or 0.5G, got {raw!r}") from None
    return value


@dataclass(frozen=True)
class Budget:
    """Device limits; None means no limit."""

    max_latency_ms: float | None = None
    max_macs: float | None = None
    max_model_mb: float | None = None

    def __post_init__(self):
        for name in ("max_latency_ms", "max_macs", "max_model_mb"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise DataError(f"--{name.replace('_', '-')} must be positive, got {value}")

    def over(self, macs: float, model_mb: float, latency_ms: float | None) -> list[str]:
        """The limits a candidate exceeds, as short phrases."""
        out = []
        if self.max_macs is not None and macs > self.max_macs:
            out.append(f"{macs / 1e6:.1f}M MACs > {self.max_macs / 1e6:.1f}M")
        if self.max_model_mb is not None and model_mb > self.max_model_mb:
            out.append(f"{model_mb:.2f} MB > {self.max_model_mb:.2f} MB")
        if self.max_latency_ms is not None and latency_ms is not None and latency_ms > self.max_latency_ms:
            out.append(f"{latency_ms:.2f} ms > {self.max_latency_ms:.2f} ms")
        return out

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.max_latency_ms, self.max_macs, self.max_model_mb))


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

    @property
    def name(self) -> str:
        return f"{self.tap}@{self.image_size}px/{self.head}"

    def to_dict(self) -> dict:
        d = asdict(self)
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


def choose(candidates: list[Candidate], tolerance: float = TIE_TOLERANCE) -> Candidate:
    """The best-scored candidate; within ``tolerance`` of the best, the
    cheapest (MACs, then size, then the simpler head)."""
    scored = [c for c in candidates if c.val_accuracy is not None and c.fits_budget]
    if not scored:
        raise ValueError("no scored candidate")
    best = max(c.val_accuracy for c in scored)
    ties = [c for c in scored if c.val_accuracy >= best - tolerance - 1e-12]
    return min(ties, key=lambda c: (c.macs, c.model_mb, HEADS.index(c.head)))


def single_thread():
    """Heads on small problems gain nothing from a second thread, and
    spinning BLAS/OpenMP workers slow them many times when the cores are shared."""
    import contextlib

    import torch
    from threadpoolctl import threadpool_limits

    @contextlib.contextmanager
    def ctx():
        old = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with threadpool_limits(limits=1):
                yield
        finally:
            torch.set_num_threads(old)

    return ctx()


def make_scorer(y: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray, num_classes: int, seed: int,
                head_params: dict, head_kwargs, kfold_below: int = KFOLD_BELOW_IMAGES):
    """(score(X, kind) -> accuracy, protocol dict). k-fold over every labeled
    image when there are fewer than ``kfold_below``; otherwise fit on the
    train split, score on the holdout split."""
    from ..heads import make_head
    from ..heads.selection import cv_score

    def build(kind: str):
        return make_head(kind, **head_kwargs(kind, head_params))

    min_class = int(np.bincount(y, minlength=num_classes).min())
    if len(y) < kfold_below and min_class >= 2:
        # Five folds for small sets; three above FEWER_FOLDS_ABOVE (each fold is then large enough).
        folds = max(2, min(MAX_FOLDS if len(y) < FEWER_FOLDS_ABOVE else 3, min_class))
        protocol = {"kind": "kfold", "folds": folds, "images": int(len(y)),
                    "description": f"stratified {folds}-fold cross-validation on {len(y)} labeled images"}

        def score(X, kind):
            return cv_score(lambda: build(kind), X, y, n_splits=folds, seed=seed, num_classes=num_classes)
    else:
        protocol = {"kind": "holdout", "train": int(len(train_idx)), "val": int(len(val_idx)),
                    "description": f"fit on {len(train_idx)} images, scored on the {len(val_idx)} held out"}

        def score(X, kind):
            head = build(kind).fit(X[train_idx], y[train_idx], X[val_idx], y[val_idx], num_classes=num_classes)
            return float((head.predict(X[val_idx]) == y[val_idx]).mean())
    return score, protocol


def holdout_and_refit(kind: str, kwargs: dict, X: np.ndarray, y: np.ndarray, train_idx: np.ndarray,
                      val_idx: np.ndarray, num_classes: int):
    """(head fitted on the train split and early-stopped on the holdout,
    the same head refitted on all rows for the number of epochs early
    stopping chose). The first gives honest validation figures; the second
    is what ships: selection done, no labeled image is left unused."""
    from ..heads import make_head

    head = make_head(kind, **kwargs).fit(X[train_idx], y[train_idx], X[val_idx], y[val_idx],
                                         num_classes=num_classes)
    refit_kwargs = dict(kwargs)
    if kind != "ncm":
        refit_kwargs["epochs"] = max(1, int(head.best_epoch_))
    shipped = make_head(kind, **refit_kwargs).fit(X, y, num_classes=num_classes)
    return head, shipped


def plan_candidates(backbone: str, graphs: dict, num_classes: int, heads: tuple[str, ...],
                    taps: tuple[str, ...] | None, budget: Budget, cache_dir: str | None) -> list[Candidate]:
    """Every (size, tap, head) with its costs and budget verdict; nothing is extracted."""
    out = []
    for size, graph in graphs.items():
        costs: dict[str, TapCost] = tap_costs(graph, backbone, measure_latency=True, cache_dir=cache_dir, taps=taps)
        for tap, cost in costs.items():
            for kind in heads:
                hm, hmb = head_cost(kind, cost.dim, num_classes)
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


class ScoreCache(JsonCache):
    """Selection scores already computed: ``{context|features digest|tap|head: accuracy}``,
    so trying a candidate again costs nothing."""

    VERSION = 1

    def __init__(self, cache_dir: str | None = None):
        super().__init__("search-scores.json", cache_dir)

    def context(self, y, train_idx, val_idx, protocol, seed, head_params) -> str:
        h = hashlib.sha256()
        for arr in (y, train_idx, val_idx):
            h.update(np.ascontiguousarray(arr, np.int64).tobytes())
        h.update(json.dumps([self.VERSION, protocol, seed, head_params], sort_keys=True, default=str).encode())
        return h.hexdigest()[:24]


@dataclass
class NaiveBaseline:
    """The article's recipe: softmax head on the final layer at the
    backbone's default size, fitted on the run's training split."""

    graph: object  # taps graph at the default size
    head: object
    summary: dict
    cache_dir: str | None = None

    def predict(self, paths: list[str]) -> np.ndarray:
        from ..features.extract import FeatureExtractor

        ex = FeatureExtractor(self.graph, cache_dir=self.cache_dir).extract(list(paths), progress=False)
        if len(ex.ok) != len(paths):
            raise DataError(f"{len(paths) - len(ex.ok)} of the images could not be read")
        return self.head.predict(ex.tap(FINAL_TAP))

    def score(self, paths: list[str], y) -> float:
        return float((self.predict(paths) == np.asarray(y)).mean())


class Search:
    """One search: costs on construction (nothing read yet), then
    :meth:`extract` (every size in one pass over the images), then
    :meth:`score` (returns the chosen candidate)."""

    def __init__(self, backbone: str, weights, base_spec, sizes: list[int], num_classes: int,
                 heads: tuple[str, ...] = HEADS, taps: tuple[str, ...] | None = None, budget: Budget = Budget(),
                 baseline_size: int | None = None, cache_dir: str | None = None):
        from ..export.backbone_onnx import export_backbone

        self.backbone, self.num_classes, self.heads, self.budget = backbone, num_classes, tuple(heads), budget
        self.cache_dir = cache_dir
        self.timings: dict[str, float] = {}
        t = time.perf_counter()
        wanted = sorted(set(sizes) | ({baseline_size} if baseline_size else set()), reverse=True)
        self.graphs = {size: export_backbone(backbone, weights=weights, input_spec=base_spec.replace(image_size=size),
                                             cache_dir=cache_dir, taps=True) for size in wanted}
        self.timings["export_s"] = time.perf_counter() - t
        all_taps = self.graphs[wanted[0]].taps
        if taps is not None:
            unknown = [tp for tp in taps if tp not in all_taps]
            if unknown:
                raise DataError(f"Unknown tap {unknown[0]!r} for {backbone}; choose one of {', '.join(all_taps)}")
        t = time.perf_counter()
        self.candidates = plan_candidates(backbone, {s: self.graphs[s] for s in sorted(sizes, reverse=True)},
                                          num_classes, self.heads, taps, budget, cache_dir)
        self.timings["costs_s"] = time.perf_counter() - t
        if not any(c.fits_budget for c in self.candidates):
            raise DataError(no_fit_message(self.candidates, budget))
        for c in self.candidates:
            if not c.fits_budget:
                c.note = "over budget: " + "; ".join(c.over_budget)
        self.sizes = sorted({c.image_size for c in self.candidates if c.fits_budget}, reverse=True)
        self.baseline_size = baseline_size
        self.extract_sizes = sorted(set(self.sizes) | ({baseline_size} if baseline_size else set()), reverse=True)
        self.features: dict = {}
        self.protocol: dict = {}
        self.chosen: Candidate | None = None

    def extract(self, paths: list[str], progress: bool | None = None):
        """Features of every tap at every size that has a candidate left
        (and the baseline's size), one decode per image; returns the first
        size's Extraction (its ``ok``/``skipped`` hold for all)."""
        from ..features.multi import extract_many

        t = time.perf_counter()
        out = extract_many([self.graphs[s] for s in self.extract_sizes], list(paths), cache_dir=self.cache_dir,
                           progress=progress, desc="extracting features")
        self.features = dict(zip(self.extract_sizes, out))
        self.timings["features_s"] = time.perf_counter() - t
        return out[0]

    def table(self, limit: int | None = None) -> str:
        return format_table(self.candidates, self.chosen, limit)

    @staticmethod
    def head_kwargs(kind: str, head_params: dict) -> dict:
        if kind == "ncm":
            return {}
        params = dict(head_params)
        if kind == "mlp":
            params.pop("epochs", None)  # its own default: two layers take longer to converge
        return params

    def score(self, y: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray, seed: int = 0,
              head_params: dict | None = None) -> Candidate:
        """Score the candidates within budget on the extracted rows
        (``y``: their labels; ``train_idx``/``val_idx``: the run's holdout
        split of those rows) and return the choice."""
        t = time.perf_counter()
        y = np.asarray(y)
        fit_score, self.protocol = make_scorer(y, train_idx, val_idx, self.num_classes, seed, head_params or {},
                                               self.head_kwargs)
        scores = ScoreCache(self.cache_dir)
        context = scores.context(y, train_idx, val_idx, self.protocol, seed, head_params or {})
        digests = {}  # image_size -> digest of its feature rows

        def score(X, kind, size, tap):
            if size not in digests:
                digests[size] = hashlib.sha256(self.features[size].features.tobytes()).hexdigest()
            key = f"{context}|{digests[size]}|{tap}|{kind}"
            if key not in scores.data:
                scores.data[key] = fit_score(X, kind)
            return scores.data[key]

        live = [c for c in self.candidates if c.fits_budget]
        log.info("scoring %d candidates by %s", len(live), self.protocol["description"])
        with single_thread():
            linear = [c for c in live if c.head != "mlp"]
            for c in linear:
                c.val_accuracy = score(self.features[c.image_size].tap(c.tap), c.head, c.image_size, c.tap)
            # The hidden-layer head costs the most to fit: try it where the linear heads did best.
            pair_score: dict[tuple[int, str], float] = {}
            for c in linear:
                key = (c.image_size, c.tap)
                pair_score[key] = max(pair_score.get(key, -1.0), c.val_accuracy)
            mlps = [c for c in live if c.head == "mlp"]
            best_pairs = (set(sorted(pair_score, key=lambda k: -pair_score[k])[:NUM_MLP_PAIRS]) if linear
                          else {(c.image_size, c.tap) for c in mlps})
            for c in mlps:
                if (c.image_size, c.tap) in best_pairs:
                    c.val_accuracy = score(self.features[c.image_size].tap(c.tap), c.head, c.image_size, c.tap)
                else:
                    c.note = f"not tried: the hidden-layer head is fitted on the {NUM_MLP_PAIRS} best taps only"
        scores.save()
        self.timings["scoring_s"] = time.perf_counter() - t
        self.protocol["tie_tolerance"] = TIE_TOLERANCE
        self.chosen = choose(self.candidates)
        return self.chosen

    def naive_baseline(self, y: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray,
                       head_params: dict) -> NaiveBaseline:
        """The softmax head on the final layer at the default size, fitted on
        the training split and scored on the holdout split."""
        size = self.baseline_size
        graph = self.graphs[size]
        X = self.features[size].tap(FINAL_TAP)
        with single_thread():
            head, shipped = holdout_and_refit("softmax", head_params, X, y, train_idx, val_idx, self.num_classes)
        acc = float((head.predict(X[val_idx]) == y[val_idx]).mean())
        cost = tap_costs(graph, self.backbone, measure_latency=True, cache_dir=self.cache_dir, taps=(FINAL_TAP,))
        hm, hmb = head_cost("softmax", X.shape[1], self.num_classes)
        c = cost[FINAL_TAP]
        summary = {"tap": FINAL_TAP, "image_size": size, "head": "softmax", "val_accuracy": acc,
                   "macs": int(c.macs + hm), "latency_ms": c.latency_ms, "model_mb": c.model_mb + hmb}
        return NaiveBaseline(graph, shipped, summary, self.cache_dir)


def search_summary(metrics: dict, searcher=None, limit: int = 12) -> list[str]:
    """Console lines: the candidate table (best first), the choice, the
    baselines on the same holdout split, and a plain sentence when transfer
    does not beat the raw-pixel baseline."""
    s, ch, b = metrics["search"], metrics["chosen"], metrics["baselines"]
    lines = []
    n_scored = sum(c["val_accuracy"] is not None for c in s["candidates"])
    if s["enabled"] and searcher is not None:
        lines.append(f"search: {n_scored} of {len(s['candidates'])} candidates scored by "
                     f"{s['protocol']['description']} (ties within {s['protocol']['tie_tolerance']:.1%} go to the "
                     f"cheaper); the best {min(limit, n_scored)}:")
        lines.append(searcher.table(limit=limit))
        if s.get("plot"):
            lines.append(f"  (every candidate is in metrics.json; accuracy vs MACs: {s['plot']} in the run folder)")
    lat = f", {ch['latency_ms']:.2f} ms" if ch["latency_ms"] is not None else ""
    lines.append(f"chosen: {ch['head']} head on {ch['tap']} at {ch['image_size']} px: {ch['macs'] / 1e6:.1f}M MACs"
                 f"{lat}, {ch['model_mb']:.2f} MB fp32")
    fl, raw = b["final_layer"], b["raw_pixels"]
    rows = [(f"chosen ({ch['tap']}, {ch['image_size']} px, {ch['head']})", ch["val_accuracy"], ch["macs"]),
            (f"naive (final layer, {fl['image_size']} px, softmax)", fl["val_accuracy"], fl["macs"]),
            (f"raw pixels ({raw['image_size']} px, logistic regression)", raw["val_accuracy"], None)]
    width = max(len(r[0]) for r in rows)
    lines.append(f"holdout validation accuracy ({metrics['counts']['val']} images, the same split for all three):")
    for name, acc, macs in rows:
        lines.append(f"  {name:<{width}}  {acc:6.1%}" + (f"  {macs / 1e6:8.1f}M MACs" if macs is not None else ""))
    if ch["val_accuracy"] <= raw["val_accuracy"]:
        lines.append("  -> transfer does NOT beat the raw-pixel baseline on this data: the pretrained backbone is "
                     "not earning its cost here.")
    return lines
