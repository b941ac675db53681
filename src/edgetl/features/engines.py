"""Where feature extraction runs: the engine seam.

``local`` (the default): this process, decode threads feeding one ONNX
Runtime session per graph (``multi.extract_many``). ``ray``: the cache
misses go to Ray Data actors (``ray_engine``), each with the same
``_prepare_many`` and the same cached ONNX graph; the driver keeps the
listing, the hashing, the bookkeeping of skipped files and the one
FeatureCache, so both engines fill the same cache with the same rows and
either one reuses what the other extracted. Ray is imported only when the
``ray`` engine runs."""

from __future__ import annotations

from ..errors import DataError
from .extract import Extraction
from .multi import extract_many

ENGINES = ("local", "ray")
DEFAULT_ENGINE = "local"


def extract_graphs(graphs: list, paths: list[str], cache_dir: str | None = None, *, engine: str = DEFAULT_ENGINE,
                   ray_address: str | None = None, progress: bool | None = None,
                   desc: str = "features", **kwargs) -> list[Extraction]:
    """One :class:`Extraction` per graph, in order, for the same ``paths``,
    computed by ``engine`` (``kwargs``: ``extract_many``'s batch_size,
    num_workers, num_threads)."""
    if engine == "local":
        if ray_address:
            raise DataError("--ray-address needs --engine ray")
        return extract_many(graphs, paths, cache_dir=cache_dir, progress=progress, desc=desc, **kwargs)
    if engine == "ray":
        from .ray_engine import ray_pass

        with ray_pass(ray_address, progress) as run_pass:
            return extract_many(graphs, paths, cache_dir=cache_dir, progress=progress, desc=desc,
                                run_pass=run_pass, **kwargs)
    raise DataError(f"Unknown engine {engine!r}; choose {' or '.join(ENGINES)}")
