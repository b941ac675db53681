"""Scoring on validation data only: the protocol (k-fold for small sets,
holdout for large), which candidates are fitted (the expensive head on the
best pairs only), the score cache's key, and the holdout fit + refit."""

from __future__ import annotations

import numpy as np
import pytest

from edgetl.heads import MLPHead, NearestClassMeanHead, SoftmaxHead
from edgetl.search import (NUM_MLP_PAIRS, Candidate, ScoreCache, holdout_and_refit, make_scorer, score_candidates,
                           single_thread)


def test_selection_protocol_kfold_for_small_holdout_for_large():
    rng = np.random.default_rng(0)
    y_small = np.repeat(np.arange(3), 20)
    _, protocol = make_scorer(y_small, np.arange(45), np.arange(45, 60), 3, 0, {}, lambda k, p: p)
    assert protocol["kind"] == "kfold" and protocol["folds"] == 5
    y_large = rng.integers(0, 4, 4000)
    _, protocol = make_scorer(y_large, np.arange(3000), np.arange(3000, 4000), 4, 0, {}, lambda k, p: p)
    assert protocol == {"kind": "holdout", "train": 3000, "val": 1000,
                        "description": "fit on 3000 images, scored on the 1000 held out"}


def test_the_expensive_head_is_fitted_on_the_best_pairs_only():
    pairs = [(32, f"block{i}") for i in range(6)]
    accuracy = {pair: 0.5 + 0.05 * i for i, pair in enumerate(pairs)}  # the later the tap, the better
    live = [Candidate(size, tap, head, 8, 1, 1.0, None) for size, tap in pairs for head in ("softmax", "ncm", "mlp")]
    fitted = []

    def score(c):
        fitted.append(c)
        return accuracy[(c.image_size, c.tap)]

    score_candidates(live, score)
    mlp = [c for c in live if c.head == "mlp"]
    assert [c.head for c in fitted[: len(pairs) * 2]] == ["softmax", "ncm"] * len(pairs)  # the cheap heads first
    tried = {(c.image_size, c.tap) for c in mlp if c.val_accuracy is not None}
    assert tried == set(pairs[-NUM_MLP_PAIRS:])
    for c in mlp:
        if (c.image_size, c.tap) not in tried:
            assert c.val_accuracy is None
            assert c.note == f"not tried: the hidden-layer head is fitted on the {NUM_MLP_PAIRS} best taps only"
    # Only the expensive head asked for: every pair.
    alone = [Candidate(size, tap, "mlp", 8, 1, 1.0, None) for size, tap in pairs]
    score_candidates(alone, score)
    assert all(c.val_accuracy is not None for c in alone)


def test_score_cache_context_changes_with_what_the_score_depends_on(tmp_path):
    cache = ScoreCache(str(tmp_path))
    y, tr, va = np.array([0, 1, 0, 1]), np.array([0, 1]), np.array([2, 3])
    base = cache.context(y, tr, va, {"kind": "kfold"}, 0, {"epochs": 30})
    assert base == cache.context(y.copy(), tr, va, {"kind": "kfold"}, 0, {"epochs": 30})
    assert base != cache.context(y, tr, va, {"kind": "kfold"}, 1, {"epochs": 30})
    assert base != cache.context(y, tr, va, {"kind": "kfold"}, 0, {"epochs": 31})
    assert base != cache.context(y[::-1], tr, va, {"kind": "kfold"}, 0, {"epochs": 30})
    cache.data["k"] = 0.5
    cache.save()
    assert ScoreCache(str(tmp_path)).data == {"k": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["search-scores.json"]  # no temporary left


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 16)) * 3
    y = rng.integers(0, 3, 240)
    X = (centers[y] + rng.normal(size=(240, 16))).astype(np.float32)
    return X, y, np.arange(180), np.arange(180, 240)


@pytest.mark.parametrize("kind, cls", [("softmax", SoftmaxHead), ("ncm", NearestClassMeanHead), ("mlp", MLPHead)])
def test_holdout_then_refit_on_everything_for_the_chosen_epochs(kind, cls, blobs):
    X, y, tr, va = blobs
    kwargs = {} if kind == "ncm" else {"epochs": 40, "patience": 2, "seed": 3}
    with single_thread():
        head, shipped = holdout_and_refit(kind, kwargs, X, y, tr, va, 3)
    assert type(head) is cls and type(shipped) is cls and shipped is not head
    # The holdout head validated on the holdout; the shipped one saw every row, no validation split.
    assert "val_accuracy" in head.history_[0] and "val_accuracy" not in shipped.history_[0]
    if kind == "ncm":
        assert shipped.class_counts_.sum() == len(y) and head.class_counts_.sum() == len(tr)
    else:
        assert shipped.epochs == max(1, head.best_epoch_) and shipped.n_epochs_ == shipped.epochs
        assert {k: v for k, v in shipped.get_params().items() if k != "epochs"} == {
            k: v for k, v in head.get_params().items() if k != "epochs"}
