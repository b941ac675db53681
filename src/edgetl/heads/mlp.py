"""A one-hidden-layer head: standardised features -> Linear(D, hidden) ->
ReLU -> (dropout) -> Linear(hidden, C) -> softmax.

Trained like SoftmaxHead (same shuffling, batch-size rule, Adam, L2 on the
weights, early stopping on validation accuracy then loss, best epoch kept)
with hand-written gradients: two layers are still only a few matrix
products, and without autograd an epoch is cheaper and bit-for-bit
deterministic for a seed. Dropout masks come from the head's own generator."""

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
        import torch

        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"MLPHead.dropout must be in [0, 1), got {self.dropout!r}")
        gen = torch.Generator().manual_seed(self.seed)
        data = prepare_training(X, y, X_val, y_val, num_classes, self.batch_size, gen)
        self.mean_, self.scale_ = data.mean, data.scale
        c, d, h = data.num_classes, data.num_features, int(self.hidden)
        # He initialisation for the ReLU layer; unit-variance logits at the start.
        W1 = torch.randn(h, d, generator=gen) * math.sqrt(2.0 / d)
        b1 = torch.zeros(h)
        W2 = torch.randn(c, h, generator=gen) * math.sqrt(1.0 / h)
        b2 = torch.zeros(c)
        adam = Adam([W1, b1, W2, b2], self.learning_rate)
        keep = 1.0 - self.dropout

        def step(xb, yb) -> float:
            hid = torch.addmm(b1, xb, W1.T).clamp_(min=0)
            if keep < 1.0:
                hid.mul_(torch.empty_like(hid).bernoulli_(keep, generator=gen).div_(keep))
            total, g = softmax_nll_grad(torch.addmm(b2, hid, W2.T), yb)
            # Through ReLU and dropout: a unit passes gradient iff its output
            # is positive, scaled by 1/keep like its value.
            dh = (g @ W2).mul_(hid > 0)
            if keep < 1.0:
                dh.div_(keep)
            adam.step([torch.addmm(W1, dh.T, xb, beta=self.l2), dh.sum(0),
                       torch.addmm(W2, g.T, hid, beta=self.l2), g.sum(0)])
            return total

        def val_logits():
            return torch.addmm(b2, torch.addmm(b1, data.X_val, W1.T).clamp_(min=0), W2.T)

        W1, b1, W2, b2 = run_epochs(
            self, data, gen, self.epochs, self.patience, step, val_logits,
            penalty=lambda: 0.5 * self.l2 * float(W1.pow(2).sum() + W2.pow(2).sum()),
            snapshot=lambda: (W1.clone(), b1.clone(), W2.clone(), b2.clone()),
        )
        self.coefs_ = [W1.numpy().copy(), W2.numpy().copy()]
        self.intercepts_ = [b1.numpy().copy(), b2.numpy().copy()]
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
