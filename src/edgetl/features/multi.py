"""Features of several graphs (one per input size) with one decode per image.

The search extracts the same images at several input sizes. Decoding a
photo costs more than running a small input size through the network, so
each image is read and decoded once and resized for every graph that still
needs it; each graph keeps its own cache folder, exactly as
:class:`FeatureExtractor` would fill it (a rerun, or a later single-size
run, finds everything cached)."""

from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tqdm.auto import tqdm

from .extract import Extraction, FeatureExtractor, _prepare_many, _read_and_hash, show_progress

log = logging.getLogger(__name__)


def extract_many(graphs: list, paths: list[str], cache_dir: str | None = None, batch_size: int = 32,
                 num_workers: int = 2, num_threads: int | None = None, progress: bool | None = None,
                 desc: str = "features") -> list[Extraction]:
    """One :class:`Extraction` per graph, in order, for the same ``paths``."""
    # Sessions take turns: without spinning, one's idle workers do not starve the next.
    extractors = [FeatureExtractor(g, cache_dir=cache_dir, batch_size=batch_size, num_workers=num_workers,
                                   num_threads=num_threads, spinning=len(graphs) == 1) for g in graphs]
    skipped: list[dict] = []
    keys: list[bytes | None] = [None] * len(paths)
    with ThreadPoolExecutor(max(1, num_workers)) as pool:
        for i, (key, err) in enumerate(pool.map(_read_and_hash, paths, chunksize=64)):
            keys[i] = key
            if err:
                skipped.append({"path": paths[i], "reason": err})
        todo: dict[bytes, int] = {}
        for i, key in enumerate(keys):
            if key is not None and key not in todo and any(key not in e.cache for e in extractors):
                todo[key] = i
        misses = list(todo.values())
        failed: dict[bytes, str] = {}
        bar = tqdm(total=len(misses), desc=desc, unit="img", disable=not show_progress(progress), leave=False)
        chunks = [misses[i : i + batch_size] for i in range(0, len(misses), batch_size)]
        specs = [g.input_spec for g in graphs]
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
        if key in failed:
            skipped.append({"path": paths[i], "reason": failed[key]})
    for item in skipped:
        log.warning("skipped %s: %s", item["path"], item["reason"])
    ok_rows = np.asarray([i for i, k in enumerate(keys) if k is not None and k not in failed], np.int64)
    num_extracted = len(misses) - len(set(failed))
    num_cached = int(sum(1 for k in keys if k is not None)) - len(misses)
    out = []
    for extractor in extractors:
        feats = extractor.cache.get([keys[i] for i in ok_rows]) if len(ok_rows) else np.zeros((0, 0), np.float32)
        graph = extractor.graph
        slices = graph.tap_slices() if graph.taps else {"final": slice(0, feats.shape[1])}
        out.append(Extraction(feats, ok_rows, list(skipped), num_extracted=num_extracted, num_cached=num_cached,
                              tap_slices=slices))
    return out
