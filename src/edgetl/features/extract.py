"""Feature extraction with ONNX Runtime, fed by a pool of decode workers.

Images are hashed (sha256 of their bytes) first; only cache misses are
decoded and run. A miss is read once more, and those bytes are both hashed
and decoded: features are cached under the hash of what was decoded, never
of what was there before (a photo replaced mid-run). Decoding and
preprocessing of the next batches happen in worker threads (Pillow releases
the GIL) while ONNX Runtime runs the current one, so the session is not
starved. Features that are not finite stop the run (the weights are broken)
instead of entering the cache."""

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
from ..errors import DataError, WeightsError
from ..events import Rate
from ..export.backbone_onnx import INPUT_NAME, BackboneGraph
from ..runtime.session import make_session
from ..zoo import ALL_TAPS, FINAL_TAP
from .cache import FeatureCache
from .keys import KeyArray

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
    keys: KeyArray | list = field(default_factory=list)  # sha256 of each row's image (what keys the cache)

    def tap(self, name: str) -> np.ndarray:
        """The features of tap ``name`` (``"final"``: the backbone's features;
        ``"all"``: every tap's, i.e. the whole row), (n_ok, C_tap)."""
        if name == ALL_TAPS and len(self.tap_slices) > 1:
            return self.features
        if name not in self.tap_slices:
            raise KeyError(f"no tap {name!r}; taps: {list(self.tap_slices)}")
        if not len(self.features):
            return np.zeros((0, self.tap_slices[name].stop - self.tap_slices[name].start), np.float32)
        return self.features[:, self.tap_slices[name]]


def _read(path: str) -> tuple[bytes | None, str | None]:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return None, f"cannot read ({exc.strerror})"
    if not data:
        return None, "empty file (0 bytes)"
    return data, None


def _read_and_hash(path: str) -> tuple[bytes | None, str | None]:
    data, err = _read(path)
    return (hashlib.sha256(data).digest() if data else None), err


def _prepare_many(paths: list[str], specs: list[InputSpec]):
    """Read a batch in a worker, each file once: hash and decode those same
    bytes (a file replaced since it was first hashed is cached under what was
    decoded), preprocess for every spec: (one batch per spec, ok_positions,
    digest per position (None: unreadable), errors as (position, reason,
    whether the content is at fault))."""
    images, ok, errors = [], [], []
    digests: list[bytes | None] = [None] * len(paths)
    for pos, path in enumerate(paths):
        data, err = _read(path)
        if err:
            errors.append((pos, err, False))  # this file, now: its copies elsewhere may be fine
            continue
        digests[pos] = hashlib.sha256(data).digest()
        try:
            images.append(decode_image(data, path, "native"))
            ok.append(pos)
        except DataError as exc:
            errors.append((pos, str(exc).split(": ", 1)[-1], True))  # these bytes: every copy of them
    batches = [spec.batch(images) if images else None for spec in specs]
    return batches, ok, digests, errors


def _row_width(graph: BackboneGraph) -> int | None:
    """The width of a feature row (every output's, summed): a cached shard of
    another width is a miss. None when the graph does not declare it."""
    try:
        return sum(graph.tap_dims().values())
    except (ValueError, KeyError):
        return None


# ONNX Runtime's arena keeps what the largest run needed, per session, and
# the search keeps one session per input size alive: EfficientNet-Lite0 at
# 224 px held ~11 MB per image of a run (+345 MB for 32 images). Runs of at
# most four 224-px images (16 at 112 px, 64 at 56 px, ...) held +124 MB for
# the four sizes together instead of +457 MB, and ran as fast (measured on
# this 2-core machine; one image per run is slower).
PIXELS_PER_RUN = 4 * 224 * 224


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
        use_cache: bool = True,
    ):
        self.graph = graph
        self.batch_size = batch_size
        self.num_workers = max(1, num_workers)
        self.session = make_session(graph.onnx_path, num_threads=num_threads, spinning=spinning)
        # use_cache=False: the session alone (a Ray worker; the driver holds the cache).
        self.cache = FeatureCache(cache_path(cache_dir, "features", graph.key), dim=_row_width(graph)) \
            if use_cache else None
        self.outputs = graph.feature_outputs

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        """One row per image: the features, or for a taps graph every tap's
        pooled output concatenated in graph order ("final" last). Run in
        pieces of at most PIXELS_PER_RUN input pixels."""
        step = max(1, PIXELS_PER_RUN // max(1, batch.shape[2] * batch.shape[3]))
        rows = [self._run(batch[i : i + step]) for i in range(0, len(batch), step)]
        return rows[0] if len(rows) == 1 else np.concatenate(rows)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        outs = self.session.run(self.outputs, {INPUT_NAME: batch})
        return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=1)

    def extract(self, paths: list[str], progress: bool | None = None, desc: str = "features") -> Extraction:
        return extract_all([self], paths, progress, desc)[0]


MAX_PASSES = 3  # a file replaced mid-run is read again; one that changes at every read is skipped


@dataclass
class _Pass:
    """What the passes over the cache misses share."""

    keys: KeyArray  # sha256 per path (None: unreadable at hashing); a file replaced since: its new content's
    failed: dict = field(default_factory=dict)  # sha256 -> why those bytes do not decode (every copy skipped)
    lost: dict = field(default_factory=dict)  # position -> why that file could not be read again
    extracted: set = field(default_factory=set)  # sha256 of what was run

    def usable(self) -> np.ndarray:
        """Whether each position has a key, whose bytes decode, and whose file was read again when asked."""
        ok = self.keys.known.copy()
        ok[self.keys.where_in(self.failed)] = False
        if self.lost:
            ok[np.fromiter(self.lost, np.int64, len(self.lost))] = False
        return ok


def _misses(extractors: list[FeatureExtractor], state: _Pass) -> np.ndarray:
    """One position per distinct image some cache lacks (identical images are
    extracted once: the first position of each), ascending."""
    first = state.keys.first_of_each(np.flatnonzero(state.usable()))
    rows = state.keys.rows if len(first) == len(state.keys) else state.keys.rows[first]  # all: as they are
    lacking = np.zeros(len(first), bool)
    for extractor in extractors:
        lacking |= ~extractor.cache.contains(rows)
    return first[lacking]


def _check_finite(extractor: FeatureExtractor, feats: np.ndarray, paths: list[str]) -> None:
    bad = np.flatnonzero(~np.isfinite(feats).all(axis=1))
    if len(bad):
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise WeightsError(f"{extractor.graph.backbone} computes NaN or Inf features for '{paths[bad[0]]}'{more}: "
                           f"its weights hold NaN or Inf or overflow; pass other --weights")


def note_decoded(paths: list[str], chunk: list[int], digests: list, errors: list, state: _Pass) -> None:
    """What reading a chunk found (``_prepare_many``'s digests and errors, by
    position in ``chunk``): keys brought up to what was decoded, unreadable
    files and undecodable contents recorded. Every engine's bookkeeping."""
    keys = state.keys
    for pos, digest in enumerate(digests):
        i = chunk[pos]
        if digest is not None and digest != keys[i]:
            log.warning("%s changed while edgetl was reading the images; its new content is used", paths[i])
            keys[i] = digest
    for pos, reason, by_content in errors:
        if by_content:
            state.failed[keys[chunk[pos]]] = reason
        else:
            state.lost[chunk[pos]] = reason


def store(extractor: FeatureExtractor, keys: list[bytes], feats: np.ndarray, paths: list[str],
          state: _Pass) -> None:
    """Rows computed for ``keys`` (images at ``paths``) into the extractor's cache."""
    _check_finite(extractor, feats, paths)
    extractor.cache.put(keys, feats)
    state.extracted.update(keys)


def _take(extractors: list[FeatureExtractor], paths: list[str], chunk: list[int], prepared, state: _Pass) -> None:
    """A decoded chunk: keys brought up to what was decoded, then run through
    every extractor whose cache lacks it."""
    batches, ok, digests, errors = prepared
    note_decoded(paths, chunk, digests, errors, state)
    chunk_keys = [state.keys[chunk[pos]] for pos in ok]
    for extractor, batch in zip(extractors, batches):
        if batch is None:
            continue
        need = np.flatnonzero(~extractor.cache.contains(chunk_keys)).tolist()
        if need:
            feats = extractor.run_batch(batch[need] if len(need) < len(ok) else batch)
            store(extractor, [chunk_keys[j] for j in need], feats, [paths[chunk[ok[j]]] for j in need], state)


def _run_pass(extractors: list[FeatureExtractor], paths: list[str], misses: np.ndarray, state: _Pass, pool,
              bar, rate: Rate) -> None:
    """Decode ``misses`` in worker threads a few batches ahead of ONNX Runtime, and run them."""
    batch_size, num_workers = extractors[0].batch_size, extractors[0].num_workers
    num_chunks = -(-len(misses) // batch_size)
    specs = [e.graph.input_spec for e in extractors]
    queue: deque = deque()
    next_chunk = 0
    try:
        while next_chunk < num_chunks or queue:
            while next_chunk < num_chunks and len(queue) < num_workers + 1:
                chunk = [int(i) for i in misses[next_chunk * batch_size : (next_chunk + 1) * batch_size]]
                queue.append((chunk, pool.submit(_prepare_many, [paths[i] for i in chunk], specs)))
                next_chunk += 1
            chunk, future = queue.popleft()
            _take(extractors, paths, chunk, future.result(), state)
            bar.update(len(chunk))
            rate.add(len(chunk))
    finally:  # also when interrupted (Ctrl-C, SIGTERM, a cancel in the studio): what was extracted is kept
        for extractor in extractors:
            extractor.cache.flush()


def _skipped(paths: list[str], state: _Pass) -> list[dict]:
    out = [{"path": paths[i], "reason": reason} for i, reason in sorted(state.lost.items())]
    for i in state.keys.where_in(state.failed).tolist():  # every copy of a bad file, not only the one decoded
        if i not in state.lost:
            out.append({"path": paths[i], "reason": state.failed[state.keys[i]]})
    return out


# Files hashed per round of the thread pool: Executor.map submits one Future per item up front (a million
# paths: 1.7 GB of futures, measured), so the listing is fed to it a window at a time.
HASH_WINDOW = 1024


def _hash_all(pool, paths: list[str]):
    """``_read_and_hash`` of every path, in order, in ``pool``'s threads, at
    most HASH_WINDOW of them submitted at a time."""
    for start in range(0, len(paths), HASH_WINDOW):
        yield from pool.map(_read_and_hash, paths[start : start + HASH_WINDOW])


def _hash_listing(pool, paths: list[str]) -> tuple[KeyArray, list[dict]]:
    """Every path's sha256, as a KeyArray (no Python object per file), and
    the files that could not be read, with their reasons."""
    keys, skipped = KeyArray(len(paths)), []
    for i, (key, err) in enumerate(_hash_all(pool, paths)):
        if key is not None:
            keys[i] = key
        if err:
            skipped.append({"path": paths[i], "reason": err})
    return keys, skipped


def extract_all(extractors: list[FeatureExtractor], paths: list[str], progress: bool | None = None,
                desc: str = "features", run_pass=None) -> list[Extraction]:
    """One :class:`Extraction` per extractor, for the same ``paths``: each
    image is hashed, read and decoded once, then preprocessed and run for
    every extractor whose cache lacks it. Decoding happens in worker threads
    a few batches ahead of ONNX Runtime. An image replaced meanwhile is used
    (and cached) as it was decoded; its former copies are read again.
    ``run_pass``: how one pass over the cache misses is run (the engine):
    ``_run_pass`` in this process by default; ``ray_engine`` on Ray Data."""
    run_pass = run_pass or _run_pass
    with ThreadPoolExecutor(extractors[0].num_workers) as pool:
        keys, skipped = _hash_listing(pool, paths)
        state = _Pass(keys)
        misses = _misses(extractors, state)
        num_cached = int(keys.known.sum()) - len(misses)
        bar = tqdm(total=len(misses), desc=desc, unit="img", disable=not show_progress(progress), leave=False)
        rate = Rate("extract", len(misses), cached=num_cached)
        for _ in range(MAX_PASSES):
            if not len(misses):
                break
            run_pass(extractors, paths, misses, state, pool, bar, rate)
            misses = _misses(extractors, state)
            bar.total += len(misses)
            rate.total += len(misses)
        bar.close()
    for i in misses.tolist():  # still not extracted after MAX_PASSES reads: it changes faster than it is read
        state.lost[i] = "changed every time it was read; run again once it stays put"
    skipped += _skipped(paths, state)
    for item in skipped:
        log.warning("skipped %s: %s", item["path"], item["reason"])
    ok_rows = np.flatnonzero(state.usable()).astype(np.int64)
    ok_keys = keys.take(ok_rows)
    out = []
    for extractor in extractors:
        feats = extractor.cache.get(ok_keys.rows) if len(ok_rows) else np.zeros((0, 0), np.float32)
        graph = extractor.graph
        slices = graph.tap_slices() if graph.taps else {FINAL_TAP: slice(0, feats.shape[1])}
        # Failed decodes are retried next time; they are not 'extracted'.
        out.append(Extraction(feats, ok_rows, list(skipped), num_extracted=len(state.extracted),
                              num_cached=num_cached, tap_slices=slices, keys=ok_keys))
    return out
