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


class SoftmaxState:
    """The weights of a linear softmax layer on standardised features and
    its Adam step. Gradients by hand: for a linear softmax they are two
    matrix products, and skipping autograd/optimizer bookkeeping makes an
    epoch several times faster on a phone-class CPU."""

    def __init__(self, num_classes: int, num_features: int, learning_rate: float, l2: float,
                 rng: np.random.Generator):
        self.W = rng.standard_normal((num_classes, num_features), dtype=np.float32)
        self.W *= np.float32(0.01)
        self.b = np.zeros(num_classes, np.float32)
        self._gW = np.empty_like(self.W)
        self._adam = _Adam([self.W, self.b], learning_rate)
        self._l2, self._l2_value = np.float32(l2), l2

    def step(self, xb: np.ndarray, yb: np.ndarray) -> float:
        """One Adam step on a batch; returns its summed NLL."""
        total, g = softmax_nll_grad(self.logits(xb), yb)
        np.matmul(g.T, xb, out=self._gW)
        np.add(self._gW, self._l2 * self.W, out=self._gW)  # (an in-place += would make gW local)
        self._adam.step([self._gW, g.sum(axis=0)])
        return total

    def logits(self, X: np.ndarray) -> np.ndarray:
        logits = X @ self.W.T
        logits += self.b
        return logits

    def penalty(self) -> float:
        return 0.5 * self._l2_value * float(np.square(self.W).sum(dtype=np.float64))

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        return self.W.copy(), self.b.copy()


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
        state = SoftmaxState(data.num_classes, data.num_features, self.learning_rate, self.l2, rng)
        W, b = run_epochs(
            self, data, rng, self.epochs, self.patience, state.step, lambda: state.logits(data.X_val),
            penalty=state.penalty, snapshot=state.snapshot,
        )
        self.coef_ = W.copy()
        self.intercept_ = b.copy()
        self.classes_ = np.arange(data.num_classes)
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
