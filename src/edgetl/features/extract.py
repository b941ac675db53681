"""Feature extraction with ONNX Runtime, fed by a pool of decode workers.

Images are hashed (sha256 of their bytes) first; only cache misses are
decoded and run. Decoding and preprocessing of the next batches happen in
worker threads (Pillow releases the GIL) while ONNX Runtime runs the current
one, so the session is not starved."""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from ..data.image import decode_image
from ..data.input_spec import InputSpec
from ..errors import DataError
from ..export.backbone_onnx import FINAL_TAP, INPUT_NAME, BackboneGraph, default_cache_dir
from ..runtime.session import make_session
from .cache import FeatureCache

log = logging.getLogger(__name__)


def show_progress(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else progress


@dataclass
class Extraction:
    features: np.ndarray  # (n_ok, D), rows in the order of ``ok``
    ok: np.ndarray  # indices into the input paths that produced features
    skipped: list[dict] = field(default_factory=list)
    num_extracted: int = 0  # cache misses actually run
    num_cached: int = 0
    # Taps graph: where each tap sits in a row ({"final": all of it} otherwise).
    tap_slices: dict[str, slice] = field(default_factory=dict)

    def tap(self, name: str) -> np.ndarray:
        """The features of tap ``name`` (``"final"``: the backbone's features), (n_ok, C_tap)."""
        if name not in self.tap_slices:
            raise KeyError(f"no tap {name!r}; taps: {list(self.tap_slices)}")
        if not len(self.features):
            return np.zeros((0, self.tap_slices[name].stop - self.tap_slices[name].start), np.float32)
        return self.features[:, self.tap_slices[name]]


def _read_and_hash(path: str) -> tuple[bytes | None, str | None]:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return None, f"cannot read ({exc.strerror})"
    if not data:
        return None, "empty file (0 bytes)"
    return hashlib.sha256(data).digest(), None


def _prepare(paths: list[str], spec: InputSpec):
    """Decode + preprocess one batch in a worker: (batch, ok_positions, errors)."""
    batches, ok, errors = _prepare_many(paths, [spec])
    return batches[0], ok, errors


def _prepare_many(paths: list[str], specs: list[InputSpec]):
    """Decode a batch once in a worker, preprocess it for every spec:
    (one batch per spec, ok_positions, errors)."""
    images, ok, errors = [], [], []
    for pos, path in enumerate(paths):
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            images.append(decode_image(data, path, "native"))
            ok.append(pos)
        except DataError as exc:
            errors.append((pos, str(exc).split(": ", 1)[-1]))
        except OSError as exc:
            errors.append((pos, f"cannot read ({exc.strerror})"))
    batches = [spec.batch(images) if images else None for spec in specs]
    return batches, ok, errors


class FeatureExtractor:
    """Pooled features of a backbone graph, through the cache."""

    def __init__(
        self,
        graph: BackboneGraph,
        cache_dir: str | None = None,
        batch_size: int = 32,
        num_workers: int = 2,
        num_threads: int | None = None,
        spinning: bool = True,
    ):
        self.graph = graph
        self.batch_size = batch_size
        self.num_workers = max(1, num_workers)
        self.session = make_session(graph.onnx_path, num_threads=num_threads, spinning=spinning)
        folder = os.path.join(cache_dir or default_cache_dir(), "features", graph.key)
        self.cache = FeatureCache(folder)
        self.outputs = graph.feature_outputs

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        """One row per image: the features, or for a taps graph every tap's
        pooled output concatenated in graph order ("final" last)."""
        outs = self.session.run(self.outputs, {INPUT_NAME: batch})
        return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=1)

    def extract(self, paths: list[str], progress: bool | None = None, desc: str = "features") -> Extraction:
        spec = self.graph.input_spec
        skipped: list[dict] = []
        keys: list[bytes | None] = [None] * len(paths)
        with ThreadPoolExecutor(self.num_workers) as pool:
            for i, (key, err) in enumerate(pool.map(_read_and_hash, paths, chunksize=64)):
                keys[i] = key
                if err:
                    skipped.append({"path": paths[i], "reason": err})
            # Identical images share a key: extract each distinct one once.
            todo: dict[bytes, int] = {}
            for i, key in enumerate(keys):
                if key is not None and key not in self.cache and key not in todo:
                    todo[key] = i
            misses = list(todo.values())
            failed: dict[bytes, str] = {}
            num_cached = sum(1 for k in keys if k is not None) - len(misses)
            bar = tqdm(total=len(misses), desc=desc, unit="img", disable=not show_progress(progress), leave=False)
            chunks = [misses[i : i + self.batch_size] for i in range(0, len(misses), self.batch_size)]
            queue: deque = deque()
            next_chunk = 0
            # Keep a few batches decoding ahead of the one ONNX Runtime runs.
            while next_chunk < len(chunks) or queue:
                while next_chunk < len(chunks) and len(queue) < self.num_workers + 1:
                    chunk = chunks[next_chunk]
                    queue.append((chunk, pool.submit(_prepare, [paths[i] for i in chunk], spec)))
                    next_chunk += 1
                chunk, future = queue.popleft()
                batch, ok, errors = future.result()
                for pos, reason in errors:
                    failed[keys[chunk[pos]]] = reason
                if batch is not None:
                    feats = self.run_batch(batch)
                    self.cache.put([keys[chunk[pos]] for pos in ok], feats)
                bar.update(len(chunk))
            bar.close()
            self.cache.flush()
        for i, key in enumerate(keys):
            if key in failed:  # every copy of a bad file, not only the one decoded
                skipped.append({"path": paths[i], "reason": failed[key]})
        for item in skipped:
            log.warning("skipped %s: %s", item["path"], item["reason"])
        ok = np.asarray([i for i, k in enumerate(keys) if k is not None and k not in failed], np.int64)
        features = self.cache.get([keys[i] for i in ok]) if len(ok) else np.zeros((0, 0), np.float32)
        # Failed decodes are retried next time; they are not 'extracted'.
        slices = self.graph.tap_slices() if self.graph.taps else {FINAL_TAP: slice(0, features.shape[1])}
        return Extraction(features, ok, skipped, num_extracted=len(misses) - len(set(failed)), num_cached=num_cached,
                          tap_slices=slices)
