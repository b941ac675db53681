"""``edgetl train FEATURES --out RUN_DIR``: the head trained from the Parquet
features ``edgetl extract`` wrote (any engine, any ``pyarrow.fs``
location), streamed from disk, for data sets whose features do not fit in
memory (10 million x 1,280 float32 is 51 GB).

What is held at once stays flat: the labels (8 bytes a row), one part of
the on-disk shuffle (``heads.streaming``), and samples of fixed size. The
softmax head (what the device trains) is fitted on the training split by
streamed mini-batches, early-stopped on the validation split, and ships as
fitted (at this size a refit on the validation rows too would cost another
whole run for a change of a few rows in a thousand). The layer and input
size are those of the features (``--tap`` and ``--image-size`` pick among
what was extracted; the default is the largest size's final features): to
search them, run ``edgetl train`` on a sample folder first, or extract
with the search's taps and pass ``--tap``. The raw-pixel baseline, the
exemplars of head.safetensors, the int8 calibration and the agreement
check read a sample of the images (the baseline's is ``sample_images``,
``training.sampling``), which must still be in the
data folder the manifest names. ``val_predictions`` in metrics.json is a
sample too (every count and the confusion matrix are over the whole
validation split)."""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from ..errors import DataError

log = logging.getLogger(__name__)

MAX_LISTED_PREDICTIONS = 1000  # val_predictions rows in metrics.json


def _data_dir(config, manifest: dict) -> str:
    data_dir = manifest.get("data_dir")
    if not data_dir or not os.path.isdir(data_dir):
        raise DataError(f"the images of '{config.data_dir}' were in '{data_dir}', which is not there; the bundle's "
                        f"int8 calibration and checks read a sample of them: run where that folder is")
    return data_dir


def _graph(config, src, cache_dir):
    """The backbone graph the file's features came from (its key checked)."""
    import json

    from ..data.input_spec import InputSpec
    from ..export.backbone_onnx import export_backbone

    spec = InputSpec.from_json(json.dumps(src.meta["input_spec"]))
    graph = export_backbone(src.meta["backbone"], weights=config.weights or "default", input_spec=spec,
                            cache_dir=cache_dir, taps=True)
    _same_graph(config, src, graph)
    return graph


def _same_graph(config, src, graph) -> None:
    if graph.key != src.meta.get("graph_key"):
        raise DataError(f"the features in '{config.data_dir}' were extracted with other weights or settings "
                        f"({src.meta.get('weights_id')}) than {graph.weights_id}; pass the --weights they were "
                        f"extracted with, or extract again")


def _sizes(config, src) -> list[int]:
    """The input sizes to choose from: those extracted (or the one asked for)."""
    sizes = sorted({int(f["image_size"]) for f in src.manifest["files"]}, reverse=True)
    if config.image_size is not None:
        return [src.image_size]
    return sizes


def _choose(config, first, y, sample, head_params: dict, cache_dir):
    """(FeatureFile, tap, graph, Search or None): the one (size, tap) the
    features hold or the settings pin, else the search's choice among the
    extracted sizes and taps, scored on ``sample`` (``training.sampling``)
    by the folder path's own ``Search``."""
    from ..features.parquet import FeatureFile
    from ..zoo import FINAL_TAP
    from .head_path import _candidates

    searching, taps, heads = _candidates(config)
    if tuple(heads) != ("softmax",):
        raise DataError("--heads: from Parquet features the softmax head is trained (streamed, what the device "
                        "trains); leave out --heads")
    sizes = _sizes(config, first)
    for tap in taps or ():
        first.tap_slice(tap)  # refuses a tap that was not extracted
    taps = taps if taps is not None else (None if len(first.taps) > 1 else tuple(first.taps))
    if not searching or (len(sizes) == 1 and taps is not None and len(taps) == 1):
        src = first if first.image_size == sizes[0] else FeatureFile(config.data_dir, sizes[0])
        tap = taps[0] if taps else FINAL_TAP
        return src, tap, _graph(config, src, cache_dir), None
    searcher = _searcher(config, first, sizes, taps, cache_dir)
    rows = np.sort(np.concatenate([sample.train, sample.val]))
    _sample_features(config, searcher, rows)
    chosen = searcher.score(y[rows], np.searchsorted(rows, sample.train), np.searchsorted(rows, sample.val),
                            seed=config.seed, head_params=head_params)
    if sample.sampled:
        searcher.protocol["sampled_from"] = int(len(y))
        searcher.protocol["description"] += f" (a stratified sample of the {len(y)} labeled images)"
    src = FeatureFile(config.data_dir, chosen.image_size)
    return src, chosen.tap, searcher.graphs[chosen.image_size], searcher


def _searcher(config, first, sizes: list[int], taps, cache_dir):
    import json

    from ..data.input_spec import InputSpec
    from ..search import Budget, Search, parse_count
    from ..zoo import get_spec

    backbone = first.meta["backbone"]
    default = get_spec(backbone).input_spec.image_size
    budget = Budget(config.max_latency_ms, parse_count(config.max_macs), config.max_model_mb)
    return Search(backbone, config.weights, InputSpec.from_json(json.dumps(first.meta["input_spec"])), sizes,
                  len(first.classes), heads=("softmax",), taps=taps, budget=budget,
                  baseline_size=default if default in sizes else None, cache_dir=cache_dir)


def _sample_features(config, searcher, rows: np.ndarray) -> None:
    """The sampled rows of every size within budget, as the search's features."""
    from ..features.extract import Extraction
    from ..features.parquet import FeatureFile

    keys = None
    for size in searcher.sizes:
        src = FeatureFile(config.data_dir, size)
        _same_graph(config, src, searcher.graphs[size])
        row_keys = src.take("key", rows)
        if keys is not None and row_keys != keys:
            raise DataError(f"the Parquet files of '{config.data_dir}' do not hold the same images in the same "
                            f"order; extract again")
        keys = row_keys
        searcher.features[size] = Extraction(src.rows(rows), np.arange(len(rows)), tap_slices=src.taps)


def _predict_all(src, tap: str, head, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, its probability) of every row, streamed."""
    pred = np.empty(len(y), np.int64)
    prob = np.empty(len(y), np.float32)
    for start, feats in src.groups(tap):
        proba = head.predict_proba(feats.astype(np.float32))
        pred[start : start + len(feats)] = proba.argmax(axis=1)
        prob[start : start + len(feats)] = proba.max(axis=1)
    return pred, prob


def _paths(src, data_dir: str, index: np.ndarray) -> list[str]:
    return [os.path.join(data_dir, rel) for rel in src.take("path", index)]


def _baseline(src, data_dir, y, sample, seed):
    """The raw-pixel baseline on ``sample`` (``training.sampling``: a stratified sample above ``sample_images``)."""
    from ..baselines import raw_pixel_baseline

    raw, _ = raw_pixel_baseline(_paths(src, data_dir, sample.train), y[sample.train],
                                _paths(src, data_dir, sample.val), y[sample.val], seed=seed)
    raw.update(train_images=len(sample.train), val_images=len(sample.val), sampled=sample.sampled)
    return raw


def _fit(config, src, tap, y, train_idx, val_idx, timings):
    from ..heads.streaming import fit_streamed

    split = np.full(len(y), -1, np.int8)
    split[train_idx], split[val_idx] = 0, 1
    t = time.perf_counter()
    log.info("training the softmax head on %s at %d px from %s: %d rows, validating on %d (streamed)", tap,
             src.image_size, config.data_dir, len(train_idx), len(val_idx))
    head = fit_streamed(lambda: src.groups(tap), y, split, dtype=src.dtype, num_classes=len(src.classes),
                        workdir=os.path.dirname(os.path.abspath(config.out)), epochs=config.epochs,
                        learning_rate=config.learning_rate, l2=config.l2, patience=config.patience, seed=config.seed)
    timings["head_s"] = time.perf_counter() - t
    return head


def _val_record(src, data_dir, y, val_idx, pred, prob, seed):
    """(val metrics over the whole split, the sampled val_predictions rows)."""
    from ..data.folder import stratified_sample
    from ..report import classification_metrics

    metrics = classification_metrics(y[val_idx], pred[val_idx], src.classes)
    listed = val_idx[stratified_sample(y[val_idx], MAX_LISTED_PREDICTIONS, seed)]
    rows = [{"path": p, "label": src.classes[int(y[i])], "predicted": src.classes[int(pred[i])],
             "probability": float(prob[i])} for p, i in zip(_paths(src, data_dir, listed), listed)]
    return metrics, rows, listed


def _bundle_files(tmp_dir, config, src, tap, graph, head, y, train_idx, data_dir):
    """labels.txt and the device files: exemplars and calibration from samples of the training rows."""
    from ..export.fuse import feature_model
    from .bundle import EXEMPLARS_PER_CLASS, NUM_CALIBRATION_IMAGES, calibration_batches, exemplar_rows, \
        write_device_files, write_labels

    write_labels(tmp_dir, src.classes)
    keep = train_idx[exemplar_rows(y[train_idx], EXEMPLARS_PER_CLASS, config.seed)]
    rng = np.random.default_rng(config.seed)
    calib_rows = np.sort(rng.permutation(train_idx)[:NUM_CALIBRATION_IMAGES])
    calib = calibration_batches(_paths(src, data_dir, calib_rows), graph.input_spec, config.seed)
    features = feature_model(graph.onnx_path, src.classes, graph.input_spec, src.meta["backbone"], tap=tap)
    # No exemplar_optimism: it measures how much better the head does on its own rows than on new ones,
    # which at this many rows per class is nothing (the device then takes it as 0).
    write_device_files(tmp_dir, features, head, src.rows(keep, tap), y[keep], calib, config.seed, optimism=False)


def _prepare(config, cache_dir, timings: dict):
    """Labels, splits, sample, the choice of (size, tap): what the fit needs."""
    from ..features.parquet import FeatureFile
    from .head_path import split_and_head_params

    first = FeatureFile(config.data_dir, config.image_size)
    data_dir = _data_dir(config, first.manifest)
    y = first.labels()
    if len(np.unique(y)) < 2:
        raise DataError(f"'{config.data_dir}' holds one class only; a classifier needs two or more")
    config, train_idx, val_idx, sample, head_params = split_and_head_params(config, y)
    t = time.perf_counter()
    src, tap, graph, searcher = _choose(config, first, y, sample, head_params, cache_dir)
    timings["search_s"] = time.perf_counter() - t
    return config, data_dir, y, train_idx, val_idx, sample, src, tap, graph, searcher


def train_from_features(config, *, cache_dir=None, progress=None):
    """The FEATURES location ``config.data_dir`` -> the bundle at ``config.out``."""
    from .bundle import check_agreement, check_finite, finish_bundle, head_arrays, metrics_header
    from .config import HEAD_DEFAULTS
    from .result import TrainResult
    from .rundir import staging

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    config, data_dir, y, train_idx, val_idx, sample, src, tap, graph, searcher = _prepare(
        config.with_defaults(HEAD_DEFAULTS), cache_dir, timings)
    head = _fit(config, src, tap, y, train_idx, val_idx, timings)
    check_finite(f"lower --learning-rate (now {config.learning_rate:g}) and run again", **head_arrays(head))
    t = time.perf_counter()
    pred, prob = _predict_all(src, tap, head, y)
    val_metrics, listed_rows, listed = _val_record(src, data_dir, y, val_idx, pred, prob, config.seed)
    timings["predict_s"] = time.perf_counter() - t
    t = time.perf_counter()
    raw = _baseline(src, data_dir, y, sample, config.seed)
    timings["baselines_s"] = time.perf_counter() - t
    with staging(config.out) as tmp_dir:
        t = time.perf_counter()
        _bundle_files(tmp_dir, config, src, tap, graph, head, y, train_idx, data_dir)
        timings["bundle_s"] = time.perf_counter() - t
        val_paths = [r["path"] for r in listed_rows]
        agreement = check_agreement(tmp_dir, val_paths, pred[listed], y[listed], config.seed)
        timings["total_s"] = time.perf_counter() - t0
        metrics = {
            **metrics_header(src.meta["backbone"], graph.weights_id, graph.input_spec, src.classes, val_metrics,
                             float((pred[train_idx] == y[train_idx]).mean()), agreement),
            "chosen": _chosen_record(searcher, src, tap, head, val_metrics),
            "baselines": {"raw_pixels": raw},
            "transfer_beats_raw_pixels": bool(val_metrics["accuracy"] > raw["val_accuracy"]),
            "sample": sample.record(),  # None: the search and the raw-pixel baseline used every image
            "search": _search_record(config, searcher, src, tap),
            "counts": _counts(src, y, train_idx, val_idx),
            "skipped": src.manifest.get("skipped", []),
            "features": {"from_parquet": config.data_dir, "dtype": str(src.dtype), "extracted": 0,
                         "from_cache": int(len(y)), "dim": int(head.coef_.shape[1])},
            "head": {"type": "softmax", "epochs_run": head.n_epochs_, "best_epoch": head.best_epoch_,
                     "learning_rate": config.learning_rate, "l2": config.l2, "history": head.history_,
                     "streaming": head.streaming_,
                     "shipped": "fitted on the train split by mini-batches streamed from the Parquet features, "
                                "early-stopped on the validation split (not refitted)"},
            "config": {"val_split": config.val_split, "epochs": config.epochs, "seed": config.seed,
                       "image_size": src.image_size, "search": searcher is not None, "tap": tap,
                       "heads": ["softmax"], "sample_images": config.sample_images},
            "val_predictions": listed_rows,
            "val_predictions_sample": {"rows": len(listed_rows), "of": int(len(val_idx))},
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
        }
        finish_bundle(tmp_dir, config.out, metrics, config.to_toml())
    return TrainResult(config.out, metrics, [], val_paths, y[listed], searcher=searcher)


def _chosen_record(searcher, src, tap: str, head, val_metrics: dict) -> dict:
    record = {"tap": tap, "image_size": src.image_size, "head": "softmax", "dim": int(head.coef_.shape[1]),
              "val_accuracy": val_metrics["accuracy"]}
    if searcher is not None:
        c = searcher.chosen
        record.update(macs=int(c.macs), latency_ms=c.latency_ms, model_mb=c.model_mb, selection_score=c.val_accuracy)
    return record


def _search_record(config, searcher, src, tap: str) -> dict:
    if searcher is None:
        return {"enabled": False, "protocol": {"kind": "features", "description": (
            f"the {tap} features at {src.image_size} px that 'edgetl extract' wrote to {config.data_dir}")}}
    from .head_path import _search_record as record

    return record(searcher, True, searcher.budget, None)


def _counts(src, y: np.ndarray, train_idx, val_idx) -> dict:
    per_class = np.bincount(y, minlength=len(src.classes))
    return {"images_found": int(src.manifest.get("num_images", len(y))), "images_used": int(len(y)),
            "train": int(len(train_idx)), "val": int(len(val_idx)),
            "skipped": len(src.manifest.get("skipped", [])), "duplicates": 0,
            "per_class": {c: int(n) for c, n in zip(src.classes, per_class)}}
