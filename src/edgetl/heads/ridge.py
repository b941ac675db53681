"""Closed-form ridge classification: least squares on one-hot targets with
an L2 penalty, every penalty strength from one eigendecomposition.

Two users, one solver:

* the search ranks features (input size x tap) by the k-fold accuracy of
  this classifier (:func:`kfold_correct`): for a linear softmax head it is a
  faithful and ~100x cheaper proxy, since a fold costs one
  eigendecomposition however many penalty strengths are tried, where a
  gradient-trained head costs a fit per fold and per strength;
* the raw-pixel baseline is this classifier on standardised pixels
  (:class:`RidgeClassifier`).

With ``d`` features and ``n`` training rows, the decomposition is of the
``d x d`` Gram matrix when ``d <= n`` and of the ``n x n`` kernel matrix
otherwise, so its cost is ``min(n, d)^3`` plus one pass over the rows.
Products run in float32 (features are float32; the ranking does not need
more), the decomposition in float64."""

from __future__ import annotations

import numpy as np

# Penalty strengths, as a fraction of the training rows: on standardised
# features the Gram matrix's diagonal is ~n, so alpha * n is scale-free.
ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


def standardize(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(standardised float32 copy of ``X``, mean, std): the heads'
    standardisation (``heads.fitting.standardize_``, std floored) on a copy."""
    from .fitting import standardize_

    Xs = np.array(X, np.float32)
    mean, std = standardize_(Xs)
    return Xs, mean, std


def _one_hot(y: np.ndarray, num_classes: int) -> np.ndarray:
    return np.eye(num_classes, dtype=np.float32)[np.asarray(y, np.int64)]


def _scores_per_strength(Xtr: np.ndarray, Ytr: np.ndarray, Xte: np.ndarray, strengths) -> list[np.ndarray]:
    """Decision scores of the rows ``Xte`` for each penalty in ``strengths``,
    by ridge regressions (with intercept) of ``Ytr`` on ``Xtr``."""
    mx, my = Xtr.mean(axis=0), Ytr.mean(axis=0)
    Xc, Yc, Xt = Xtr - mx, Ytr - my, Xte - mx
    n, d = Xc.shape
    if d <= n:
        s, V = np.linalg.eigh((Xc.T @ Xc).astype(np.float64))
        B, P = V.T @ (Xc.T @ Yc).astype(np.float64), Xt @ V.astype(np.float32)
    else:  # fewer rows than features: the kernel form
        s, U = np.linalg.eigh((Xc @ Xc.T).astype(np.float64))
        B, P = U.T @ Yc.astype(np.float64), (Xt @ Xc.T) @ U.astype(np.float32)
    s = np.maximum(s, 0.0)
    return [(P / (s + lam).astype(np.float32)) @ B.astype(np.float32) + my for lam in strengths]


def kfold_correct(X: np.ndarray, y: np.ndarray, folds: np.ndarray, num_classes: int,
                  alphas=ALPHAS) -> np.ndarray:
    """``(len(alphas), n)`` booleans: was row i classified right by the
    ridge classifier fitted without its fold, at each penalty ``alphas[k] *
    n_train``. ``folds[i]`` is row i's fold (0, 1, ...); a row with fold -1
    is only ever trained on (the holdout protocol: train rows -1, val rows 0).
    Rows scored by no fold stay False. ``X`` should be standardised."""
    X = np.asarray(X, np.float32)
    y = np.asarray(y, np.int64)
    Y = _one_hot(y, num_classes)
    out = np.zeros((len(alphas), len(y)), bool)
    for f in range(int(folds.max()) + 1):
        test = folds == f
        train = ~test
        if not test.any() or not train.any():
            continue
        n_train = int(train.sum())
        scores = _scores_per_strength(X[train], Y[train], X[test], [a * n_train for a in alphas])
        for k, sc in enumerate(scores):
            out[k, test] = sc.argmax(axis=1) == y[test]
    return out


def stratified_folds(y: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Each row's fold in 0..k-1, every class dealt round the folds in a
    random order (stratified k-fold)."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    folds = np.empty(len(y), np.int64)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        folds[idx] = (np.arange(len(idx)) + int(rng.integers(k))) % k
    return folds


class RidgeClassifier:
    """Standardise, then ridge regression on one-hot targets; the class is
    the largest score. ``alpha`` is the penalty as a fraction of the rows."""

    def __init__(self, alpha: float = 0.1):
        self.alpha = alpha

    def fit(self, X: np.ndarray, y: np.ndarray, num_classes: int | None = None) -> "RidgeClassifier":
        Xs, self.mean_, self.scale_ = standardize(X)
        y = np.asarray(y, np.int64)
        c = int(num_classes or y.max() + 1)
        Y = _one_hot(y, c)
        mx, my = Xs.mean(axis=0), Y.mean(axis=0)
        Xc = (Xs - mx).astype(np.float64)
        n, d = Xc.shape
        lam = self.alpha * n
        if d <= n:
            W = np.linalg.solve(Xc.T @ Xc + lam * np.eye(d), Xc.T @ (Y - my))
        else:
            W = Xc.T @ np.linalg.solve(Xc @ Xc.T + lam * np.eye(n), Y - my)
        self.coef_ = W.T.astype(np.float32)  # (classes, features), like the heads
        self.intercept_ = (my - mx @ W).astype(np.float32)
        self.classes_ = np.arange(c)
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        Xs = (np.asarray(X, np.float32) - self.mean_) / self.scale_
        return Xs @ self.coef_.T + self.intercept_

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.decision_function(X).argmax(axis=1)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """A softmax of the scores: a ranking, not calibrated probabilities."""
        z = self.decision_function(X)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)
