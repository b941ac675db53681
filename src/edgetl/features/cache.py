"""On-disk feature cache.

One folder per feature identity (backbone, weights, InputSpec, tap); inside,
append-only shards ``shard-*.npz`` holding ``keys`` (sha256 of the image bytes,
N x 32 uint8) and ``features`` (N x D float32). A shard is written to a
temporary name and renamed, so a run killed mid-extraction leaves only whole
shards behind and the next run extracts just what is missing. The temporary
name, ``.shard-HEX.PID.tmp.npz``, carries the writer's PID: the next run
sweeps what dead writers left. That on-disk format predates
``_files.atomic_path`` (whose temporary name is ``.NAME.tmp-PID``) and is
kept: caches written before still sweep."""

from __future__ import annotations

import glob
import os
import uuid

import numpy as np

from .._files import pid_alive
from ..errors import storage_error


def sweep_dead_writers(folder: str) -> int:
    """Remove temporary shards whose writer is no longer running (killed
    mid-write); a live writer's file is left alone. Returns how many."""
    removed = 0
    for path in glob.glob(os.path.join(glob.escape(folder), ".shard-*.tmp.npz")):
        parts = os.path.basename(path).split(".")  # ['', 'shard-HEX', 'PID', 'tmp', 'npz']
        pid = int(parts[2]) if len(parts) == 5 and parts[2].isdigit() else None
        if pid is None or not pid_alive(pid):
            try:
                os.unlink(path)
                removed += 1
            except OSError:
                pass
    return removed


class FeatureCache:
    def __init__(self, folder: str, flush_rows: int = 512):
        self.folder = folder
        self.flush_rows = flush_rows
        os.makedirs(folder, exist_ok=True)
        sweep_dead_writers(folder)
        self._index: dict[bytes, tuple[int, int]] = {}
        self._blocks: list[np.ndarray] = []
        self._pending_keys: list[bytes] = []
        self._pending_feats: list[np.ndarray] = []
        for path in sorted(glob.glob(os.path.join(folder, "shard-*.npz"))):
            try:
                with np.load(path, allow_pickle=False) as data:
                    keys, feats = data["keys"], data["features"]
            except Exception:
                # A shard we cannot read is a cache miss, not an error.
                continue
            self._add_block(keys, feats)

    def _add_block(self, keys: np.ndarray, feats: np.ndarray) -> None:
        block = len(self._blocks)
        self._blocks.append(np.asarray(feats, dtype=np.float32))
        for row, key in enumerate(keys):
            self._index[bytes(key)] = (block, row)

    def __contains__(self, key: bytes) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def get(self, keys: list[bytes]) -> np.ndarray:
        rows = [self._index[k] for k in keys]
        if not rows:
            return np.zeros((0, 0), np.float32)
        dim = self._blocks[rows[0][0]].shape[1]
        out = np.empty((len(rows), dim), np.float32)
        for i, (block, row) in enumerate(rows):
            out[i] = self._blocks[block][row]
        return out

    def put(self, keys: list[bytes], feats: np.ndarray) -> None:
        self._pending_keys.extend(keys)
        self._pending_feats.append(np.asarray(feats, dtype=np.float32))
        if len(self._pending_keys) >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        if not self._pending_keys:
            return
        keys = np.frombuffer(b"".join(self._pending_keys), dtype=np.uint8).reshape(-1, 32)
        feats = np.concatenate(self._pending_feats)
        name = f"shard-{uuid.uuid4().hex}"
        tmp = os.path.join(self.folder, f".{name}.{os.getpid()}.tmp.npz")
        try:
            np.savez(tmp, keys=keys, features=feats)
            os.replace(tmp, os.path.join(self.folder, name + ".npz"))
        except OSError as exc:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise storage_error(exc, "the feature cache", self.folder) from None
        self._add_block(keys, feats)
        self._pending_keys, self._pending_feats = [], []
