"""The sha256 of every listed image, held as one (N, 32) uint8 array.

A million keys as Python ``bytes`` in a list cost ~80 MB (an object each);
:class:`KeyArray` costs 33 bytes a key (the digest and whether it is known)
and reads like the list it replaces: ``keys[i]`` is the digest as ``bytes``
or None (the file could not be read), ``keys[i] = digest`` sets it, and it
iterates. What the passes ask of every key at once (the distinct ones, those
in a set) is answered with numpy, without a Python object per key."""

from __future__ import annotations

from collections.abc import Iterator
from operator import index as as_index

import numpy as np

from ..data.folder import equal_runs
from .cache import KEY_BYTES, as_void, key_rows

_ITER_WINDOW = 4096


class KeyArray:
    """sha256 per listed path: ``rows`` (N, 32) uint8, ``known`` (N,) bool
    (False: unreadable when hashed, read as None)."""

    def __init__(self, n: int):
        self.rows = np.zeros((n, KEY_BYTES), np.uint8)
        self.known = np.zeros(n, bool)

    @classmethod
    def of(cls, keys) -> "KeyArray":
        """From a sequence of bytes or None."""
        keys = list(keys)
        out = cls(len(keys))
        for i, key in enumerate(keys):
            out[i] = key
        return out

    def __len__(self) -> int:
        return len(self.known)

    def __getitem__(self, i):
        """``keys[i]``: bytes or None; ``keys[a:b]``: a list of them, as a list's slice."""
        if isinstance(i, slice):
            return list(self.take(np.arange(len(self))[i]))
        i = as_index(i)
        return self.rows[i].tobytes() if self.known[i] else None

    def __setitem__(self, i, key: bytes | None) -> None:
        i = as_index(i)
        if key is None:
            self.known[i] = False
            self.rows[i] = 0
            return
        if len(key) != KEY_BYTES:
            raise ValueError(f"a key is {KEY_BYTES} bytes, not {len(key)}")
        self.rows[i] = np.frombuffer(key, np.uint8)
        self.known[i] = True

    def __iter__(self) -> Iterator[bytes | None]:
        for lo in range(0, len(self), _ITER_WINDOW):
            rows = as_void(self.rows[lo : lo + _ITER_WINDOW]).tolist()
            for key, known in zip(rows, self.known[lo : lo + _ITER_WINDOW].tolist()):
                yield key if known else None

    def take(self, index) -> "KeyArray":
        index = np.asarray(index, np.int64).reshape(-1)
        out = KeyArray(0)
        out.rows, out.known = self.rows[index], self.known[index]
        return out

    def first_of_each(self, positions: np.ndarray) -> np.ndarray:
        """Of ``positions`` (ascending, known keys), the first position of each distinct key, ascending."""
        every = len(positions) == len(self)  # every position (ascending, distinct): the rows as they are
        order, bounds = equal_runs(as_void(self.rows if every else self.rows[positions]))
        return positions[np.sort(order[bounds[:-1]])]  # a stable sort: each run starts with its earliest

    def where_in(self, keys) -> np.ndarray:
        """Positions whose known key is one of ``keys`` (bytes), ascending."""
        keys = list(keys)
        if not keys:
            return np.zeros(0, np.int64)
        hit = np.isin(as_void(self.rows), as_void(key_rows(keys))) & self.known
        return np.flatnonzero(hit)
