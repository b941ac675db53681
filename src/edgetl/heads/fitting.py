"""How the trained heads learn: standardisation, the batch-size rule,
Adam, the epoch loop with early stopping, and the softmax loss gradient.

torch is imported inside the functions, so importing a head stays cheap."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

MIN_STEPS = 25  # optimizer steps per epoch, at least
FLOAT32_MAX = float(np.finfo(np.float32).max)


class Adam:
    """Adam (Kingma & Ba 2015) on plain tensors, updated in place."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps, self.t = params, lr, betas, eps, 0
        self.m = [p.new_zeros(p.shape) for p in params]
        self.v = [p.new_zeros(p.shape) for p in params]

    def step(self, grads) -> None:
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            # An absurd learning rate diverges (NaN weights, refused by the run) rather than overflowing torch.
            p.addcdiv_(m, v.div(c2).sqrt_().add_(self.eps), value=-min(self.lr / c1, FLOAT32_MAX))


def default_batch_size(n: int, batch_size: int | None = None) -> int:
    """``batch_size`` if given, else ~n/50 clipped to 32..1024."""
    return batch_size or int(min(1024, max(32, n // 50)))


def standardize_(Xt):
    """Standardise the rows of the float tensor ``Xt`` in place; returns (mean, std).

    std has a floor of a tenth of the median std: a feature (almost)
    constant on the training images carries nothing to learn from, but
    divided by its own tiny std it would turn a new image that does
    activate it (on the device: a new class from another domain) into
    values of 10^6 and the head's loss with them."""
    import torch

    std, mean = torch.std_mean(Xt, dim=0, correction=0)
    std.clamp_(min=max(0.1 * float(std.median()), 1e-12))
    Xt.sub_(mean).div_(std)
    return mean, std


def num_classes_of(y: np.ndarray, num_classes: int | None) -> int:
    return int(num_classes or (int(np.max(y)) + 1))


@dataclass
class TrainingData:
    """Shuffled, standardised training rows (repeated so that an epoch has at
    least MIN_STEPS batches), the standardised validation split, and where
    each batch starts."""

    X: Any
    y: Any
    X_val: Any
    y_val: Any
    mean: np.ndarray
    scale: np.ndarray
    num_features: int
    num_classes: int
    batch_size: int
    starts: Any

    @property
    def has_val(self) -> bool:
        return self.X_val is not None


def prepare_training(X, y, X_val, y_val, num_classes: int | None, batch_size: int | None, gen) -> TrainingData:
    """Shuffle once (the one full copy of X), then standardise in place;
    torch's reductions use every core, numpy's one. Draws one ``randperm``
    from ``gen``."""
    import torch

    X = np.asarray(X, np.float32)
    y = np.asarray(y, np.int64)
    n, d = X.shape
    c = num_classes_of(y, num_classes)
    order = torch.randperm(n, generator=gen)
    Xt = torch.from_numpy(X)[order]
    yt = torch.from_numpy(y)[order]
    mean, std = standardize_(Xt)
    Xv = yv = None
    if X_val is not None and len(X_val) > 0:
        Xv = torch.from_numpy(np.asarray(X_val, np.float32)).sub(mean).div_(std)
        yv = torch.from_numpy(np.asarray(y_val, np.int64))
    batch_size = default_batch_size(n, batch_size)
    # Shuffle rows once, then visit contiguous batches in a new random
    # order each epoch: re-gathering all rows every epoch costs more than
    # the training itself at 60,000 x 1,280. A small set is repeated so an
    # epoch is at least MIN_STEPS steps: 30 single-step epochs on 30
    # images would leave the head far from converged.
    repeats = max(1, -(-MIN_STEPS * batch_size // n))
    if repeats > 1:
        Xt, yt = Xt.repeat(repeats, 1), yt.repeat(repeats)
    starts = torch.arange(0, len(yt), batch_size)
    return TrainingData(Xt, yt, Xv, yv, mean.numpy().copy(), std.numpy().copy(), d, c, batch_size, starts)


class EarlyStopping:
    """Keeps the best epoch by validation accuracy, loss breaking ties."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best = (-1.0, float("inf"))
        self.best_state = None
        self.best_epoch = 0
        self.bad_epochs = 0

    def update(self, epoch: int, val_acc: float, val_loss: float, snapshot: Callable[[], Any]) -> bool:
        """Record one epoch; True when training should stop."""
        # Accuracy first, loss breaks ties: small validation sets tie often.
        # A loss gain under 1e-3 is noise; otherwise the run never stops.
        if val_acc > self.best[0] or (val_acc == self.best[0] and val_loss < self.best[1] - 1e-3):
            self.best = (val_acc, val_loss)
            self.best_state = snapshot()
            self.best_epoch = epoch
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience


def run_epochs(head, data: TrainingData, gen, epochs: int, patience: int, step: Callable, val_logits: Callable,
               penalty: Callable[[], float], snapshot: Callable[[], Any]):
    """The mini-batch loop shared by the trained heads.

    ``step(xb, yb)`` does one optimizer step and returns the summed training
    NLL of the batch, ``val_logits()`` the logits of the validation rows,
    ``penalty()`` the regulariser's value, ``snapshot()`` a copy of the
    parameters. Sets ``head.history_``, ``best_epoch_`` and ``n_epochs_``;
    returns the parameters to keep (the best epoch's, when validating)."""
    import torch

    stopper = EarlyStopping(patience)
    head.history_ = []
    bs = data.batch_size
    for epoch in range(epochs):
        total = 0.0
        for start in data.starts[torch.randperm(len(data.starts), generator=gen)].tolist():
            total += step(data.X[start : start + bs], data.y[start : start + bs])
        record = {"epoch": epoch + 1, "train_loss": total / len(data.y) + penalty()}
        stop = False
        if data.has_val:
            vl = val_logits()
            val_loss = float(torch.nn.functional.cross_entropy(vl, data.y_val))
            val_acc = float((vl.argmax(1) == data.y_val).float().mean())
            record.update(val_loss=val_loss, val_accuracy=val_acc)
            stop = stopper.update(epoch + 1, val_acc, val_loss, snapshot)
        head.history_.append(record)
        if stop:
            break
    head.n_epochs_ = len(head.history_)
    if stopper.best_state is not None:
        head.best_epoch_ = stopper.best_epoch
        return stopper.best_state
    head.best_epoch_ = len(head.history_)
    return snapshot()


def softmax_nll_grad(logits, yb):
    """Summed NLL of a batch and d(mean NLL)/d(logits), computed in place."""
    import torch

    logp = torch.log_softmax(logits, dim=1)
    total = float(-logp.gather(1, yb[:, None]).sum())
    g = logp.exp_()
    g[torch.arange(len(yb)), yb] -= 1.0
    g /= len(yb)
    return total, g
