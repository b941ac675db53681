"""On-disk feature cache.

One folder per feature identity (backbone, weights, InputSpec, tap); inside,
append-only shards ``shard-*.npz`` holding ``keys`` (sha256 of the image bytes,
N x 32 uint8) and ``features`` (N x D float32). A shard is written to a
temporary name and renamed, so a run killed mid-extraction leaves only whole
shards behind and the next run extracts just what is missing."""

from __future__ import annotations

import glob
import os
import uuid

import numpy as np


class FeatureCache:
    def __init__(self, folder: str, flush_rows: int = 512):
        self.folder = folder
        self.flush_rows = flush_rows
        os.makedirs(folder, exist_ok=True)
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
        tmp = os.path.join(self.folder, f".{name}.tmp.npz")
        np.savez(tmp, keys=keys, features=feats)
        os.replace(tmp, os.path.join(self.folder, name + ".npz"))
        self._add_block(keys, feats)
        self._pending_keys, self._pending_feats = [], []
