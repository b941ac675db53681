"""The ``ray`` extraction engine: the cache misses of a pass on Ray Data.

Ray Data's batch-inference pattern: the chunks of a pass (the very chunks
the in-process engine makes: ``batch_size`` misses in order) become a
dataset of one row per chunk, ``map_batches`` hands each to an actor
(``_Worker``: one ONNX Runtime session per graph, built once per actor by
the same ``FeatureExtractor`` code) that reads, hashes, decodes and
preprocesses the chunk with ``_prepare_many`` and runs it, and the driver
streams the per-image rows back. The driver keeps what the in-process
engine keeps: the listing and hashes, the bookkeeping of unreadable and
changed files (``note_decoded``) and the one FeatureCache, into which it
puts every row (shards written atomically as always). So the features are
those of the in-process engine bit for bit, a rerun (with either engine)
extracts only what is missing, and a killed driver leaves whole shards.

Faults: Ray Data restarts a dead actor and retries its batch (its actor
pools default to ``max_restarts=-1, max_task_retries=-1``); a row that
arrives twice (a retried batch) is put once: the driver drops keys it
already stored. Images and the cached graphs are read by path: on a cluster
of several machines they must sit on a shared file system (for now)."""

from __future__ import annotations

import contextlib
import logging

import numpy as np

from ..errors import MissingExtraError
from .extract import FeatureExtractor, _prepare_many, note_decoded, store

log = logging.getLogger(__name__)

RAY_PIN = "ray[data]==2.60.0"
# One CPU and one ONNX Runtime thread per actor: N actors fill N cores without oversubscribing them. The
# rows do not depend on the thread count (measured: EfficientNet-Lite0's taps graph at 32 and 224 px gives
# the same bits with 1, 2 or the default number of threads; the engines' test compares bit for bit).
ACTOR_CPUS = 1


def import_ray():
    """``ray`` with Ray Data, or a one-line MissingExtraError."""
    try:
        import ray
        import ray.data  # noqa: F401  (the engine's API)
    except ImportError as exc:
        raise MissingExtraError(f"--engine ray needs the 'ray' extra ({exc.name} is not installed): "
                                f"pip install 'edgetl[ray]'") from None
    return ray


class _Worker:
    """One Ray Data actor: the graphs' sessions, built once; each call is one
    chunk (a row of paths) in, one row per image out."""

    def __init__(self, graphs: list, num_threads: int | None, spinning: bool):
        self.extractors = [FeatureExtractor(g, num_threads=num_threads, spinning=spinning, use_cache=False)
                           for g in graphs]
        self.specs = [g.input_spec for g in graphs]

    def __call__(self, batch: dict) -> dict:
        index, paths = list(batch["i"][0]), [str(p) for p in batch["path"][0]]
        listed, have = [bytes(k) for k in batch["key"][0]], [int(h) for h in batch["have"][0]]
        batches, ok, digests, errors = _prepare_many(paths, self.specs)
        n = len(paths)
        out = {"i": np.asarray(index, np.int64), "digest": _objects([d or b"" for d in digests]),
               "error": _objects([""] * n), "by_content": np.zeros(n, bool)}
        for pos, reason, by_content in errors:
            out["error"][pos], out["by_content"][pos] = reason, by_content
        for g, (extractor, images) in enumerate(zip(self.extractors, batches)):
            column = [b""] * n
            # As in process: rows only for what this graph's cache lacked (or what changed since listed).
            need = [j for j, pos in enumerate(ok) if digests[pos] != listed[pos] or not have[pos] >> g & 1]
            if images is not None and need:
                feats = extractor.run_batch(images[need] if len(need) < len(ok) else images)
                for j, row in zip(need, feats):
                    column[ok[j]] = np.ascontiguousarray(row, np.float32).tobytes()
            out[f"f{g}"] = _objects(column)
        return out


def _objects(items: list) -> np.ndarray:
    out = np.empty(len(items), object)
    out[:] = items
    return out


def _chunk_rows(extractors, paths, misses, state) -> list[dict]:
    """The pass's chunks as dataset rows: positions, paths, the keys as
    listed and which graphs already hold each (a bit per graph)."""
    size = extractors[0].batch_size
    rows = []
    for start in range(0, len(misses), size):
        chunk = misses[start : start + size]
        keys = [state.keys[i] for i in chunk]
        have = [sum(1 << g for g, e in enumerate(extractors) if k in e.cache) for k in keys]
        rows.append({"i": chunk, "path": [paths[i] for i in chunk], "key": keys, "have": have})
    return rows


def _take_rows(extractors, paths, out: dict, state, stored: list[set]) -> int:
    """One streamed batch of per-image rows: bookkeeping, then each graph's
    new rows into its cache (a key already stored, e.g. by a retried batch,
    is dropped). Returns how many images it covered."""
    chunk = [int(i) for i in out["i"]]
    digests = [bytes(d) or None for d in out["digest"]]
    errors = [(pos, str(e), bool(out["by_content"][pos])) for pos, e in enumerate(out["error"]) if e]
    note_decoded(paths, chunk, digests, errors, state)
    failed = {pos for pos, _, _ in errors}
    for g, extractor in enumerate(extractors):
        keys, rows, where = [], [], []
        for pos, blob in enumerate(out[f"f{g}"]):
            key = state.keys[chunk[pos]]
            if not blob or pos in failed or key in extractor.cache or key in stored[g]:
                continue
            stored[g].add(key)
            keys.append(key)
            rows.append(np.frombuffer(bytes(blob), np.float32))
            where.append(paths[chunk[pos]])
        if keys:
            store(extractor, keys, np.stack(rows), where, state)
    return len(chunk)


def _run_on_ray(ray, extractors, paths, misses, state, bar, rate) -> None:
    rows = _chunk_rows(extractors, paths, misses, state)
    if not rows:
        return
    graphs = [e.graph for e in extractors]
    spinning = len(graphs) == 1  # as extract_many: sessions that take turns do not spin
    num_actors = max(1, min(len(rows), int(ray.available_resources().get("CPU", 1) // ACTOR_CPUS)))
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        _Worker, batch_size=1, batch_format="numpy", num_cpus=ACTOR_CPUS,
        compute=ray.data.ActorPoolStrategy(size=num_actors),
        fn_constructor_kwargs={"graphs": graphs, "num_threads": ACTOR_CPUS, "spinning": spinning})
    stored: list[set] = [set() for _ in extractors]
    try:
        for out in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            n = _take_rows(extractors, paths, out, state, stored)
            bar.update(n)
            rate.add(n)
    finally:  # also when interrupted: what was stored is kept
        for extractor in extractors:
            extractor.cache.flush()


def _connect(ray, address: str | None, progress: bool | None) -> bool:
    """Join ``address`` (``auto``, ``host:port``, ``ray://...``) or start a
    local Ray; True when this call started it (and so shuts it down)."""
    from .extract import show_progress

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = show_progress(progress)
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # its per-dataset INFO lines are not the user's business
    if ray.is_initialized():
        return False
    log.info("starting Ray%s", f" (joining {address})" if address else " on this machine")
    # No address: a Ray of its own ("local"), never a cluster 'ray start' left running here (that is "auto").
    ray.init(address=address or "local", include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    return True


@contextlib.contextmanager
def ray_pass(address: str | None = None, progress: bool | None = None):
    """A ``run_pass`` for ``extract_all`` that runs each pass on Ray (joined
    or started here; a Ray started here is shut down on the way out)."""
    ray = import_ray()
    started = _connect(ray, address, progress)

    def run_pass(extractors, paths, misses, state, pool, bar, rate):
        _run_on_ray(ray, extractors, paths, misses, state, bar, rate)

    try:
        yield run_pass
    finally:
        if started:
            ray.shutdown()
