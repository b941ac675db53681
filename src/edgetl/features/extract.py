"""Feature extraction with ONNX Runtime, fed by a pool of decode workers.

Images are hashed (sha256 of their bytes) first; only cache misses are
decoded and run. Decoding and preprocessing of the next batches happen in
worker threads (Pillow releases the GIL) while ONNX Runtime runs the current
one, so the session is not starved."""

from __future__ import annotations

import hashlib
import logging
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from .._files import cache_path
from ..data.image import decode_image
from ..data.input_spec import InputSpec
from ..errors import DataError
from ..export.backbone_onnx import INPUT_NAME, BackboneGraph
from ..runtime.session import make_session
from ..zoo import FINAL_TAP
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
        folder = cache_path(cache_dir, "features", graph.key)
        self.cache = FeatureCache(folder)
        self.outputs = graph.feature_outputs

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        """One row per image: the features, or for a taps graph every tap's
        pooled output concatenated in graph order ("final" last)."""
        outs = self.session.run(self.outputs, {INPUT_NAME: batch})
        return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=1)

    def extract(self, paths: list[str], progress: bool | None = None, desc: str = "features") -> Extraction:
        return extract_all([self], paths, progress, desc)[0]


def extract_all(extractors: list[FeatureExtractor], paths: list[str], progress: bool | None = None,
                desc: str = "features") -> list[Extraction]:
    """One :class:`Extraction` per extractor, for the same ``paths``: each
    image is hashed, read and decoded once, then preprocessed and run for
    every extractor whose cache lacks it. Decoding happens in worker threads
    a few batches ahead of ONNX Runtime."""
    first = extractors[0]
    batch_size, num_workers = first.batch_size, first.num_workers
    skipped: list[dict] = []
    keys: list[bytes | None] = [None] * len(paths)
    with ThreadPoolExecutor(num_workers) as pool:
        for i, (key, err) in enumerate(pool.map(_read_and_hash, paths, chunksize=64)):
            keys[i] = key
            if err:
                skipped.append({"path": paths[i], "reason": err})
        # Identical images share a key: extract each distinct one once.
        todo: dict[bytes, int] = {}
        for i, key in enumerate(keys):
            if key is not None and key not in todo and any(key not in e.cache for e in extractors):
                todo[key] = i
        misses = list(todo.values())
        failed: dict[bytes, str] = {}
        bar = tqdm(total=len(misses), desc=desc, unit="img", disable=not show_progress(progress), leave=False)
        chunks = [misses[i : i + batch_size] for i in range(0, len(misses), batch_size)]
        specs = [e.graph.input_spec for e in extractors]
        queue: deque = deque()
        next_chunk = 0
        while next_chunk < len(chunks) or queue:
            while next_chunk < len(chunks) and len(queue) < num_workers + 1:
                chunk = chunks[next_chunk]
                queue.append((chunk, pool.submit(_prepare_many, [paths[i] for i in chunk], specs)))
                next_chunk += 1
            chunk, future = queue.popleft()
            batches, ok, errors = future.result()
            for pos, reason in errors:
                failed[keys[chunk[pos]]] = reason
            for extractor, batch in zip(extractors, batches):
                if batch is None:
                    continue
                chunk_keys = [keys[chunk[pos]] for pos in ok]
                need = [j for j, k in enumerate(chunk_keys) if k not in extractor.cache]
                if need:
                    feats = extractor.run_batch(batch[need] if len(need) < len(ok) else batch)
                    extractor.cache.put([chunk_keys[j] for j in need], feats)
            bar.update(len(chunk))
        bar.close()
        for extractor in extractors:
            extractor.cache.flush()
    for i, key in enumerate(keys):
        if key in failed:  # every copy of a bad file, not only the one decoded
            skipped.append({"path": paths[i], "reason": failed[key]})
    for item in skipped:
        log.warning("skipped %s: %s", item["path"], item["reason"])
    ok_rows = np.asarray([i for i, k in enumerate(keys) if k is not None and k not in failed], np.int64)
    # Failed decodes are retried next time; they are not 'extracted'.
    num_extracted = len(misses) - len(set(failed))
    num_cached = int(sum(1 for k in keys if k is not None)) - len(misses)
    out = []
    for extractor in extractors:
        feats = extractor.cache.get([keys[i] for i in ok_rows]) if len(ok_rows) else np.zeros((0, 0), np.float32)
        graph = extractor.graph
        slices = graph.tap_slices() if graph.taps else {FINAL_TAP: slice(0, feats.shape[1])}
        out.append(Extraction(feats, ok_rows, list(skipped), num_extracted=num_extracted, num_cached=num_cached,
                              tap_slices=slices))
    return out
