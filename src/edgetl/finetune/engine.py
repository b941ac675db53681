"""The fine-tuning loop: cache the frozen prefix once, train the suffix,
checkpoint every epoch atomically, resume exactly.

A killed run loses at most the epoch in progress: ``checkpoint.pt`` (model,
optimizer, epoch, random state, early-stopping state, config hash) is
written to a temporary name and renamed after every epoch. Each epoch's
shuffling and dropout are seeded from (seed, epoch), so a resumed run takes
the same steps as one that never stopped and ends with the same weights."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .._files import atomic_path
from ..errors import DataError
from ..events import emit
from .lean import LeanMode
from .net import Net
from .planner import CACHE_BATCH
from .store import RowStore

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = "edgetl.checkpoint/1"


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class FinetuneResult:
    history: list[dict]
    best_epoch: int
    epochs_run: int
    val_accuracy: float | None
    resumed_from: int = 0  # epochs already done when this process started
    timings: dict = field(default_factory=dict)  # wall and CPU seconds of the cache and the epochs


def pin_malloc_threshold(threshold: int = int(os.environ.get("EDGETL_MMAP", 128 * 1024))) -> None:
    """Keep glibc returning large blocks to the system as soon as they are
    freed. By default glibc raises its mmap threshold each time such a block
    is freed, after which activations and gradients of a few hundred kB are
    carved from the heap, which fragments and keeps its peak: measured here,
    bias-only training at batch 32 peaked at 202 MB instead of 72 MB. Setting
    the threshold explicitly turns that adjustment off (no effect off glibc)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, int(threshold))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def _save_atomic(obj, path: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())


def load_checkpoint(state_dir: str) -> dict | None:
    path = os.path.join(state_dir, CHECKPOINT)
    if not os.path.isfile(path):
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged file is reported, never half-used
        raise DataError(f"The checkpoint '{path}' cannot be read ({type(exc).__name__}); "
                        f"start again with --overwrite") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"'{path}' is not an edgetl checkpoint; start again with --overwrite")
    return ckpt


def cache_prefix(net: Net, images: RowStore, state_dir: str, batch_size: int = CACHE_BATCH,
                 progress=None, key: str = "") -> RowStore:
    """The frozen prefix's output for every image, on disk (done once; a
    complete cache from an earlier, killed run with the same ``key``, which
    names the images, weights and input size, is reused)."""
    if net.cut == 0:
        return images
    pin_malloc_threshold()
    shape = net.prefix_shape_from(images.shape)
    store = RowStore(os.path.join(state_dir, f"prefix-{net.strategy}{'-' + key if key else ''}.f32"), shape,
                     images.rows)
    if store.complete:
        return store
    net.set_mode(False)
    writer = store.writer()
    buf = None
    try:
        for start in range(0, images.rows, batch_size):
            idx = np.arange(start, min(start + batch_size, images.rows))
            buf = images.read(idx, buf)
            writer.write(net.prefix(torch.from_numpy(buf[: len(idx)])).numpy())
            if progress:
                progress(len(idx))
        writer.finish()
    except BaseException:
        writer.close()
        raise
    return store


def evaluate(net: Net, store: RowStore, rows: np.ndarray, y: np.ndarray, batch_size: int) -> tuple[float, float, np.ndarray]:
    """(accuracy, mean loss, probabilities) on ``rows``."""
    net.set_mode(False)
    probs, loss, buf = [], 0.0, None
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            idx = rows[start:start + batch_size]
            buf = store.read(idx, buf)
            logits = net(torch.from_numpy(buf[: len(idx)]))
            target = torch.from_numpy(y[idx])
            loss += float(F.cross_entropy(logits, target, reduction="sum"))
            probs.append(torch.softmax(logits, 1).numpy())
    p = np.concatenate(probs) if probs else np.zeros((0, 0), np.float32)
    acc = float((p.argmax(1) == y[rows]).mean()) if len(rows) else float("nan")
    return acc, loss / max(1, len(rows)), p




@dataclass
class _Progress:
    """Where training stands after an epoch: what a checkpoint holds besides
    the model and the optimizer."""

    history: list[dict] = field(default_factory=list)
    epoch: int = 0
    best_epoch: int = 0
    best_acc: float = -1.0
    bad_epochs: int = 0
    best_state: dict | None = None
    done: bool = False

    @classmethod
    def resumed(cls, ckpt: dict) -> "_Progress":
        return cls(list(ckpt["history"]), int(ckpt["epoch"]), int(ckpt["best_epoch"]), float(ckpt["best_acc"]),
                   int(ckpt["bad_epochs"]), ckpt["best_state"], bool(ckpt["done"]))

    def checkpoint(self, digest: str, config: dict, net: Net, opt) -> dict:
        return {
            "format": CHECKPOINT_FORMAT, "config_hash": digest, "config": config, "epoch": self.epoch,
            "model": net.model.state_dict(), "optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(),
            "history": self.history, "best_epoch": self.best_epoch, "best_acc": self.best_acc,
            "bad_epochs": self.bad_epochs, "best_state": self.best_state, "done": self.done,
        }


def _resume(net: Net, opt, state_dir: str, digest: str, epochs: int) -> _Progress:
    """The progress of the interrupted run in ``state_dir`` (model, optimizer
    and random state restored), or a fresh start when there is none."""
    ckpt = load_checkpoint(state_dir)
    if ckpt is None:
        return _Progress()
    if ckpt["config_hash"] != digest:
        raise DataError(
            f"The interrupted run in '{state_dir}' was made with other settings; resume it with the same "
            f"settings, or pass --overwrite instead of --resume to start again")
    net.model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    torch.set_rng_state(ckpt["torch_rng"])
    progress = _Progress.resumed(ckpt)
    log.info("resuming after epoch %d of %d (checkpoint %s)", progress.epoch, epochs, CHECKPOINT)
    return progress


def _train_epoch(net: Net, opt, store: RowStore, y: np.ndarray, order: np.ndarray, batch_size: int,
                 buf: np.ndarray | None) -> tuple[float, np.ndarray | None]:
    """One pass over ``order``: (summed loss, the batch buffer to reuse)."""
    net.set_mode(True)
    total = 0.0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        buf = store.read(idx, buf)
        x = torch.from_numpy(buf[: len(idx)])
        target = torch.from_numpy(y[idx])
        with LeanMode():
            loss = F.cross_entropy(net(x), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(idx)
    return total, buf


def finetune(net: Net, store: RowStore, y: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray, *,
             epochs: int, batch_size: int, learning_rate: float, patience: int, seed: int, state_dir: str,
             config: dict, resume: bool = False, weight_decay: float = 1e-4, on_epoch=None) -> FinetuneResult:
    """Train ``net`` on rows ``train_idx`` of ``store`` (the prefix cache),
    early-stopped on ``val_idx`` (accuracy, ``patience`` epochs). Leaves the
    best epoch's weights in ``net``. ``state_dir`` keeps the checkpoint."""
    digest = config_hash(config)
    pin_malloc_threshold()
    opt = torch.optim.AdamW(net.param_groups(learning_rate), weight_decay=weight_decay)
    p = _resume(net, opt, state_dir, digest, epochs) if resume else _Progress()
    start_epoch = p.epoch
    names = [n for n, q in net.model.named_parameters() if q.requires_grad]
    buffers = [n for n, _ in net.model.named_buffers()]

    def snapshot() -> dict:
        state = net.model.state_dict()
        return {k: state[k].clone() for k in names + buffers}

    cpu0, wall0 = time.process_time(), time.perf_counter()
    buf = None
    train_idx = np.asarray(train_idx)
    while not p.done and p.epoch < epochs:
        gen = np.random.default_rng([seed, p.epoch])
        torch.manual_seed(seed * 100_003 + p.epoch)
        order = train_idx[gen.permutation(len(train_idx))]
        t_epoch = time.perf_counter()
        total, buf = _train_epoch(net, opt, store, y, order, batch_size, buf)
        p.epoch += 1
        record = {"epoch": p.epoch, "train_loss": total / max(1, len(order)),
                  "seconds": round(time.perf_counter() - t_epoch, 3)}
        if len(val_idx):
            val_acc, val_loss, _ = evaluate(net, store, val_idx, y, batch_size)
            record.update(val_loss=val_loss, val_accuracy=val_acc)
            if val_acc > p.best_acc:
                p.best_acc, p.best_epoch, p.bad_epochs, p.best_state = val_acc, p.epoch, 0, snapshot()
            else:
                p.bad_epochs += 1
            p.done = p.bad_epochs >= patience
        else:
            p.best_epoch, p.best_state = p.epoch, snapshot()
        p.history.append(record)
        emit("epoch", **{k: (round(float(v), 6) if isinstance(v, float) else v) for k, v in record.items()})
        p.done = p.done or p.epoch >= epochs
        log.info("epoch %d/%d: train loss %.4f%s", p.epoch, epochs, record["train_loss"],
                 f", val accuracy {record['val_accuracy']:.2%}" if "val_accuracy" in record else "")
        _save_atomic(p.checkpoint(digest, config, net, opt), os.path.join(state_dir, CHECKPOINT))
        if on_epoch:
            on_epoch(record)
    if p.best_state is not None:
        net.model.load_state_dict(p.best_state, strict=False)
    return FinetuneResult(p.history, p.best_epoch, len(p.history), p.best_acc if p.best_acc >= 0 else None,
                          resumed_from=start_epoch,
                          timings={"train_cpu_s": time.process_time() - cpu0,
                                   "train_wall_s": time.perf_counter() - wall0})
