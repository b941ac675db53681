"""How candidates are scored on validation data only: k-fold for small
sets, the run's holdout split for large ones; the cache of scores already
computed; and the holdout fit + refit on everything that ships."""

from __future__ import annotations

import contextlib
import hashlib
import json

import numpy as np

from ..heads import head_class
from .cache import JsonCache

NUM_MLP_PAIRS = 3  # an expensive head (the hidden-layer one) is tried on this many best (size, tap) pairs
KFOLD_BELOW_IMAGES = 2000  # k-fold selection below this many labeled images (holdout above)
MAX_FOLDS = 5
FEWER_FOLDS_ABOVE = 500


@contextlib.contextmanager
def single_thread():
    """Heads on small problems gain nothing from a second thread, and
    spinning BLAS/OpenMP workers slow them many times when the cores are shared."""
    import torch
    from threadpoolctl import threadpool_limits

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(old)


def make_scorer(y: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray, num_classes: int, seed: int,
                head_params: dict, head_kwargs, kfold_below: int = KFOLD_BELOW_IMAGES):
    """(score(X, kind) -> accuracy, protocol dict). k-fold over every labeled
    image when there are fewer than ``kfold_below``; otherwise fit on the
    train split, score on the holdout split. ``head_kwargs(kind, head_params)``
    gives a kind's hyper-parameters (``Search.head_kwargs``)."""
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


def score_candidates(live: list, score) -> None:
    """Set ``val_accuracy`` of the candidates ``live`` with ``score(candidate)``.

    Heads that are cheap to fit are scored on every (size, tap); an
    expensive one (``Head.expensive``: the hidden-layer head) only on the
    NUM_MLP_PAIRS pairs where the cheap heads did best (on every pair when
    no cheap head is tried); the others get a note instead."""
    cheap = [c for c in live if not head_class(c.head).expensive]
    for c in cheap:
        c.val_accuracy = score(c)
    pair_score: dict[tuple[int, str], float] = {}
    for c in cheap:
        key = (c.image_size, c.tap)
        pair_score[key] = max(pair_score.get(key, -1.0), c.val_accuracy)
    expensive = [c for c in live if head_class(c.head).expensive]
    best_pairs = (set(sorted(pair_score, key=lambda k: -pair_score[k])[:NUM_MLP_PAIRS]) if cheap
                  else {(c.image_size, c.tap) for c in expensive})
    for c in expensive:
        if (c.image_size, c.tap) in best_pairs:
            c.val_accuracy = score(c)
        else:
            c.note = f"not tried: the {head_class(c.head).label} is fitted on the {NUM_MLP_PAIRS} best taps only"


def holdout_and_refit(kind: str, kwargs: dict, X: np.ndarray, y: np.ndarray, train_idx: np.ndarray,
                      val_idx: np.ndarray, num_classes: int):
    """(head of ``kind`` with hyper-parameters ``kwargs``, fitted on the train
    split and early-stopped on the holdout; the same head refitted on all
    rows, ``Head.refit_all``: for the epochs early stopping chose). The first
    gives honest validation figures; the second is what ships: selection
    done, no labeled image is left unused."""
    from ..heads import make_head

    head = make_head(kind, **kwargs).fit(X[train_idx], y[train_idx], X[val_idx], y[val_idx],
                                         num_classes=num_classes)
    return head, head.refit_all(X, y, num_classes=num_classes)


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
