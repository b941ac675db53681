"""Scoring on validation data only: the protocol (k-fold for small sets,
repeated for the smallest, holdout for large), which candidates are fitted
(the expensive head on the best pairs only), the choice (the naive head kept
unless significantly beaten), and the holdout fit + refit."""

from __future__ import annotations

import numpy as np
import pytest

from edgetl.heads import MLPHead, NearestClassMeanHead, SoftmaxHead
from edgetl.search import (NUM_MLP_PAIRS, Candidate, choose, not_worse, holdout_and_refit, make_scorer, score_candidates,
                           significantly_better, single_thread)


def test_selection_protocol_kfold_for_small_holdout_for_large():
    rng = np.random.default_rng(0)
    y_small = np.repeat(np.arange(3), 20)
    _, protocol = make_scorer(y_small, np.arange(45), np.arange(45, 60), 3, 0, {}, lambda k, p: p)
    assert protocol["kind"] == "kfold" and protocol["folds"] == 5 and protocol["repeats"] == 3
    y_mid = np.repeat(np.arange(3), 300)
    _, protocol = make_scorer(y_mid, np.arange(700), np.arange(700, 900), 3, 0, {}, lambda k, p: p)
    assert protocol["kind"] == "kfold" and protocol["folds"] == 3 and protocol["repeats"] == 1
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
        return np.full(10, accuracy[(c.image_size, c.tap)])

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


def _scored(name_tap, size, correct, macs):
    c = Candidate(size, name_tap, "softmax", 8, macs, 1.0, None)
    c.correct = np.asarray(correct, np.float64)
    c.val_accuracy = float(c.correct.mean())
    return c


def test_the_reference_is_kept_unless_significantly_beaten_or_far_cheaper():
    rng = np.random.default_rng(0)
    base = (rng.random(400) < 0.8).astype(float)
    reference = _scored("all", 224, base, 300)
    # Three more images right out of 400, for 2x fewer MACs: within the noise, not worth a change.
    lucky = base.copy()
    lucky[np.flatnonzero(base == 0)[:3]] = 1
    lucky_candidate = _scored("block14", 224, lucky, 150)
    assert not significantly_better(lucky_candidate, reference)
    assert choose([reference, lucky_candidate], reference=reference) is reference
    # Forty more right and none worse: kept no longer.
    clear = base.copy()
    clear[np.flatnonzero(base == 0)[:40]] = 1
    better = _scored("block7", 56, clear, 50)
    assert significantly_better(better, reference)
    assert choose([reference, lucky_candidate, better], reference=reference) is better
    # Among the significantly better, ties go to the cheaper.
    tie = _scored("block10", 112, clear, 80)
    assert choose([reference, tie, better], reference=reference) is better
    # Ten times cheaper and confidently within a point (one image more wrong, one more right): the device's cost wins.
    same = base.copy()
    same[np.flatnonzero(base == 1)[0]], same[np.flatnonzero(base == 0)[0]] = 0, 1
    far_cheaper = _scored("block4", 32, same, 30)
    assert not_worse(far_cheaper, reference)
    assert choose([reference, lucky_candidate, far_cheaper], reference=reference) is far_cheaper
    # ... but not when it is clearly worse, or only 5x cheaper, or the evidence is thin (40 images).
    worse = base.copy()
    worse[np.flatnonzero(base == 1)[:30]] = 0
    assert choose([reference, _scored("block2", 32, worse, 10)], reference=reference) is reference
    assert choose([reference, _scored("block4", 56, same, 60)], reference=reference) is reference
    few_ref, few = _scored("all", 224, base[:40], 300), _scored("block4", 32, same[:40], 30)
    few.correct[np.flatnonzero(base[:40] == 1)[:1]] = 0  # one more wrong of 40
    few.val_accuracy = float(few.correct.mean())
    assert not not_worse(few, few_ref) and choose([few_ref, few], reference=few_ref) is few_ref
    # Without a reference (e.g. over the budget): the best, ties to the cheaper.
    assert choose([lucky_candidate, tie]) is tie
    reference.fits_budget = False
    assert choose([reference, lucky_candidate]) is lucky_candidate


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
