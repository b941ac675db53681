"""``edgetl extract DATA --out FEATURES``: the features a ``train`` with the
same settings would use, extracted (by either engine, into the same
content-addressed cache, so a later ``train`` extracts nothing) and exported
as Parquet, one file per input size:

``FEATURES/features-<size>px.parquet``: columns ``key`` (sha256 of the
image bytes, hex: the cache's key), ``path`` (relative to DATA_DIR),
``label`` (the class folder), ``features`` (fixed-size list of float32, or
of float16 with ``--feature-dtype float16``, which halves the files: every
tap's pooled output concatenated, or only ``--tap``'s when pinned); schema
metadata ``edgetl`` (JSON: backbone, weights id, InputSpec, graph key,
feature dtype, where each tap sits in a row). Rows come in row groups of
:data:`ROW_GROUP_ROWS`, written one at a time (the writer never holds a
second copy of the N x D features), so a reader streams them group by group.
``manifest.json`` lists the files (rows, dim), the classes, the skipped
files, DATA_DIR (absolute), the backbone, the dtype and the row group size.

Where FEATURES lives: a local path, or any ``pyarrow.fs`` URI the user has
credentials for (``s3://bucket/prefix``, ``gs://...``, ``file:///abs``;
see :mod:`edgetl.features.location`).

* A local path is written as a whole (staged, then renamed), like a run
  folder, claimed against a concurrent run; ``--overwrite`` replaces an
  earlier one.
* A URI has no atomic rename (object stores), so: an earlier complete
  export there (its ``manifest.json``) is refused unless ``--overwrite``
  (which removes that manifest first, then the files it listed); the Parquet
  files are written under their final names, and ``manifest.json`` LAST.
  A failed write removes what it wrote, as far as it can. Two extracts to
  one URI at once are not stopped.

Either way: **a FEATURES location is complete iff its manifest.json
exists**; readers check it (``features.parquet.read_manifest``) and treat Parquet files
without one as the leftovers of an extract that did not finish."""

from __future__ import annotations

import contextlib
import json
import logging
import os

import numpy as np

from ..errors import DataError, EdgetlError, MissingExtraError, RunExistsError, StorageError
from ..features.location import is_uri, join, resolve
from ..features.parquet import MANIFEST, first_line

log = logging.getLogger(__name__)

ROW_GROUP_ROWS = 8192  # rows per Parquet row group: what a reader holds at once
FEATURE_DTYPES = ("float32", "float16")


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingExtraError("'edgetl extract' writes Parquet with pyarrow, which the 'ray' extra brings: "
                                "pip install 'edgetl[ray]'") from None
    return pa, pq


def _schema(pa, graph, slices: dict, dim: int, feature_dtype: str):
    """The file's schema, with its ``edgetl`` metadata."""
    meta = {"backbone": graph.backbone, "weights_id": graph.weights_id, "graph_key": graph.key,
            "input_spec": json.loads(graph.input_spec.to_json()), "image_size": graph.input_spec.image_size,
            "feature_dtype": feature_dtype, "taps": {name: [s.start, s.stop] for name, s in slices.items()}}
    value = pa.float16() if feature_dtype == "float16" else pa.float32()
    return pa.schema([("key", pa.string()), ("path", pa.string()), ("label", pa.string()),
                      ("features", pa.list_(value, dim))], metadata={"edgetl": json.dumps(meta, sort_keys=True)})


def _record_batch(pa, schema, feats: np.ndarray, start: int, stop: int, extraction, used, root: str):
    """Rows ``start:stop`` as one record batch: only this chunk is converted
    (float16: rounded from the float32 features)."""
    dtype = np.float16 if schema.field("features").type.value_type == pa.float16() else np.float32
    chunk = np.ascontiguousarray(feats[start:stop], np.float32).astype(dtype, copy=False)
    paths = used.paths[start:stop]
    return pa.record_batch([
        pa.array([k.hex() for k in extraction.keys[start:stop]], pa.string()),
        pa.array([os.path.relpath(os.path.abspath(p), root) for p in paths], pa.string()),
        pa.array([used.classes[t] for t in used.targets[start:stop]], pa.string()),
        pa.FixedSizeListArray.from_arrays(pa.array(chunk.reshape(-1)), chunk.shape[1]),
    ], schema=schema)


def _write_parquet(target: str, filesystem, extraction, graph, used, tap: str | None, feature_dtype: str) -> dict:
    """One size's rows into ``target`` (on ``filesystem``; None: a local
    path), a row group of ROW_GROUP_ROWS rows at a time; returns its rows and dim."""
    pa, pq = _pyarrow()
    feats = extraction.tap(tap) if tap else extraction.features  # a view: each chunk is converted on its own
    slices = {tap: slice(0, feats.shape[1])} if tap else extraction.tap_slices
    schema = _schema(pa, graph, slices, feats.shape[1], feature_dtype)
    root, rows = os.path.abspath(used.root), ROW_GROUP_ROWS
    with pq.ParquetWriter(target, schema, filesystem=filesystem) as writer:
        for start in range(0, len(feats), rows):
            batch = _record_batch(pa, schema, feats, start, min(start + rows, len(feats)), extraction, used, root)
            writer.write_batch(batch, row_group_size=rows)
    return {"rows": int(len(feats)), "dim": int(feats.shape[1])}


def _write_files(searcher, used, config, feature_dtype: str, manifest: dict, folder: str, filesystem=None,
                 written: list | None = None) -> None:
    """Every size's Parquet file into ``folder``, listed in ``manifest``;
    each path goes into ``written`` as it is begun (for a clean-up)."""
    written = [] if written is None else written
    for size in searcher.extract_sizes:
        name = f"features-{size}px.parquet"
        target = join(folder, name) if filesystem is not None else os.path.join(folder, name)
        written.append(target)
        shape = _write_parquet(target, filesystem, searcher.features[size], searcher.graphs[size], used, config.tap,
                               feature_dtype)
        manifest["files"].append({"file": name, "image_size": size, "graph_key": searcher.graphs[size].key, **shape})


def _extract(config, feature_dtype: str, cache_dir: str | None, progress: bool | None):
    """Scan and extract; (searcher, the images used, the manifest without its files)."""
    from ..data.folder import scan_folder
    from .head_path import _search

    folder = scan_folder(config.data_dir)
    searcher, _, _, _ = _search(config, folder, cache_dir, {})
    log.info("%d images in %d classes; extracting features at %s px", len(folder.paths), len(folder.classes),
             ", ".join(str(s) for s in searcher.extract_sizes))
    first = searcher.extract(folder.paths, progress=progress, engine=config.engine, ray_address=config.ray_address)
    used = folder.subset(first.ok)
    graph = searcher.graphs[searcher.extract_sizes[0]] if searcher.extract_sizes else None
    manifest = {"files": [], "classes": list(used.classes), "num_images": len(used.paths),
                "skipped": folder.skipped + first.skipped, "engine": config.engine,
                "extracted": first.num_extracted, "from_cache": first.num_cached,
                "data_dir": os.path.abspath(config.data_dir),
                "backbone": graph.backbone if graph is not None else config.backbone,
                "feature_dtype": feature_dtype, "row_group_rows": ROW_GROUP_ROWS}
    return searcher, used, manifest


def extract_features(config, *, feature_dtype: str = "float32", cache_dir: str | None = None,
                     progress: bool | None = None) -> dict:
    """Extract (``config.engine``) and write FEATURES (``config.out``: a
    local path or a URI); returns the manifest."""
    if feature_dtype not in FEATURE_DTYPES:
        raise DataError(f"--feature-dtype {feature_dtype!r} is not one edgetl writes; choose "
                        f"{' or '.join(FEATURE_DTYPES)}")
    _pyarrow()
    if is_uri(config.out):
        return _extract_to_uri(config, feature_dtype, cache_dir, progress)
    return _extract_to_folder(config, feature_dtype, cache_dir, progress)


def _extract_to_folder(config, feature_dtype: str, cache_dir, progress) -> dict:
    """A local FEATURES_DIR: claimed, staged, published by one rename."""
    from .rundir import check_out_dir, check_out_path, check_out_writable, claim_run, publish, staging

    check_out_path(config.out, config.data_dir)
    check_out_writable(config.out)
    with claim_run(config.out):
        check_out_dir(config.out, config.data_dir, config.overwrite)
        searcher, used, manifest = _extract(config, feature_dtype, cache_dir, progress)
        with staging(config.out) as tmp_dir:
            _write_files(searcher, used, config, feature_dtype, manifest, tmp_dir)
            with open(os.path.join(tmp_dir, MANIFEST), "w") as fh:
                json.dump(manifest, fh, indent=2)
            publish(tmp_dir, config.out)
    return manifest


def _extract_to_uri(config, feature_dtype: str, cache_dir, progress) -> dict:
    """FEATURES at a URI: checked before any work, Parquet files under their
    final names, manifest.json last; a failed write removes what it wrote."""
    fs, base = resolve(config.out)
    earlier = _check_location(fs, base, config)
    searcher, used, manifest = _extract(config, feature_dtype, cache_dir, progress)
    written = []
    try:
        _remove_earlier(fs, base, earlier)
        _write_files(searcher, used, config, feature_dtype, manifest, base, fs, written)
        _put(fs, join(base, MANIFEST), (json.dumps(manifest, indent=2) + "\n").encode())
    except BaseException as exc:
        for path in written:
            with contextlib.suppress(Exception):
                fs.delete_file(path)
        if isinstance(exc, OSError) and not isinstance(exc, EdgetlError):
            raise StorageError(f"Cannot write the features to '{config.out}' ({first_line(exc)}); it has no "
                               f"{MANIFEST}, so it does not count as written; check the location and its "
                               f"credentials, then run again") from None
        raise
    return manifest


def _put(fs, path: str, data: bytes) -> None:
    """``data`` as ``path`` in one piece: staged beside it and moved where the
    file system can (an object store's upload is whole anyway)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with fs.open_output_stream(tmp) as out:
            out.write(data)
        fs.move(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.delete_file(tmp)
        raise


def _check_location(fs, base: str, config) -> list[str] | None:
    """Before any work: the location answers, takes a file, and holds no
    earlier export (or ``--overwrite``). Returns the earlier export's files
    (None: there is none)."""
    import pyarrow.fs as pafs

    where = config.out
    if isinstance(fs, pafs.LocalFileSystem):
        from .rundir import check_out_path

        check_out_path(base, config.data_dir)
    try:
        info = fs.get_file_info(join(base, MANIFEST))
    except OSError as exc:
        raise StorageError(f"Cannot reach --out '{where}' ({first_line(exc)}); check the URI, the network and the "
                           f"credentials (s3://: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or ~/.aws)") from None
    earlier = None
    if info.type != pafs.FileType.NotFound:
        earlier = _earlier_files(fs, base, where)
        if not config.overwrite:
            raise RunExistsError(f"'{where}' already holds features ({MANIFEST}); pass --overwrite or choose "
                                 f"another --out")
    probe = join(base, f".edgetl-probe-{os.getpid()}")
    try:
        if fs.get_file_info(base).type == pafs.FileType.NotFound:
            fs.create_dir(base, recursive=True)
        with fs.open_output_stream(probe) as out:
            out.write(b"edgetl")
        fs.delete_file(probe)
    except OSError as exc:
        raise StorageError(f"Cannot write to --out '{where}' ({first_line(exc)}); check that these credentials "
                           f"may write there, or choose another --out") from None
    return earlier


def _earlier_files(fs, base: str, where: str) -> list[str]:
    """The files an earlier export's manifest lists (its own Parquet files);
    a manifest.json edgetl did not write is refused, even with --overwrite."""
    try:
        with fs.open_input_stream(join(base, MANIFEST)) as src:
            manifest = json.loads(src.read())
        names = [f["file"] for f in manifest["files"]]
        if not isinstance(manifest["classes"], list):
            raise TypeError("classes")
    except (OSError, ValueError, TypeError, KeyError):
        raise RunExistsError(f"'{where}' holds a {MANIFEST} that is not an edgetl features manifest, so even "
                             f"--overwrite never replaces it; choose another --out") from None
    return [n for n in names if isinstance(n, str) and n.startswith("features-") and n.endswith(".parquet")
            and "/" not in n]


def _remove_earlier(fs, base: str, names: list[str] | None) -> None:
    """--overwrite on a URI: the old manifest first (so the location reads as
    incomplete from here on), then the files it listed."""
    if names is None:
        return
    with contextlib.suppress(FileNotFoundError):
        fs.delete_file(join(base, MANIFEST))
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            fs.delete_file(join(base, name))

