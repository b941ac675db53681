"""Nearest class mean: no training loop, one pass over the features.

Features are standardised with the training mean and scale (as in
SoftmaxHead); each class is represented by its mean ``mu_c`` in that space.
The decision is the negative squared distance up to a per-row constant:

    -||z - mu_c||^2 = 2 mu_c . z - ||mu_c||^2 - ||z||^2

and ``-||z||^2`` is the same for every class, so argmax and softmax are
unchanged when it is dropped. What remains is linear: ``coef_ = 2 mu``,
``intercept_ = -||mu||^2``, so the head folds into one Gemm like the
softmax head."""

from __future__ import annotations

import numpy as np

from .base import LinearHead
from .fitting import CHUNK_ROWS, feature_stats, num_classes_of
from .registry import register_head

# Logit offset of a class with no training images: never predicted, still finite.
ABSENT_CLASS_LOGIT = -1e30


@register_head("ncm")
class NearestClassMeanHead(LinearHead):
    """No hyper-parameters; ``fit`` ignores the validation split except to
    record its accuracy in ``history_``."""

    label = "nearest-class-mean head"

    def __init__(self):
        pass

    @classmethod
    def params_for_run(cls, head_params: dict) -> dict:
        """None: nothing to tune, no epochs."""
        return {}

    def fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
            num_classes: int | None = None) -> "NearestClassMeanHead":
        y = np.asarray(y, np.int64)
        c = num_classes_of(y, num_classes)
        X = np.asarray(X)
        self.mean_, self.scale_ = feature_stats(X)
        counts = np.bincount(y, minlength=c)
        # The class means of the raw features, then standardised: in float64
        # a block of rows at a time, with no copy of X.
        sums = np.zeros((c, X.shape[1]), np.float64)
        for i in range(0, len(y), CHUNK_ROWS):
            block = X[i : i + CHUNK_ROWS].astype(np.float32, copy=False)
            onehot = np.zeros((len(block), c), np.float64)
            onehot[np.arange(len(block)), y[i : i + CHUNK_ROWS]] = 1.0
            sums += onehot.T @ block.astype(np.float64)
        present = counts > 0
        means = np.zeros_like(sums)
        means[present] = (sums[present] / counts[present, None] - self.mean_) / self.scale_
        self.class_means_ = means.astype(np.float32)
        self.class_counts_ = counts
        self.coef_ = (2.0 * means).astype(np.float32)
        intercept = -(means**2).sum(1)
        intercept[~present] = ABSENT_CLASS_LOGIT
        self.intercept_ = intercept.astype(np.float32)
        self.classes_ = np.arange(c)
        self.history_ = [{"epoch": 1}]
        if X_val is not None and len(X_val) > 0:
            self.history_[0]["val_accuracy"] = float((self.predict(X_val) == np.asarray(y_val)).mean())
        self.best_epoch_ = self.n_epochs_ = 1
        return self
