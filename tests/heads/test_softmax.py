"""The softmax head on synthetic blobs with features of very different
scales: fit, predict, folding the standardisation, determinism, early stopping."""

from __future__ import annotations

import numpy as np

from edgetl.heads.softmax import SoftmaxHead


def _blobs(n, d=64, c=4, seed=0, spread=3.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(c, d)) * spread
    y = rng.integers(0, c, n)
    return (centers[y] + rng.normal(size=(n, d)) * rng.uniform(0.5, 20, d)).astype(np.float32), y


def test_fit_predict_and_folding():
    X, y = _blobs(800)
    X, y, Xv, yv = X[:600], y[:600], X[600:], y[600:]
    head = SoftmaxHead(epochs=40, seed=0).fit(X, y, Xv, yv)
    assert head is not None and head.coef_.shape == (4, 64) and head.intercept_.shape == (4,)
    assert (head.predict(Xv) == yv).mean() > 0.9
    proba = head.predict_proba(Xv)
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)
    W, b = head.folded()
    np.testing.assert_allclose(Xv @ W.T + b, head.decision_function(Xv), rtol=1e-3, atol=1e-3)
    assert 1 <= head.best_epoch_ <= head.n_epochs_ <= 40


def test_deterministic_for_seed():
    X, y = _blobs(300)
    a = SoftmaxHead(epochs=5, seed=3).fit(X, y, X[:50], y[:50])
    b = SoftmaxHead(epochs=5, seed=3).fit(X, y, X[:50], y[:50])
    np.testing.assert_array_equal(a.coef_, b.coef_)


def test_early_stopping_keeps_best_epoch():
    # Few samples, many noisy dimensions: the validation loss turns up soon.
    X, y = _blobs(140, d=500, spread=0.5)
    X, y, Xv, yv = X[:40], y[:40], X[40:], y[40:]
    head = SoftmaxHead(epochs=200, patience=3, l2=0.0, seed=0).fit(X, y, Xv, yv)
    assert head.n_epochs_ < 200
    best = max(h["val_accuracy"] for h in head.history_)
    assert abs((head.predict(Xv) == yv).mean() - best) < 1e-6
