"""``edgetl extract DATA --out FEATURES_DIR``: the features a ``train`` with
the same settings would use, extracted (by either engine, into the same
content-addressed cache, so a later ``train`` extracts nothing) and exported
as Parquet, one file per input size:

``FEATURES_DIR/features-<size>px.parquet``: columns ``key`` (sha256 of the
image bytes, hex: the cache's key), ``path`` (relative to DATA_DIR),
``label`` (the class folder), ``features`` (fixed-size list of float32:
every tap's pooled output concatenated, or only ``--tap``'s when pinned);
schema metadata ``edgetl`` (JSON: backbone, weights id, InputSpec, graph
key, where each tap sits in a row). ``manifest.json`` lists the files, the
classes and the skipped files. FEATURES_DIR is written as a whole (staged,
then renamed), like a run folder; ``--overwrite`` replaces an earlier one."""

from __future__ import annotations

import json
import logging
import os

import numpy as np

from ..errors import MissingExtraError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingExtraError("'edgetl extract' writes Parquet with pyarrow, which the 'ray' extra brings: "
                                "pip install 'edgetl[ray]'") from None
    return pa, pq


def _table(pa, extraction, graph, used, tap: str | None):
    """One size's rows as an Arrow table with its metadata."""
    slices = extraction.tap_slices
    feats = extraction.tap(tap) if tap else extraction.features
    slices = {tap: slice(0, feats.shape[1])} if tap else slices
    feats = np.ascontiguousarray(feats, np.float32)
    root = os.path.abspath(used.root)
    meta = {"backbone": graph.backbone, "weights_id": graph.weights_id, "graph_key": graph.key,
            "input_spec": json.loads(graph.input_spec.to_json()), "image_size": graph.input_spec.image_size,
            "taps": {name: [s.start, s.stop] for name, s in slices.items()}}
    return pa.table({
        "key": pa.array([k.hex() for k in extraction.keys], pa.string()),
        "path": pa.array([os.path.relpath(os.path.abspath(p), root) for p in used.paths], pa.string()),
        "label": pa.array([used.classes[t] for t in used.targets], pa.string()),
        "features": pa.FixedSizeListArray.from_arrays(pa.array(feats.reshape(-1), pa.float32()), feats.shape[1]),
    }).replace_schema_metadata({"edgetl": json.dumps(meta, sort_keys=True)})


def extract_features(config, *, cache_dir: str | None = None, progress: bool | None = None) -> dict:
    """Extract (``config.engine``) and write FEATURES_DIR (``config.out``);
    returns the manifest."""
    from ..data.folder import scan_folder
    from .head_path import _search
    from .rundir import check_out_dir, check_out_writable, claim_run, publish, staging

    pa, pq = _pyarrow()
    check_out_writable(config.out)
    with claim_run(config.out):
        check_out_dir(config.out, config.data_dir, config.overwrite)
        folder = scan_folder(config.data_dir)
        searcher, _, _, _ = _search(config, folder, cache_dir, {})
        log.info("%d images in %d classes; extracting features at %s px", len(folder.paths), len(folder.classes),
                 ", ".join(str(s) for s in searcher.extract_sizes))
        first = searcher.extract(folder.paths, progress=progress, engine=config.engine,
                                 ray_address=config.ray_address)
        used = folder.subset(first.ok)
        manifest = {"files": [], "classes": list(used.classes), "num_images": len(used.paths),
                    "skipped": folder.skipped + first.skipped, "engine": config.engine,
                    "extracted": first.num_extracted, "from_cache": first.num_cached}
        with staging(config.out) as tmp_dir:
            for size in searcher.extract_sizes:
                name = f"features-{size}px.parquet"
                pq.write_table(_table(pa, searcher.features[size], searcher.graphs[size], used, config.tap),
                               os.path.join(tmp_dir, name))
                manifest["files"].append({"file": name, "image_size": size, "graph_key": searcher.graphs[size].key})
            with open(os.path.join(tmp_dir, MANIFEST), "w") as fh:
                json.dump(manifest, fh, indent=2)
            publish(tmp_dir, config.out)
    return manifest
