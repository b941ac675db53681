"""Reading the features ``edgetl extract`` wrote (``training.features_export``),
a row group at a time: a FEATURES location (a local folder or a
``pyarrow.fs`` URI, ``features.location``) holds ``manifest.json`` and one
``features-<size>px.parquet`` per input size, whose rows are ``key``,
``path`` (relative to the data folder), ``label`` and ``features`` (a
fixed-size list of float32 or float16: every tap's output side by side,
where each sits in the schema metadata).

Nothing here holds more than one row group of features, besides what a
caller asks for by row (:meth:`FeatureFile.rows`): 10 million x 1,280
features are read as they are used, never loaded whole."""

from __future__ import annotations

import json
import os
from typing import Iterator

import numpy as np

from ..errors import DataError
from .location import is_uri, join, resolve

MANIFEST = "manifest.json"
DECODE_ROWS = 1024  # rows Arrow decodes at once when a row group is read


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_manifest(where: str) -> dict:
    """The manifest of a complete FEATURES location (a local path or a URI):
    it is written last, so a DataError when it is missing means the extract
    there did not finish."""
    fs, base = resolve(where)
    try:
        with fs.open_input_stream(join(base, MANIFEST)) as src:
            return json.loads(src.read())
    except FileNotFoundError:
        raise DataError(f"'{where}' holds no complete features (no {MANIFEST}: an 'edgetl extract' there did not "
                        f"finish, or none ran); run 'edgetl extract' again") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"Cannot read the {MANIFEST} of '{where}' ({first_line(exc)}); check the location and its "
                        f"credentials, or run 'edgetl extract' again") from None


def is_features_location(where) -> bool:
    """Whether ``where`` is a FEATURES location (its manifest.json names
    Parquet files), not a folder of images."""
    where = os.fspath(where)
    if not is_uri(where) and not os.path.isfile(os.path.join(where, MANIFEST)):
        return False  # a folder of images: no pyarrow import
    try:
        manifest = read_manifest(where)
    except Exception:  # not there, not JSON, no pyarrow: a folder of images (or nothing) as before
        return False
    return isinstance(manifest, dict) and isinstance(manifest.get("files"), list) and "classes" in manifest


class FeatureFile:
    """One ``features-<size>px.parquet``: its metadata, its labels, its rows
    streamed by row group."""

    def __init__(self, where: str, image_size: int | None = None):
        import pyarrow.parquet as pq

        self.where = os.fspath(where)
        self.fs, self.root = resolve(self.where)
        self.manifest = read_manifest(self.where)
        sizes = {int(f["image_size"]): f["file"] for f in self.manifest["files"]}
        if image_size is None:
            image_size = max(sizes)
        if image_size not in sizes:
            raise DataError(f"'{self.where}' holds features at {', '.join(f'{s} px' for s in sorted(sizes))}, not "
                            f"{image_size} px; pass one of those to --image-size or extract at {image_size} px")
        self.image_size = image_size
        self.path = join(self.root, sizes[image_size])
        self._file = pq.ParquetFile(self.fs.open_input_file(self.path))
        meta = self._file.schema_arrow.metadata or {}
        self.meta = json.loads(meta.get(b"edgetl", b"{}"))
        self.classes: list[str] = list(self.manifest["classes"])
        self.num_rows = self._file.metadata.num_rows
        self.num_row_groups = self._file.num_row_groups
        self._starts = np.concatenate([[0], np.cumsum([self._file.metadata.row_group(g).num_rows
                                                       for g in range(self.num_row_groups)])]).astype(np.int64)
        width = self._file.schema_arrow.field("features").type.list_size
        self.taps = {name: slice(a, b) for name, (a, b) in self.meta.get("taps", {"final": [0, width]}).items()}
        self.dtype = np.dtype(np.float16 if "halffloat" in str(self._file.schema_arrow.field("features").type)
                              else np.float32)

    def tap_slice(self, tap: str | None) -> slice:
        """Where ``tap``'s features sit in a row (None: the whole row)."""
        if tap is None or (tap == "all" and len(self.taps) > 1):
            return slice(0, max(s.stop for s in self.taps.values()))
        if tap not in self.taps:
            raise DataError(f"'{self.where}' holds the taps {', '.join(self.taps)}, not {tap!r}; pass one of them "
                            f"to --tap, or extract without --tap")
        return self.taps[tap]

    def column(self, name: str) -> list:
        """A small column (``label``, ``path``, ``key``) as a Python list, in row order."""
        return self._file.read(columns=[name]).column(name).to_pylist()

    def take(self, name: str, index) -> list:
        """Column ``name``'s values at the rows ``index`` (in that order),
        reading only the row groups that hold them."""
        index = np.asarray(index, np.int64)
        out: list = [None] * len(index)
        order = np.argsort(index, kind="stable")
        sorted_index = index[order]
        for group in np.unique(np.searchsorted(self._starts, sorted_index, side="right") - 1):
            start = int(self._starts[group])
            values = self._file.read_row_group(int(group), columns=[name]).column(name)
            lo, hi = np.searchsorted(sorted_index, [start, self._starts[group + 1]])
            for pos, value in zip(order[lo:hi], values.take(sorted_index[lo:hi] - start).to_pylist()):
                out[pos] = value
        return out

    def labels(self) -> np.ndarray:
        """Each row's class index (into ``classes``), read from the ``label`` column alone."""
        import pyarrow.compute as pc

        index = {name: i for i, name in enumerate(self.classes)}
        codes = np.empty(self.num_rows, np.int64)
        start = 0
        for group in range(self.num_row_groups):
            col = self._file.read_row_group(group, columns=["label"]).column("label")
            encoded = pc.dictionary_encode(col.combine_chunks())
            lookup = np.array([index.get(v, -1) for v in encoded.dictionary.to_pylist()], np.int64)
            codes[start : start + len(col)] = lookup[encoded.indices.to_numpy(zero_copy_only=False)]
            start += len(col)
        if (codes < 0).any():
            raise DataError(f"'{self.where}' has rows whose label is not in its manifest's classes; extract again")
        return codes

    def _group_features(self, group: int, cols: slice) -> np.ndarray:
        """Row group ``group``'s features (columns ``cols``), decoded
        DECODE_ROWS at a time: Arrow's decode of a whole 8,192 x 1,280
        column chunk held ~250 MB at once, in slices ~100 MB less (and
        faster, measured)."""
        parts = []
        for batch in self._file.iter_batches(batch_size=DECODE_ROWS, row_groups=[group], columns=["features"]):
            arr = batch.column(0)
            flat = arr.flatten().to_numpy(zero_copy_only=False)  # flatten: the batch's own rows, whatever its offset
            parts.append(flat.reshape(len(arr), -1)[:, cols])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def groups(self, tap: str | None = None, order=None) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, features of ``tap`` in the storage dtype) per row
        group, in ``order`` (row-group indices; default: file order)."""
        cols = self.tap_slice(tap)
        for group in (range(self.num_row_groups) if order is None else order):
            yield int(self._starts[group]), self._group_features(int(group), cols)

    def rows(self, index, tap: str | None = None) -> np.ndarray:
        """float32 features of the rows ``index`` (in that order), reading only
        the row groups that hold them."""
        index = np.asarray(index, np.int64)
        cols = self.tap_slice(tap)
        out = np.empty((len(index), cols.stop - cols.start), np.float32)
        order = np.argsort(index, kind="stable")
        sorted_index = index[order]
        if len(index) and (sorted_index[0] < 0 or sorted_index[-1] >= self.num_rows):
            raise IndexError(f"rows {sorted_index[0]}..{sorted_index[-1]} of {self.num_rows}")
        wanted = np.unique(np.searchsorted(self._starts, sorted_index, side="right") - 1)
        for start, feats in self.groups(tap, order=wanted):
            lo, hi = np.searchsorted(sorted_index, [start, start + len(feats)])
            out[order[lo:hi]] = feats[sorted_index[lo:hi] - start]
        return out
