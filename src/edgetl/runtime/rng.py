"""The random draws of on-device learning, the same on every runtime.

``Personalizer.fit`` visits the stored examples in a random order, and the web
runtime (``edgetl/web/edgetl.js``) must visit them in the same order to reach
the same head. numpy's generators cannot be reproduced in a browser, so both
use this one: mulberry32, a 32-bit generator of a few integer operations
(JavaScript's ``Math.imul`` arithmetic), with the integer draws, permutations
and sampling defined here once. Statistical quality is ample for shuffling a
few thousand examples; it is not for cryptography."""

from __future__ import annotations

import numpy as np

_MASK = 0xFFFFFFFF


class Mulberry32:
    """``Mulberry32(seed)``: the same sequence as ``mulberry32(seed)`` in edgetl.js."""

    def __init__(self, seed: int):
        self._state = int(seed) & _MASK

    def next_u32(self) -> int:
        self._state = (self._state + 0x6D2B79F5) & _MASK
        a = self._state
        t = ((a ^ (a >> 15)) * (1 | a)) & _MASK
        t = ((t + (((t ^ (t >> 7)) * (61 | t)) & _MASK)) & _MASK) ^ t
        return (t ^ (t >> 14)) & _MASK

    def below(self, n: int) -> int:
        """An integer in [0, n): floor(u32 * n / 2^32)."""
        return (self.next_u32() * n) >> 32

    def uniform(self) -> float:
        """A float in [0, 1)."""
        return self.next_u32() / 4294967296.0

    def permutation(self, n: int) -> np.ndarray:
        """A permutation of range(n): Fisher-Yates from the last position down."""
        out = list(range(n))
        for i in range(n - 1, 0, -1):
            j = self.below(i + 1)
            out[i], out[j] = out[j], out[i]
        return np.array(out, dtype=np.int64)

    def choice(self, items: np.ndarray, k: int) -> np.ndarray:
        """``k`` items drawn with replacement."""
        return items[np.array([self.below(len(items)) for _ in range(k)], dtype=np.int64)]


def balanced_order(labels: np.ndarray, rng: Mulberry32) -> np.ndarray:
    """One epoch's order of the rows of ``labels``: every class visited as often
    as the largest one (its rows shuffled; a smaller class's rows drawn with
    replacement up to that count), classes in increasing label order, then
    the whole order shuffled."""
    classes = np.unique(labels)
    members = [np.flatnonzero(labels == c) for c in classes]
    per_class = max(len(m) for m in members)
    order = np.concatenate([m[rng.permutation(len(m))] if len(m) == per_class else rng.choice(m, per_class)
                            for m in members])
    return order[rng.permutation(len(order))]
