"""Choosing between heads (and taps, input sizes) on the training data.

Small training sets give noisy single-holdout estimates, so they are
scored by stratified k-fold cross-validation; large ones use the one
holdout split the run already has (``choose_n_splits`` returns 0)."""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np

from ..data.folder import stratified_split
from .fitting import num_classes_of

MAX_SPLITS = 5
# Below either threshold a single holdout split is too noisy to rank heads.
SMALL_DATASET_IMAGES = 500
SMALL_CLASS_IMAGES = 30


def _min_class_count(y: np.ndarray) -> int:
    return int(np.unique(np.asarray(y), return_counts=True)[1].min())


def _clamp_splits(n_splits: int, y: np.ndarray) -> int:
    """No more folds than the smallest class has members, but at least 2."""
    return max(2, min(int(n_splits), _min_class_count(y)))


def choose_n_splits(y: np.ndarray, max_splits: int = MAX_SPLITS, min_images: int = SMALL_DATASET_IMAGES,
                    min_per_class: int = SMALL_CLASS_IMAGES) -> int:
    """Folds for :func:`cv_score`, or 0 for "use the single holdout split".

    k-fold (``max_splits``, fewer when the smallest class has fewer members,
    never below 2) when there are fewer than ``min_images`` labels or a class
    has fewer than ``min_per_class``; 0 otherwise."""
    y = np.asarray(y)
    if len(y) >= min_images and _min_class_count(y) >= min_per_class:
        return 0
    return _clamp_splits(max_splits, y)


def cv_scores(make_head_fn: Callable[[], object], X: np.ndarray, y: np.ndarray, n_splits: int = MAX_SPLITS,
              seed: int = 0, inner_val_fraction: float = 0.2, num_classes: int | None = None) -> list[float]:
    """Per-fold accuracy of ``make_head_fn()`` heads under stratified k-fold.

    ``n_splits`` is reduced to the smallest class's size (at least 2). The
    scored fold is never seen in fitting: with ``inner_val_fraction > 0`` a
    stratified part of the training folds is held out for the head's early
    stopping; with 0 (or when no class can spare an image) heads are fitted
    without a validation split."""
    from sklearn.model_selection import StratifiedKFold

    X = np.asarray(X)
    y = np.asarray(y, np.int64)
    num_classes = num_classes_of(y, num_classes)
    k = _clamp_splits(n_splits, y)
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    scores = []
    with warnings.catch_warnings():
        # "The least populated class in y has only 1 members": expected on tiny sets.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = list(folds.split(np.zeros(len(y)), y))
    for fold, (train_idx, test_idx) in enumerate(splits):
        fit_idx, val_idx = train_idx, train_idx[:0]
        if inner_val_fraction > 0:
            inner_fit, inner_val = stratified_split(y[train_idx], inner_val_fraction, seed + fold)
            if len(inner_val):
                fit_idx, val_idx = train_idx[inner_fit], train_idx[inner_val]
        # An empty validation split means "none" to every head.
        head = make_head_fn().fit(X[fit_idx], y[fit_idx], X[val_idx], y[val_idx], num_classes=num_classes)
        scores.append(float((head.predict(X[test_idx]) == y[test_idx]).mean()))
    return scores


def cv_score(make_head_fn: Callable[[], object], X: np.ndarray, y: np.ndarray, n_splits: int = MAX_SPLITS,
             seed: int = 0, **kwargs) -> float:
    """Mean validation accuracy over the folds of :func:`cv_scores`."""
    return float(np.mean(cv_scores(make_head_fn, X, y, n_splits, seed, **kwargs)))
