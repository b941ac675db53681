"""A one-hidden-layer head: standardised features -> Linear(D, hidden) ->
ReLU -> (dropout) -> Linear(hidden, C) -> softmax.

Trained like SoftmaxHead (same shuffling, batch-size rule, Adam, L2 on the
weights, early stopping on validation accuracy then loss, best epoch kept)
with hand-written gradients: two layers are still only a few matrix
products, and without autograd an epoch is cheaper and bit-for-bit
deterministic for a seed. Dropout masks come from the head's own generator
(numpy's, seeded with ``seed``)."""

from __future__ import annotations

import math

import numpy as np

from .base import Head
from .fitting import Adam, prepare_training, run_epochs, softmax_nll_grad
from .registry import register_head


@register_head("mlp")
class MLPHead(Head):
    label = "hidden-layer head"
    expensive = True  # the search fits it on the best few (size, tap) pairs only

    def __init__(self, hidden: int = 256, epochs: int = 50, batch_size: int | None = None,
                 learning_rate: float = 1e-3, l2: float = 1e-4, dropout: float = 0.0, patience: int = 5,
                 seed: int = 0):
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.l2 = l2
        self.dropout = dropout
        self.patience = patience
        self.seed = seed

    def fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
            num_classes: int | None = None) -> "MLPHead":
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"MLPHead.dropout must be in [0, 1), got {self.dropout!r}")
        rng = np.random.default_rng(self.seed)
        data = prepare_training(X, y, X_val, y_val, num_classes, self.batch_size, rng)
        self.mean_, self.scale_ = data.mean, data.scale
        c, d, h = data.num_classes, data.num_features, int(self.hidden)
        # He initialisation for the ReLU layer; unit-variance logits at the start.
        W1 = rng.standard_normal((h, d), dtype=np.float32)
        W1 *= np.float32(math.sqrt(2.0 / d))
        b1 = np.zeros(h, np.float32)
        W2 = rng.standard_normal((c, h), dtype=np.float32)
        W2 *= np.float32(math.sqrt(1.0 / h))
        b2 = np.zeros(c, np.float32)
        gW1, gW2, scratch = np.empty_like(W1), np.empty_like(W2), np.empty_like(W1)
        adam = Adam([W1, b1, W2, b2], self.learning_rate)
        keep = 1.0 - self.dropout
        l2 = np.float32(self.l2)

        def step(xb, yb) -> float:
            hid = xb @ W1.T
            hid += b1
            np.maximum(hid, 0, out=hid)
            if keep < 1.0:
                hid *= rng.random(hid.shape, dtype=np.float32) < keep
                hid *= np.float32(1.0 / keep)
            logits = hid @ W2.T
            logits += b2
            total, g = softmax_nll_grad(logits, yb)
            # Through ReLU and dropout: a unit passes gradient iff its output
            # is positive, scaled by 1/keep like its value.
            dh = g @ W2
            dh *= hid > 0
            if keep < 1.0:
                dh *= np.float32(1.0 / keep)
            np.matmul(dh.T, xb, out=gW1)
            np.multiply(W1, l2, out=scratch)
            np.add(gW1, scratch, out=gW1)  # (an in-place += would make gW1 local)
            np.matmul(g.T, hid, out=gW2)
            np.add(gW2, l2 * W2, out=gW2)
            adam.step([gW1, dh.sum(axis=0), gW2, g.sum(axis=0)])
            return total

        def val_logits():
            hid = data.X_val @ W1.T
            hid += b1
            logits = np.maximum(hid, 0, out=hid) @ W2.T
            logits += b2
            return logits

        def penalty() -> float:
            return 0.5 * self.l2 * float(np.square(W1).sum(dtype=np.float64) + np.square(W2).sum(dtype=np.float64))

        W1, b1, W2, b2 = run_epochs(
            self, data, rng, self.epochs, self.patience, step, val_logits, penalty,
            snapshot=lambda: (W1.copy(), b1.copy(), W2.copy(), b2.copy()),
        )
        self.coefs_ = [W1.copy(), W2.copy()]
        self.intercepts_ = [b1.copy(), b2.copy()]
        self.classes_ = np.arange(c)
        return self

    @classmethod
    def params_for_run(cls, head_params: dict) -> dict:
        """The run's settings but ``epochs``: two layers take longer to converge, so it keeps its own default."""
        params = dict(head_params)
        params.pop("epochs", None)
        return params

    def refit_params(self) -> dict:
        """Its own hyper-parameters, for as many epochs as early stopping chose."""
        return {**super().refit_params(), "epochs": max(1, int(self.best_epoch_))}

    def layer_shapes(self, dim: int, num_classes: int) -> list[tuple[int, int]]:
        return [(int(self.hidden), dim), (num_classes, int(self.hidden))]

    def _layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return list(zip(self.coefs_, self.intercepts_))
