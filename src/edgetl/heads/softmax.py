"""The article's head: one fully-connected layer + softmax on frozen features.

scikit-learn style: hyper-parameters in ``__init__`` (no logic there),
``fit`` returns ``self``, fitted attributes end in ``_``. Trained with
mini-batch Adam on standardised features (batch size ~n/50, 32..1024), L2 on the weights, early stopping on
the validation split (the best epoch's weights are kept)."""

from __future__ import annotations

import logging

import numpy as np

from .base import LinearHead
from .fitting import MIN_STEPS, prepare_training, run_epochs, softmax_nll_grad
from .fitting import Adam as _Adam
from .registry import register_head

log = logging.getLogger(__name__)

__all__ = ["SoftmaxHead", "MIN_STEPS"]


@register_head("softmax")
class SoftmaxHead(LinearHead):
    label = "softmax head"
    fast_fold_scoring = True

    def __init__(self, epochs: int = 30, batch_size: int | None = None, learning_rate: float = 1e-3,
                 l2: float = 1e-4, patience: int = 5, seed: int = 0):
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.l2 = l2
        self.patience = patience
        self.seed = seed

    def fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
            num_classes: int | None = None) -> "SoftmaxHead":
        rng = np.random.default_rng(self.seed)
        data = prepare_training(X, y, X_val, y_val, num_classes, self.batch_size, rng)
        self.mean_, self.scale_ = data.mean, data.scale
        c, d = data.num_classes, data.num_features
        # Gradients by hand: for a linear softmax they are two matrix products,
        # and skipping autograd/optimizer bookkeeping makes an epoch several
        # times faster on a phone-class CPU.
        W = rng.standard_normal((c, d), dtype=np.float32)
        W *= np.float32(0.01)
        b = np.zeros(c, np.float32)
        gW = np.empty_like(W)
        adam = _Adam([W, b], self.learning_rate)
        l2 = np.float32(self.l2)

        def step(xb, yb) -> float:
            logits = xb @ W.T
            logits += b
            total, g = softmax_nll_grad(logits, yb)
            np.matmul(g.T, xb, out=gW)
            np.add(gW, l2 * W, out=gW)  # (an in-place += would make gW local)
            adam.step([gW, g.sum(axis=0)])
            return total

        def val_logits():
            logits = data.X_val @ W.T
            logits += b
            return logits

        W, b = run_epochs(
            self, data, rng, self.epochs, self.patience, step, val_logits,
            penalty=lambda: 0.5 * self.l2 * float(np.square(W).sum(dtype=np.float64)),
            snapshot=lambda: (W.copy(), b.copy()),
        )
        self.coef_ = W.copy()
        self.intercept_ = b.copy()
        self.classes_ = np.arange(c)
        return self

    def fold_correct(self, X: np.ndarray, y: np.ndarray, folds: np.ndarray,
                     num_classes: int | None = None) -> np.ndarray:
        """The closed-form proxy (``heads.ridge``): the ridge classifier on
        the same standardised features, at the penalty that does best over
        the folds. It ranks features as a linear softmax head does, for one
        eigendecomposition per fold instead of a fit per fold."""
        from .fitting import num_classes_of
        from .ridge import kfold_correct, standardize

        correct = kfold_correct(standardize(X)[0], y, np.asarray(folds), num_classes_of(y, num_classes))
        right = correct.sum(axis=1)
        return correct[len(right) - 1 - int(np.argmax(right[::-1]))]  # ties: the stronger penalty

    def refit_params(self) -> dict:
        """Its own hyper-parameters, for as many epochs as early stopping chose."""
        return {**super().refit_params(), "epochs": max(1, int(self.best_epoch_))}
