"""Choosing between heads on the training data: stratified k-fold for
small sets (``edgetl.heads.selection``), on the digits features."""

from __future__ import annotations

import numpy as np
import pytest

from edgetl.heads import HEAD_KINDS, NearestClassMeanHead, SoftmaxHead, make_head
from edgetl.heads.selection import choose_n_splits, cv_score, cv_scores


def test_choose_n_splits():
    assert choose_n_splits(np.repeat(np.arange(10), 100)) == 0  # 1,000 images, 100 a class
    assert choose_n_splits(np.repeat(np.arange(4), 50)) == 5  # 200 images
    assert choose_n_splits(np.repeat(np.arange(40), 20)) == 5  # 800 images, 20 a class
    assert choose_n_splits(np.r_[np.zeros(100), np.ones(3)]) == 3  # the small class limits the folds
    assert choose_n_splits(np.r_[np.zeros(100), np.ones(1)]) == 2  # never below 2


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_cv_score_uses_all_folds(kind, features):
    X, y = features["train"]
    X, y = X[:300], y[:300]
    calls = []

    def make():
        calls.append(1)
        return make_head(kind, **({} if kind == "ncm" else {"epochs": 5}))

    scores = cv_scores(make, X, y, n_splits=4, seed=0)
    assert len(scores) == len(calls) == 4 and all(0.0 <= s <= 1.0 for s in scores)
    score = cv_score(lambda: make_head(kind, **({} if kind == "ncm" else {"epochs": 5})), X, y, 4, 0)
    assert 0.0 <= score <= 1.0 and score == pytest.approx(np.mean(scores))
    assert score > 0.7


def test_cv_score_reduces_splits_for_small_classes(features):
    X, y = features["train"]
    idx = np.r_[np.flatnonzero(y == 0)[:3], np.flatnonzero(y == 1)[:20], np.flatnonzero(y == 2)[:20]]
    scores = cv_scores(NearestClassMeanHead, X[idx], y[idx], n_splits=5, seed=0, num_classes=3)
    assert len(scores) == 3
    scores = cv_scores(lambda: SoftmaxHead(epochs=2), X[idx], y[idx], n_splits=5, inner_val_fraction=0.0)
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)
