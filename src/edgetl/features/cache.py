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


VOID_KEY = f"V{KEY_BYTES}"  # a key as one numpy scalar: sorts and compares as its 32 bytes


def as_void(rows) -> np.ndarray:
    """(M, 32) uint8 keys as M void scalars (sortable, comparable; ``tolist()`` gives bytes)."""
    return np.ascontiguousarray(rows, np.uint8).reshape(-1, KEY_BYTES).view(VOID_KEY).reshape(-1)


def key_rows(keys) -> np.ndarray:
    """Keys as (M, 32) uint8: an array as it is, an iterable of 32-byte bytes joined."""
    if isinstance(keys, np.ndarray):
        return np.ascontiguousarray(keys, np.uint8).reshape(-1, KEY_BYTES)
    keys = list(keys)
    for key in keys:
        if len(key) != KEY_BYTES:
            raise KeyError(key)
    return np.frombuffer(b"".join(keys), np.uint8).reshape(-1, KEY_BYTES)


def _prefixes(keys: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each key (void scalars) as a native uint64: the
    same order as the keys' (big-endian), and ten times faster to search."""
    return np.ascontiguousarray(keys).view(np.uint8).reshape(-1, KEY_BYTES)[:, :8].copy().view(">u8").reshape(-1) \
        .astype(np.uint64)


class _KeyIndex:
    """sha256 key -> row of the cache (rows numbered across its blocks), ~50
    bytes a key where a dict of bytes took ~190: the keys sorted as one numpy
    array (with their first 8 bytes as uint64, what ``searchsorted`` looks
    through), and a dict of the keys added since the last merge (merged once
    it holds a quarter as many). A key added again maps to its latest row."""

    MIN_MERGE = 4096

    def __init__(self):
        self._sorted = np.zeros(0, VOID_KEY)
        self._prefix = np.zeros(0, np.uint64)
        self._rows = np.zeros(0, np.int64)
        self._recent: dict[bytes, int] = {}

    def build(self, blocks: list[tuple[np.ndarray, int]]) -> None:
        """Every (keys, first row) at once, as a cache is opened."""
        self.merge()
        keys = [as_void(k) for k, _ in blocks]
        rows = [np.arange(first, first + len(k), dtype=np.int64) for k, first in blocks]
        self._set(np.concatenate([self._sorted, *keys]), np.concatenate([self._rows, *rows]))

    def _set(self, keys: np.ndarray, rows: np.ndarray) -> None:
        order = np.argsort(keys, kind="stable")  # equal keys: the older first
        keys, rows = keys[order], rows[order]
        last = np.ones(len(keys), bool)
        last[:-1] = keys[1:] != keys[:-1]  # of equal keys, the newest wins
        self._sorted, self._rows = keys[last], rows[last]
        self._prefix = _prefixes(self._sorted)

    def add(self, keys: np.ndarray, first_row: int) -> None:
        for row, key in enumerate(as_void(keys).tolist(), first_row):
            self._recent[key] = row
        if len(self._recent) > max(self.MIN_MERGE, len(self._sorted) // 4):
            self.merge()

    def merge(self) -> None:
        if self._recent:
            recent, self._recent = self._recent, {}
            self._set(np.concatenate([self._sorted, np.array(list(recent), VOID_KEY)]),
                      np.concatenate([self._rows, np.fromiter(recent.values(), np.int64, len(recent))]))

    def __len__(self) -> int:
        self.merge()
        return len(self._sorted)

    def __iter__(self):
        """Every key (bytes), in sorted order."""
        self.merge()
        keys = self._sorted
        for lo in range(0, len(keys), 4096):
            yield from keys[lo : lo + 4096].tolist()

    def find(self, key: bytes) -> int:
        """The row of one key, -1 when absent."""
        row = self._recent.get(key)
        if row is not None:
            return row
        n = len(self._sorted)
        if len(key) != KEY_BYTES or not n:
            return -1
        prefix = np.uint64(int.from_bytes(key[:8], "big"))
        pos = int(self._prefix.searchsorted(prefix))
        while pos < n and self._prefix[pos] == prefix:  # more than one only when first 8 bytes agree
            if self._sorted[pos].tobytes() == key:
                return int(self._rows[pos])
            pos += 1
        return -1

    def _search(self, probe: np.ndarray) -> np.ndarray:
        """Rows of void keys in the sorted part, -1 where absent."""
        out = np.full(len(probe), -1, np.int64)
        if not len(self._sorted) or not len(probe):
            return out
        prefix = _prefixes(probe)
        pos = np.minimum(np.searchsorted(self._prefix, prefix), len(self._sorted) - 1)
        hit = self._sorted[pos] == probe
        # Two keys whose first 8 bytes agree (rare): the probe may sit further on; an exact search finds it.
        again = np.flatnonzero(~hit & (self._prefix[pos] == prefix))
        if len(again):
            pos[again] = np.minimum(np.searchsorted(self._sorted, probe[again]), len(self._sorted) - 1)
            hit[again] = self._sorted[pos[again]] == probe[again]
        out[hit] = self._rows[pos[hit]]
        return out

    def find_many(self, keys: np.ndarray) -> np.ndarray:
        """The rows of (M, 32) uint8 keys, -1 where absent."""
        probe = as_void(keys)
        if self._recent and len(probe) > len(self._sorted) // 4:
            self.merge()  # about as cheap as looking every probe up in the dict
        out = self._search(probe)
        if self._recent:
            for j, key in enumerate(probe.tolist()):
                row = self._recent.get(key)
                if row is not None:
                    out[j] = row
        return out


class FeatureCache:
    """``dim``: the width of a feature row (None: taken from the first
    shard); a shard of another width is a miss. Keys: 32-byte sha256, as
    ``bytes`` or as the rows of an (M, 32) uint8 array."""

    def __init__(self, folder: str, flush_rows: int = 512, dim: int | None = None):
        self.folder = folder
        self.flush_rows = flush_rows
        self.dim = dim
        os.makedirs(folder, exist_ok=True)
        sweep_dead_writers(folder)
        self._index = _KeyIndex()
        self._blocks: list[np.ndarray] = []
        self._block_starts = [0]  # the first row of each block, then the row after the last
        self._pending_keys: list[bytes] = []
        self._pending_feats: list[np.ndarray] = []
        bad, loaded = [], []
        for path in sorted(glob.glob(os.path.join(glob.escape(folder), "shard-*.npz"))):
            keys, feats, why = read_shard(path, self.dim)
            if why:
                bad.append(f"{os.path.basename(path)}: {why}")
                self._discard(path)
                continue
            self.dim = feats.shape[1]
            loaded.append((keys, self._add_block(feats)))
        self._index.build(loaded)  # one sort for every shard
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

    def _add_block(self, feats: np.ndarray) -> int:
        """Appends a block of rows; returns the number of its first row."""
        first = self._block_starts[-1]
        self._blocks.append(feats)
        self._block_starts.append(first + len(feats))
        return first

    def __contains__(self, key: bytes) -> bool:
        return key is not None and self._index.find(bytes(key)) >= 0

    def contains(self, keys) -> np.ndarray:
        """Whether each key is cached, as a bool array (one numpy search for all)."""
        return self._index.find_many(key_rows(keys)) >= 0

    def __len__(self) -> int:
        return len(self._index)

    def num_pending(self) -> int:
        """Rows put but not yet flushed (not yet found by ``in``, ``contains`` or ``get``)."""
        return len(self._pending_keys)

    def get(self, keys) -> np.ndarray:
        """The rows of ``keys`` (bytes, or an (M, 32) uint8 array), in order;
        KeyError for a key not cached."""
        keys = key_rows(keys)
        rows = self._index.find_many(keys)
        if not len(rows):
            return np.zeros((0, 0), np.float32)
        if (rows < 0).any():
            raise KeyError(keys[int(np.argmax(rows < 0))].tobytes())
        starts = np.asarray(self._block_starts, np.int64)
        block = np.searchsorted(starts, rows, side="right") - 1
        out = np.empty((len(rows), self._blocks[int(block[0])].shape[1]), np.float32)
        order = np.argsort(block, kind="stable")  # gathered block by block
        bounds = np.flatnonzero(np.diff(block[order], prepend=-1, append=len(self._blocks)))
        for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            where = order[lo:hi]
            b = int(block[where[0]])
            out[where] = self._blocks[b][rows[where] - starts[b]]
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
        self._index.add(keys, self._add_block(feats))
        self._pending_keys, self._pending_feats = [], []
