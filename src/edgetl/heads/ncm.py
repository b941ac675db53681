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
from .fitting import num_classes_of, standardize_
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
        import torch

        y = np.asarray(y, np.int64)
        c = num_classes_of(y, num_classes)
        Xt = torch.tensor(np.asarray(X, np.float32))  # a copy: standardised in place
        mean, std = standardize_(Xt)
        self.mean_, self.scale_ = mean.numpy().copy(), std.numpy().copy()
        yt = torch.from_numpy(y)
        counts = torch.bincount(yt, minlength=c)
        # Class by class, accumulated in float64: no float64 copy of all of X.
        means = torch.zeros(c, Xt.shape[1], dtype=torch.float64)
        for k in torch.nonzero(counts).flatten().tolist():
            means[k] = Xt[yt == k].sum(0, dtype=torch.float64) / counts[k]
        self.class_means_ = means.float().numpy()
        self.class_counts_ = counts.numpy()
        self.coef_ = (2.0 * means).float().numpy()
        intercept = -(means**2).sum(1)
        intercept[counts == 0] = ABSENT_CLASS_LOGIT
        self.intercept_ = intercept.float().numpy()
        self.classes_ = np.arange(c)
        self.history_ = [{"epoch": 1}]
        if X_val is not None and len(X_val) > 0:
            self.history_[0]["val_accuracy"] = float((self.predict(X_val) == np.asarray(y_val)).mean())
        self.best_epoch_ = self.n_epochs_ = 1
        return self
