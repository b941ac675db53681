"""Features of several graphs (one per input size) with one decode per image.

The search extracts the same images at several input sizes. Decoding a
photo costs more than running a small input size through the network, so
each image is read and decoded once and resized for every graph that still
needs it; each graph keeps its own cache folder, exactly as
:class:`FeatureExtractor` would fill it (a rerun, or a later single-size
run, finds everything cached)."""

from __future__ import annotations

from ..data.paths import as_path_list
from .extract import Extraction, FeatureExtractor, extract_all


def extract_many(graphs: list, paths: list[str], cache_dir: str | None = None, batch_size: int = 32,
                 num_workers: int = 2, num_threads: int | None = None, progress: bool | None = None,
                 desc: str = "features", run_pass=None) -> list[Extraction]:
    """One :class:`Extraction` per graph, in order, for the same ``paths``
    (``run_pass``: the engine's, see ``extract_all``; default in process)."""
    # Sessions take turns: without spinning, one's idle workers do not starve the next.
    extractors = [FeatureExtractor(g, cache_dir=cache_dir, batch_size=batch_size, num_workers=num_workers,
                                   num_threads=num_threads, spinning=len(graphs) == 1) for g in graphs]
    # A PathList (a list given is made one): a million paths cost tens of MB, not a Python object each.
    return extract_all(extractors, as_path_list(paths), progress, desc, run_pass)
