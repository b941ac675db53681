"""The closed-form ridge classifier (``edgetl.heads.ridge``) against
scikit-learn's Ridge on real features (digits), and the softmax head's
``fold_correct`` proxy built on it."""

from __future__ import annotations

import numpy as np
import pytest

from edgetl.heads import make_head
from edgetl.heads.ridge import ALPHAS, RidgeClassifier, kfold_correct, standardize, stratified_folds


@pytest.fixture(scope="module")
def data():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data.astype(np.float32), d.target.astype(np.int64)


def _sklearn_correct(X, y, folds, alpha):
    from sklearn.linear_model import Ridge

    out = np.zeros(len(y), bool)
    Y = np.eye(10)[y]
    for f in range(folds.max() + 1):
        test, train = folds == f, folds != f
        model = Ridge(alpha=alpha * train.sum(), fit_intercept=True, solver="cholesky").fit(X[train], Y[train])
        out[test] = model.predict(X[test]).argmax(1) == y[test]
    return out


@pytest.mark.parametrize("rows", [1797, 60])  # d <= n (Gram form) and d > n (kernel form)
def test_kfold_correct_matches_sklearn_ridge(data, rows):
    X, y = data
    X, y = standardize(X[:rows])[0], y[:rows]
    folds = stratified_folds(y, 3, seed=0)
    ours = kfold_correct(X, y, folds, 10)
    assert ours.shape == (len(ALPHAS), rows)
    for k, alpha in enumerate(ALPHAS):
        theirs = _sklearn_correct(X.astype(np.float64), y, folds, alpha)
        # float32 products: at most one borderline row may flip.
        assert (ours[k] != theirs).sum() <= 1, alpha
    assert ours.mean(axis=1).max() > 0.85


def test_stratified_folds_deal_every_class_round():
    y = np.repeat(np.arange(4), [10, 7, 5, 3])
    folds = stratified_folds(y, 3, seed=1)
    for c in range(4):
        counts = np.bincount(folds[y == c], minlength=3)
        assert counts.max() - counts.min() <= 1
    assert not np.array_equal(folds, stratified_folds(y, 3, seed=2))


def test_holdout_rows_marked_minus_one_are_only_trained_on(data):
    X, y = data
    X = standardize(X[:300])[0]
    folds = np.full(300, -1)
    folds[240:] = 0
    correct = kfold_correct(X, y[:300], folds, 10)
    assert not correct[:, :240].any()
    assert correct[:, 240:].mean(axis=1).max() > 0.8


def test_ridge_classifier_predicts_and_ranks(data):
    X, y = data
    clf = RidgeClassifier(alpha=0.1).fit(X[:1200], y[:1200])
    assert clf.coef_.shape == (10, 64) and clf.intercept_.shape == (10,)
    assert (clf.predict(X[1200:]) == y[1200:]).mean() > 0.86
    proba = clf.predict_proba(X[1200:1210])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert np.array_equal(proba.argmax(1), clf.predict(X[1200:1210]))


def test_softmax_fold_correct_uses_the_proxy_and_other_heads_fit(data):
    X, y = data
    X, y = X[:400], y[:400]
    folds = stratified_folds(y, 4, seed=0)
    soft = make_head("softmax").fold_correct(X, y, folds, 10)
    ncm = make_head("ncm").fold_correct(X, y, folds, 10)
    assert soft.dtype == bool and soft.shape == (400,) and soft.mean() > 0.85
    assert ncm.dtype == bool and ncm.shape == (400,) and ncm.mean() > 0.8
    # The proxy is the best penalty's row of kfold_correct.
    best = kfold_correct(standardize(X)[0], y, folds, 10).sum(axis=1).max()
    assert soft.sum() == best
