"""How the trained heads learn: standardisation, the batch-size rule,
Adam, the epoch loop with early stopping, and the softmax loss gradient.

numpy only, float32 throughout: the head path needs no torch (importing it
costs ~1 s and ~225 MB per process). Randomness comes from one
``numpy.random.Generator`` per fit (``default_rng(seed)``): the same seed
gives the same head."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..events import emit

MIN_STEPS = 25  # optimizer steps per epoch, at least
FLOAT32_MAX = float(np.finfo(np.float32).max)
CHUNK_ROWS = 4096  # rows per block when a pass over X needs a temporary


class Adam:
    """Adam (Kingma & Ba 2015) on float32 arrays, updated in place.

    The moments are kept without their (1 - beta) factors, ``M = m / (1 -
    b1)`` and ``V = v / (1 - b2)``, so that ``p -= lr/c1 * m / (sqrt(v/c2)
    + eps)`` is the equal ``p -= (s * M) / (sqrt(V) + e)`` with scalars ``s``
    and ``e``: ten passes over each parameter, into two preallocated scratch
    arrays. ``s * M`` first, as torch's ``addcdiv``: an absurd step size
    overflows to Inf/Inf = NaN instead of vanishing into M/Inf = 0."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps, self.t = params, lr, betas, eps, 0
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.tmp = [(np.empty_like(p), np.empty_like(p)) for p in params]

    def step(self, grads) -> None:
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        root = math.sqrt(c2 / (1 - b2))
        # An absurd learning rate diverges (NaN/Inf weights, refused by the
        # run) rather than overflowing: the step size stays a finite float32.
        size = np.float32(min(self.lr * (1 - b1) / c1 * root, FLOAT32_MAX))
        eps = np.float32(self.eps * root)
        f1, f2 = np.float32(b1), np.float32(b2)
        for p, g, m, v, (tmp, step) in zip(self.params, grads, self.m, self.v, self.tmp):
            m *= f1
            m += g
            v *= f2
            np.multiply(g, g, out=tmp)
            v += tmp
            np.sqrt(v, out=tmp)
            tmp += eps
            np.multiply(m, size, out=step)
            step /= tmp
            p -= step


def default_batch_size(n: int, batch_size: int | None = None) -> int:
    """``batch_size`` if given, else ~n/50 clipped to 32..1024."""
    return batch_size or int(min(1024, max(32, n // 50)))


def feature_stats(X: np.ndarray, center: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of the columns of ``X`` as float32; sums in float64, a
    block of rows at a time (no float64 copy of X). ``center=True`` also
    subtracts the mean from ``X`` in place (a float32 array), sparing the
    temporary of each block.

    std has a floor of a tenth of the median std: a feature (almost)
    constant on the training images carries nothing to learn from, but
    divided by its own tiny std it would turn a new image that does
    activate it (on the device: a new class from another domain) into
    values of 10^6 and the head's loss with them."""
    n, d = X.shape
    total = np.zeros(d, np.float64)
    for i in range(0, n, CHUNK_ROWS):
        total += X[i : i + CHUNK_ROWS].sum(axis=0, dtype=np.float64)
    mean = (total / max(n, 1)).astype(np.float32)
    resid, sq = np.zeros(d, np.float64), np.zeros(d, np.float64)
    for i in range(0, n, CHUNK_ROWS):
        block = X[i : i + CHUNK_ROWS]
        if center:
            block -= mean
        else:
            block = block - mean
        resid += block.sum(axis=0, dtype=np.float64)
        sq += np.square(block).sum(axis=0, dtype=np.float64)
    # Deviations from the float32 mean: remove what its rounding left over.
    resid /= max(n, 1)
    std = np.sqrt(np.maximum(sq / max(n, 1) - resid**2, 0.0)).astype(np.float32)
    std = np.maximum(std, np.float32(max(0.1 * float(np.median(std)), 1e-12)))
    return mean, std


def standardize_(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standardise the rows of the float32 array ``X`` in place; returns
    (mean, std), std floored as :func:`feature_stats` says."""
    mean, std = feature_stats(X, center=True)
    X /= std
    return mean, std


def num_classes_of(y: np.ndarray, num_classes: int | None) -> int:
    return int(num_classes or (int(np.max(y)) + 1))


@dataclass
class TrainingData:
    """Shuffled, standardised training rows (repeated so that an epoch has at
    least MIN_STEPS batches), the standardised validation split, and where
    each batch starts."""

    X: np.ndarray
    y: np.ndarray
    X_val: np.ndarray | None
    y_val: np.ndarray | None
    mean: np.ndarray
    scale: np.ndarray
    num_features: int
    num_classes: int
    batch_size: int
    starts: np.ndarray

    @property
    def has_val(self) -> bool:
        return self.X_val is not None


def shuffled_float32(X, order: np.ndarray) -> np.ndarray:
    """``X[order]`` as a new C-contiguous float32 array, gathered a block of
    rows at a time: whatever ``X``'s dtype, this is its one full copy."""
    X = np.asarray(X)
    out = np.empty((len(order), X.shape[1]), np.float32)
    if X.dtype == np.float32:
        np.take(X, order, axis=0, out=out, mode="clip")  # (mode="raise" would gather into a temporary copy)
    else:
        for i in range(0, len(order), CHUNK_ROWS):
            out[i : i + CHUNK_ROWS] = X[order[i : i + CHUNK_ROWS]]
    return out


def prepare_training(X, y, X_val, y_val, num_classes: int | None, batch_size: int | None,
                     rng: np.random.Generator) -> TrainingData:
    """Shuffle once (the one full copy of X), then standardise in place.
    Draws one permutation from ``rng``."""
    y = np.asarray(y, np.int64)
    n, d = np.shape(X)
    c = num_classes_of(y, num_classes)
    order = rng.permutation(n)
    Xs = shuffled_float32(X, order)
    ys = y[order]
    mean, std = standardize_(Xs)
    Xv = yv = None
    if X_val is not None and len(X_val) > 0:
        Xv = np.asarray(X_val, np.float32) - mean
        Xv /= std
        yv = np.asarray(y_val, np.int64)
    batch_size = default_batch_size(n, batch_size)
    # Shuffle rows once, then visit contiguous batches in a new random
    # order each epoch: re-gathering all rows every epoch costs more than
    # the training itself at 60,000 x 1,280. A small set is repeated so an
    # epoch is at least MIN_STEPS steps: 30 single-step epochs on 30
    # images would leave the head far from converged.
    repeats = max(1, -(-MIN_STEPS * batch_size // n))
    if repeats > 1:
        Xs, ys = np.tile(Xs, (repeats, 1)), np.tile(ys, repeats)
    starts = np.arange(0, len(ys), batch_size)
    return TrainingData(Xs, ys, Xv, yv, mean, std, d, c, batch_size, starts)


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


def run_epochs(head, data: TrainingData, rng: np.random.Generator, epochs: int, patience: int, step: Callable,
               val_logits: Callable, penalty: Callable[[], float], snapshot: Callable[[], Any]):
    """The mini-batch loop shared by the trained heads.

    ``step(xb, yb)`` does one optimizer step and returns the summed training
    NLL of the batch, ``val_logits()`` the logits of the validation rows,
    ``penalty()`` the regulariser's value, ``snapshot()`` a copy of the
    parameters. Sets ``head.history_``, ``best_epoch_`` and ``n_epochs_``;
    returns the parameters to keep (the best epoch's, when validating)."""
    stopper = EarlyStopping(patience)
    head.history_ = []
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # a diverging run ends in NaN, refused later
        _epochs(head, data, rng, epochs, step, val_logits, penalty, snapshot, stopper)
    head.n_epochs_ = len(head.history_)
    if stopper.best_state is not None:
        head.best_epoch_ = stopper.best_epoch
        return stopper.best_state
    head.best_epoch_ = len(head.history_)
    return snapshot()


def _epochs(head, data: TrainingData, rng: np.random.Generator, epochs: int, step: Callable, val_logits: Callable,
            penalty: Callable[[], float], snapshot: Callable[[], Any], stopper: EarlyStopping) -> None:
    bs = data.batch_size
    for epoch in range(epochs):
        total = 0.0
        for start in data.starts[rng.permutation(len(data.starts))].tolist():
            total += step(data.X[start : start + bs], data.y[start : start + bs])
        record = {"epoch": epoch + 1, "train_loss": total / len(data.y) + penalty()}
        stop = False
        if data.has_val:
            vl = val_logits()
            val_acc = float((vl.argmax(1) == data.y_val).mean())
            val_loss = softmax_nll_grad(vl, data.y_val)[0] / len(data.y_val)
            record.update(val_loss=val_loss, val_accuracy=val_acc)
            stop = stopper.update(epoch + 1, val_acc, val_loss, snapshot)
        head.history_.append(record)
        emit("epoch", **{k: (round(float(v), 6) if isinstance(v, float) else v) for k, v in record.items()})
        if stop:
            break


def softmax_nll_grad(logits: np.ndarray, yb: np.ndarray) -> tuple[float, np.ndarray]:
    """Summed NLL of a batch and d(mean NLL)/d(logits), computed in
    ``logits`` (overwritten: it becomes the gradient)."""
    rows = np.arange(len(yb))
    logits -= logits.max(axis=1, keepdims=True)
    picked = logits[rows, yb]
    np.exp(logits, out=logits)
    s = logits.sum(axis=1, keepdims=True)
    total = float(np.log(s).sum(dtype=np.float64) - picked.sum(dtype=np.float64))
    logits /= s
    logits[rows, yb] -= 1.0
    logits /= np.float32(len(yb))
    return total, logits
