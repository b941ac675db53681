"""The softmax head fitted on more features than fit in memory.

The features arrive a block of rows at a time (a Parquet row group,
``features.parquet``), in the order they were written: usually one class
after another, which mini-batches must not see. So, as the in-memory head
does (``fitting.prepare_training``: shuffle once, then visit contiguous
batches in a new order each epoch), the rows are shuffled once on disk:
one pass deals every training row to one of ``parts`` files at random
(an external shuffle), kept in the storage dtype (float16 halves the disk
and the reads), and accumulates the standardisation in float64 on the way;
then each part's rows are put in a random order once. Each epoch reads
the parts in a new random order, one at a time (into one reused float32
buffer), and takes its contiguous mini-batches in a new random order. The
validation rows are spilled too, unshuffled, and scored a part at a time.

What is held at once is one part (SPILL_PART_BYTES of stored features, as
float32 while it is used), the head and its Adam moments: the same for 10
thousand and for 10 million rows. The step is the in-memory head's
(``softmax.SoftmaxState``), the epoch loop keeps its early stopping
(``fitting.EarlyStopping``); the result is a plain ``SoftmaxHead``."""

from __future__ import annotations

import os
import tempfile
import time
from typing import Callable, Iterable, Iterator

import numpy as np

from ..events import emit
from .fitting import MIN_STEPS, EarlyStopping, default_batch_size, num_classes_of, softmax_nll_grad
from .softmax import SoftmaxHead, SoftmaxState

SPILL_PART_BYTES = 64 << 20  # stored feature bytes per part of the on-disk shuffle


class _Spill:
    """Rows dealt to ``num_parts`` files (features in their stored dtype, labels int32)."""

    def __init__(self, folder: str, name: str, dim: int, dtype, num_parts: int):
        self.dim, self.dtype, self.num_parts = dim, np.dtype(dtype), num_parts
        self.paths = [os.path.join(folder, f"{name}-{p}") for p in range(num_parts)]
        for path in self.paths:
            for suffix in (".x", ".y"):
                open(path + suffix, "wb").close()
        self.rows = np.zeros(num_parts, np.int64)
        self._buffer: np.ndarray | None = None  # one part as float32, reused

    def add(self, feats: np.ndarray, labels: np.ndarray, parts: np.ndarray) -> None:
        order = np.argsort(parts, kind="stable")
        bounds = np.searchsorted(parts[order], np.arange(self.num_parts + 1))
        for p in range(self.num_parts):
            rows = order[bounds[p] : bounds[p + 1]]
            if not len(rows):
                continue
            with open(self.paths[p] + ".x", "ab") as fx, open(self.paths[p] + ".y", "ab") as fy:
                fx.write(np.ascontiguousarray(feats[rows], self.dtype).tobytes())
                fy.write(np.ascontiguousarray(labels[rows], np.int32).tobytes())
            self.rows[p] += len(rows)

    def shuffle(self, rng: np.random.Generator) -> None:
        """Each part's rows in a random order, once: an epoch then takes
        contiguous mini-batches in a random order (as the in-memory head)."""
        for p in range(self.num_parts):
            order = rng.permutation(int(self.rows[p]))
            for suffix, dtype, width in ((".x", self.dtype, self.dim), (".y", np.int32, 1)):
                rows = np.fromfile(self.paths[p] + suffix, dtype).reshape(-1, width)
                rows[order].tofile(self.paths[p] + suffix)

    def part(self, p: int, mean: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Part ``p``'s rows, standardised float32 (in a buffer the next call
        reuses), and their labels."""
        n = int(self.rows[p])
        if self._buffer is None:
            self._buffer = np.empty((int(self.rows.max()), self.dim), np.float32)
        X = self._buffer[:n]
        with open(self.paths[p] + ".x", "rb") as fh:
            if self.dtype == np.float32:
                if fh.readinto(memoryview(X).cast("B")) != X.nbytes:
                    raise OSError(f"{self.paths[p]}.x is shorter than its {n} rows")
            else:
                np.copyto(X, np.fromfile(fh, self.dtype, n * self.dim).reshape(n, self.dim))
        X -= mean
        X /= scale
        return X, np.fromfile(self.paths[p] + ".y", np.int32).astype(np.int64)


class _Moments:
    """Column sums about a shift (the first block's mean), in float64: the
    standardisation of rows seen once, as ``fitting.feature_stats`` computes
    it on rows held in memory (the same floor on the std)."""

    def __init__(self):
        self.n, self.shift, self.s1, self.s2 = 0, None, None, None

    def add(self, X: np.ndarray) -> None:
        if not len(X):
            return
        if self.shift is None:
            self.shift = X.mean(axis=0, dtype=np.float64)
            self.s1 = np.zeros_like(self.shift)
            self.s2 = np.zeros_like(self.shift)
        for i in range(0, len(X), 1024):  # float64 a thousand rows at a time
            block = X[i : i + 1024].astype(np.float64)
            block -= self.shift
            self.s1 += block.sum(axis=0)
            self.s2 += np.square(block, out=block).sum(axis=0)
        self.n += len(X)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        n = max(self.n, 1)
        mean = self.s1 / n
        std = np.sqrt(np.maximum(self.s2 / n - mean**2, 0.0)).astype(np.float32)
        std = np.maximum(std, np.float32(max(0.1 * float(np.median(std)), 1e-12)))
        return (mean + self.shift).astype(np.float32), std


def _spill(blocks: Iterable[tuple[int, np.ndarray]], y: np.ndarray, split: np.ndarray, folder: str, dtype,
           rng: np.random.Generator) -> tuple[_Spill, _Spill, np.ndarray, np.ndarray]:
    """One pass over ``blocks`` ((first row, features)): training rows
    (``split`` 0) dealt at random to the parts, validation rows (``split``
    1) to theirs, others (-1) left out; the training rows' mean and std."""
    dim = None
    train = val = None
    moments = _Moments()
    for start, feats in blocks:
        if train is None:
            dim = feats.shape[1]
            row_bytes = dim * np.dtype(dtype).itemsize
            n_train, n_val = int((split == 0).sum()), int((split == 1).sum())
            train = _Spill(folder, "train", dim, dtype, max(1, -(-n_train * row_bytes // SPILL_PART_BYTES)))
            val = _Spill(folder, "val", dim, dtype, max(1, -(-n_val * row_bytes // SPILL_PART_BYTES)))
        s = split[start : start + len(feats)]
        labels = y[start : start + len(feats)]
        t = np.flatnonzero(s == 0)
        moments.add(feats[t])
        train.add(feats[t], labels[t], rng.integers(0, train.num_parts, len(t)))
        v = np.flatnonzero(s == 1)
        val.add(feats[v], labels[v], np.arange(len(v)) * val.num_parts // max(len(v), 1))
    if train is None or not train.rows.sum():
        raise ValueError("no training rows to fit the head on")
    mean, std = moments.result()
    return train, val, mean, std


def _epoch(state: SoftmaxState, train: _Spill, mean, std, batch_size: int, rng: np.random.Generator) -> float:
    total = 0.0
    for p in rng.permutation(train.num_parts):
        if not train.rows[p]:
            continue
        X, yp = train.part(int(p), mean, std)
        for start in rng.permutation(np.arange(0, len(yp), batch_size)).tolist():
            total += state.step(X[start : start + batch_size], yp[start : start + batch_size])
    return total


def _validate(state: SoftmaxState, val: _Spill, mean, std) -> tuple[float, float]:
    right, loss, n = 0, 0.0, 0
    for p in range(val.num_parts):
        if not val.rows[p]:
            continue
        X, yv = val.part(p, mean, std)
        logits = state.logits(X)
        right += int((logits.argmax(axis=1) == yv).sum())
        loss += softmax_nll_grad(logits, yv)[0]
        n += len(yv)
    return right / n, loss / n


def fit_streamed(blocks: Callable[[], Iterator[tuple[int, np.ndarray]]], y: np.ndarray, split: np.ndarray,
                 dtype=np.float32, num_classes: int | None = None, workdir: str | None = None,
                 **params) -> SoftmaxHead:
    """A ``SoftmaxHead(**params)`` fitted on the rows whose ``split`` is 0,
    early-stopped on those whose ``split`` is 1 (none: every epoch runs),
    reading the features from ``blocks()`` once ((first row, features) per
    block, rows in ``y``'s order). The shuffled copy lives in a temporary
    folder under ``workdir`` (deleted at the end)."""
    head = SoftmaxHead(**params)
    rng = np.random.default_rng(head.seed)
    y = np.asarray(y, np.int64)
    c = num_classes_of(y, num_classes)
    with tempfile.TemporaryDirectory(prefix=".edgetl-shuffle-", dir=workdir) as folder:
        t = time.perf_counter()
        train, val, mean, std = _spill(blocks(), y, np.asarray(split), folder, dtype, rng)
        train.shuffle(rng)
        head.streaming_ = {"parts": train.num_parts, "rows_per_part": int(train.rows.max()),
                           "shuffle_s": round(time.perf_counter() - t, 3)}
        t = time.perf_counter()
        head.mean_, head.scale_ = mean, std
        state = SoftmaxState(c, train.dim, head.learning_rate, head.l2, rng)
        n = int(train.rows.sum())
        batch_size = default_batch_size(n, head.batch_size)
        repeats = max(1, -(-MIN_STEPS * batch_size // n))  # as in memory: an epoch of at least MIN_STEPS steps
        stopper, head.history_ = EarlyStopping(head.patience), []
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for epoch in range(1, head.epochs + 1):
                record = {"epoch": epoch,
                          "train_loss": sum(_epoch(state, train, mean, std, batch_size, rng)
                                            for _ in range(repeats)) / (repeats * n) + state.penalty()}
                stop = False
                if val.rows.sum():
                    acc, loss = _validate(state, val, mean, std)
                    record.update(val_loss=loss, val_accuracy=acc)
                    stop = stopper.update(epoch, acc, loss, state.snapshot)
                head.history_.append(record)
                emit("epoch", **{k: (round(float(v), 6) if isinstance(v, float) else v) for k, v in record.items()})
                if stop:
                    break
        head.streaming_["epochs_s"] = round(time.perf_counter() - t, 3)
    head.n_epochs_ = len(head.history_)
    W, b = stopper.best_state if stopper.best_state is not None else state.snapshot()
    head.best_epoch_ = stopper.best_epoch if stopper.best_state is not None else head.n_epochs_
    head.coef_, head.intercept_, head.classes_ = W, b, np.arange(c)
    return head
