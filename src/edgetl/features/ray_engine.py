"""The ``ray`` extraction engine: the cache misses of a pass on Ray Data.

Ray Data's batch-inference pattern: the chunks of a pass (the very chunks
the in-process engine makes: ``batch_size`` misses in order) become a
dataset of one row per chunk, ``map_batches`` hands each to an actor
(``_Worker``: one ONNX Runtime session per graph, built once per actor by
the same ``FeatureExtractor`` code) that reads, hashes, decodes and
preprocesses the chunk with ``_prepare_many`` and runs it, and the driver
streams the per-image rows back. The dataset's rows are only chunk
numbers: what a chunk holds (positions, paths, keys as listed,
which graphs hold each) is the pass's ``_PassPlan``, a few numpy arrays put
in Ray's object store once and read by every actor; the driver never holds
a Python object per image for Ray (a million images: ~60 MB, not ~1 GB). The driver keeps what the in-process
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
from dataclasses import dataclass

import numpy as np

from ..data.paths import PathList, as_path_list
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


@dataclass
class _PassPlan:
    """One pass's chunks, compact: chunk ``j`` is the misses
    ``[j * size, (j + 1) * size)``: their positions in the listing, paths,
    keys as listed ((M, 32) uint8) and which graphs already hold each (a bit
    per graph)."""

    size: int
    index: np.ndarray
    paths: PathList
    keys: np.ndarray
    have: np.ndarray

    def __len__(self) -> int:
        return -(-len(self.index) // self.size)

    def row(self, j: int) -> dict:
        """Chunk ``j`` as the worker reads it: lists of positions, paths, keys (bytes), bits."""
        part = slice(j * self.size, (j + 1) * self.size)
        return {"i": self.index[part].tolist(), "path": list(self.paths[part]),
                "key": [k.tobytes() for k in self.keys[part]], "have": self.have[part].tolist()}


def _pass_plan(extractors, paths, misses, state) -> _PassPlan:
    """The pass's chunks as a _PassPlan (no Python object per miss)."""
    misses = np.asarray(misses, np.int64)
    every = len(misses) == len(paths)  # a first run: every position, in order (ray.put copies; no copy here)
    keys = state.keys.rows if every else state.keys.rows[misses]
    have = np.zeros(len(misses), np.uint8 if len(extractors) <= 8 else np.int64)
    for g, extractor in enumerate(extractors):
        have |= extractor.cache.contains(keys).astype(have.dtype) << g
    if isinstance(paths, PathList):
        listed = paths if every else paths.take(misses)
    else:
        listed = as_path_list([paths[i] for i in misses])
    return _PassPlan(extractors[0].batch_size, misses, listed, keys, have)


def _chunk_rows(plan: _PassPlan):
    """The plan's chunks as rows, one at a time (what each actor call reads)."""
    for j in range(len(plan)):
        yield plan.row(j)


class _Worker:
    """One Ray Data actor: the graphs' sessions, built once, and the pass's
    plan (``plan``: [its ObjectRef], read once); each call is one chunk
    number in, one row per image out."""

    def __init__(self, graphs: list, num_threads: int | None, spinning: bool, plan: list):
        import ray

        self.extractors = [FeatureExtractor(g, num_threads=num_threads, spinning=spinning, use_cache=False)
                           for g in graphs]
        self.specs = [g.input_spec for g in graphs]
        self.plan = ray.get(plan[0]) if isinstance(plan[0], ray.ObjectRef) else plan[0]

    def __call__(self, batch: dict) -> dict:
        row = self.plan.row(int(batch["id"][0]))
        index, paths, listed, have = row["i"], row["path"], row["key"], row["have"]
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


def _take_rows(extractors, paths, out: dict, state, stored: list[set]) -> int:
    """One streamed batch of per-image rows: bookkeeping, then each graph's
    new rows into its cache (a key already stored, e.g. by a retried batch,
    is dropped). Returns how many images it covered."""
    chunk = [int(i) for i in out["i"]]
    digests = [bytes(d) or None for d in out["digest"]]
    errors = [(pos, str(e), bool(out["by_content"][pos])) for pos, e in enumerate(out["error"]) if e]
    note_decoded(paths, chunk, digests, errors, state)
    failed = {pos for pos, _, _ in errors}
    chunk_keys = [state.keys[i] for i in chunk]  # misses: every one was hashed
    for g, extractor in enumerate(extractors):
        cached = extractor.cache.contains(chunk_keys).tolist()
        keys, rows, where = [], [], []
        for pos, blob in enumerate(out[f"f{g}"]):
            key = chunk_keys[pos]
            if not blob or pos in failed or cached[pos] or key in stored[g]:
                continue
            stored[g].add(key)
            keys.append(key)
            rows.append(np.frombuffer(bytes(blob), np.float32))
            where.append(paths[chunk[pos]])
        if keys:
            store(extractor, keys, np.stack(rows), where, state)
        if not extractor.cache.num_pending():
            stored[g].clear()  # all in the cache's index now: the set stays a chunk or two long, not a listing
    return len(chunk)


def _run_on_ray(ray, extractors, paths, misses, state, bar, rate) -> None:
    plan = _pass_plan(extractors, paths, misses, state)
    num_chunks = len(plan)
    if not num_chunks:
        return
    graphs = [e.graph for e in extractors]
    spinning = len(graphs) == 1  # as extract_many: sessions that take turns do not spin
    num_actors = max(1, min(num_chunks, int(ray.available_resources().get("CPU", 1) // ACTOR_CPUS)))
    plan_ref = ray.put(plan)  # once, in the object store: each actor reads it once
    del plan
    # Rows of chunk numbers only, made here: with ray.data.range (read tasks, each wanting a CPU) a pool
    # of as many actors as CPUs got no rows and the run hung (seen on 2 CPUs).
    numbers = [{"id": j} for j in range(num_chunks)]
    dataset = ray.data.from_items(numbers, override_num_blocks=num_chunks).map_batches(
        _Worker, batch_size=1, batch_format="numpy", num_cpus=ACTOR_CPUS,
        compute=ray.data.ActorPoolStrategy(size=num_actors),
        fn_constructor_kwargs={"graphs": graphs, "num_threads": ACTOR_CPUS, "spinning": spinning,
                               "plan": [plan_ref]})
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
