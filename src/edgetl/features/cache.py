"""On-disk feature cache.

One folder per feature identity (backbone, weights, InputSpec, tap); inside,
append-only shards ``shard-*.npz`` holding ``keys`` (sha256 of the image bytes,
N x 32 uint8), ``features`` (N x D float32) and ``digest`` (sha256 of both
arrays and their shapes, 32 uint8). A shard is trusted whole or not at all:
one that cannot be read, whose digest does not match its rows (rows swapped
or edited, keys without their features), whose arrays disagree in length or
width, or that holds NaN/Inf, is a cache miss: it is removed with one warning
and its images are extracted again. A shard is written to a temporary name
and renamed, so a run killed mid-extraction leaves only whole shards behind
and the next run extracts just what is missing. The temporary name,
``.shard-HEX.PID.tmp.npz``, carries the writer's PID: the next run sweeps
what dead writers left. That on-disk format predates ``_files.atomic_path``
(whose temporary name is ``.NAME.tmp-PID``) and is kept: caches written
before still sweep (their shards, without a digest, are extracted again once)."""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import uuid
import zipfile

import numpy as np

from .._files import pid_alive
from ..errors import storage_error

log = logging.getLogger(__name__)

SHARD_FORMAT = b"edgetl.shard/2"  # in every digest: a shard of another layout never verifies
KEY_BYTES = 32
_MEMBERS = {"keys", "features", "digest"}


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


def shard_digest(keys: np.ndarray, feats: np.ndarray) -> np.ndarray:
    """sha256 of a shard's keys and features (with their dtypes and shapes),
    as the 32 uint8 stored beside them."""
    h = hashlib.sha256(SHARD_FORMAT)
    for array in (keys, feats):
        h.update(f"{array.dtype.str}{array.shape}".encode())
        h.update(np.ascontiguousarray(array).tobytes())
    return np.frombuffer(h.digest(), np.uint8).copy()


def _load_members(path: str) -> tuple[dict | None, str | None]:
    """The arrays of the npz at ``path``, or (None, why not)."""
    try:
        with zipfile.ZipFile(path) as archive:
            # np.savez stores without compression: a compressed member is not ours (nor a zip bomb's to inflate).
            if any(info.compress_type != zipfile.ZIP_STORED for info in archive.infolist()):
                return None, "not written by edgetl (compressed)"
        with np.load(path, allow_pickle=False) as data:
            names = set(data.files)
            if names != _MEMBERS:
                return None, ("no digest (written by an older edgetl)" if names == _MEMBERS - {"digest"}
                              else "not an edgetl feature shard")
            return {name: data[name] for name in _MEMBERS}, None
    except Exception as exc:  # zipfile, numpy's header parser and reads raise many kinds; all mean damaged
        return None, f"unreadable ({type(exc).__name__})"


def read_shard(path: str, dim: int | None = None) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
    """(keys, features, None) of a whole shard whose digest matches its rows,
    or (None, None, why it cannot be trusted). ``dim``: the feature width
    the cache holds (None: any)."""
    arrays, why = _load_members(path)
    if arrays is None:
        return None, None, why
    keys, feats, digest = arrays["keys"], arrays["features"], arrays["digest"]
    if keys.dtype != np.uint8 or keys.ndim != 2 or keys.shape[1] != KEY_BYTES or not len(keys):
        return None, None, f"keys of shape {keys.shape} ({keys.dtype})"
    if feats.dtype != np.float32 or feats.ndim != 2 or feats.shape[0] != keys.shape[0]:
        return None, None, f"{feats.shape} features ({feats.dtype}) for {len(keys)} keys"
    if dim is not None and feats.shape[1] != dim:
        return None, None, f"features {feats.shape[1]} wide, not {dim}"
    if digest.shape != (KEY_BYTES,) or not np.array_equal(digest, shard_digest(keys, feats)):
        return None, None, "digest does not match its rows"
    if not np.isfinite(feats).all():
        return None, None, "NaN or Inf features"
    return keys, feats, None


class FeatureCache:
    """``dim``: the width of a feature row (None: taken from the first
    shard); a shard of another width is a miss."""

    def __init__(self, folder: str, flush_rows: int = 512, dim: int | None = None):
        self.folder = folder
        self.flush_rows = flush_rows
        self.dim = dim
        os.makedirs(folder, exist_ok=True)
        sweep_dead_writers(folder)
        self._index: dict[bytes, tuple[int, int]] = {}
        self._blocks: list[np.ndarray] = []
        self._pending_keys: list[bytes] = []
        self._pending_feats: list[np.ndarray] = []
        bad = []
        for path in sorted(glob.glob(os.path.join(glob.escape(folder), "shard-*.npz"))):
            keys, feats, why = read_shard(path, self.dim)
            if why:
                bad.append(f"{os.path.basename(path)}: {why}")
                self._discard(path)
                continue
            self.dim = feats.shape[1]
            self._add_block(keys, feats)
        if bad:
            log.warning("feature cache %s: %d shard(s) could not be trusted and were removed (%s); their images "
                        "are extracted again", folder, len(bad), "; ".join(bad[:3]) + ("; ..." if len(bad) > 3 else ""))

    @staticmethod
    def _discard(path: str) -> None:
        """A shard that cannot be trusted: removed, so it neither warns nor costs a read again."""
        try:
            os.unlink(path)
        except OSError:
            pass  # a read-only cache: it stays a miss on every run

    def _add_block(self, keys: np.ndarray, feats: np.ndarray) -> None:
        block = len(self._blocks)
        self._blocks.append(feats)
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
        feats = np.asarray(feats, dtype=np.float32)
        if feats.ndim != 2 or len(feats) != len(keys) or (self.dim is not None and feats.shape[1] != self.dim):
            raise ValueError(f"{len(keys)} keys with features of shape {feats.shape} (width {self.dim} expected)")
        self.dim = feats.shape[1]
        self._pending_keys.extend(keys)
        self._pending_feats.append(feats)
        if len(self._pending_keys) >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        if not self._pending_keys:
            return
        keys = np.frombuffer(b"".join(self._pending_keys), dtype=np.uint8).reshape(-1, KEY_BYTES)
        feats = np.ascontiguousarray(np.concatenate(self._pending_feats))
        name = f"shard-{uuid.uuid4().hex}"
        tmp = os.path.join(self.folder, f".{name}.{os.getpid()}.tmp.npz")
        try:
            np.savez(tmp, keys=keys, features=feats, digest=shard_digest(keys, feats))
            os.replace(tmp, os.path.join(self.folder, name + ".npz"))
        except OSError as exc:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise storage_error(exc, "the feature cache", self.folder) from None
        self._add_block(keys, feats)
        self._pending_keys, self._pending_feats = [], []
