"""Fixed-size float32 rows in one file on disk, read with ``os.pread``.

The decoded images and a frozen prefix's outputs live here: on disk, not in
RAM (a 60,000-image set at 64 px is 1 GB), and read row by row into one
batch buffer, so the process's memory holds a batch, not the data set
(reading through ``mmap`` would count every page touched as resident).
A store is complete when its ``.json`` sidecar exists (written last)."""

from __future__ import annotations

import json
import os

import numpy as np

from .._files import write_json


class RowStore:
    def __init__(self, path: str, shape: tuple[int, ...], rows: int):
        self.path, self.shape, self.rows = path, tuple(int(s) for s in shape), int(rows)
        self.row_bytes = int(np.prod(self.shape)) * 4

    @property
    def complete(self) -> bool:
        try:
            with open(self.path + ".json", encoding="utf-8") as fh:
                meta = json.load(fh)
        except (OSError, ValueError):
            return False
        return (meta.get("shape") == list(self.shape) and meta.get("rows") == self.rows
                and os.path.getsize(self.path) == self.rows * self.row_bytes)

    def writer(self):
        """A file to append rows to, in order (``write(arr)``); ``finish()`` marks it complete."""
        store = self

        class _Writer:
            def __init__(self):
                self.fh = open(store.path, "wb")

            def write(self, rows: np.ndarray) -> None:
                self.fh.write(np.ascontiguousarray(rows, np.float32).tobytes())

            def finish(self) -> None:
                self.fh.flush()
                os.fsync(self.fh.fileno())
                self.fh.close()
                write_json(store.path + ".json", {"shape": list(store.shape), "rows": store.rows}, indent=None)

            def close(self) -> None:
                self.fh.close()

        return _Writer()

    def read(self, indices, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``indices`` (in that order) as float32 (len, *shape)."""
        indices = np.asarray(indices, dtype=np.int64)
        if out is None or out.shape[0] < len(indices):
            out = np.empty((len(indices),) + self.shape, np.float32)
        out = out[: len(indices)]
        flat = out.reshape(len(indices), -1).view(np.uint8)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for j, i in enumerate(indices):
                n = os.preadv(fd, [flat[j]], int(i) * self.row_bytes)
                if n != self.row_bytes:
                    raise OSError(f"short read from {self.path}: row {i}")
        finally:
            os.close(fd)
        return out
