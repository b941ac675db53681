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


def _open(config):
    from ..features.parquet import FeatureFile
    from ..zoo import FINAL_TAP

    src = FeatureFile(config.data_dir, config.image_size)
    tap = config.tap or (next(iter(src.taps)) if len(src.taps) == 1 else FINAL_TAP)
    src.tap_slice(tap)  # refuses a tap that is not there
    data_dir = src.manifest.get("data_dir")
    if not data_dir or not os.path.isdir(data_dir):
        raise DataError(f"the images of '{config.data_dir}' were in '{data_dir}', which is not there; the bundle's "
                        f"int8 calibration and checks read a sample of them: run where that folder is")
    return src, tap, data_dir


def _graph(config, src, cache_dir):
    from ..data.input_spec import InputSpec
    from ..export.backbone_onnx import export_backbone

    import json

    spec = InputSpec.from_json(json.dumps(src.meta["input_spec"]))
    graph = export_backbone(src.meta["backbone"], weights=config.weights or "default", input_spec=spec,
                            cache_dir=cache_dir, taps=True)
    if graph.key != src.meta.get("graph_key"):
        raise DataError(f"the features in '{config.data_dir}' were extracted with other weights or settings "
                        f"({src.meta.get('weights_id')}) than {graph.weights_id}; pass the --weights they were "
                        f"extracted with, or extract again")
    return graph


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
    from .config import HEAD_L2_PER_IMAGE

    split = np.full(len(y), -1, np.int8)
    split[train_idx], split[val_idx] = 0, 1
    l2 = config.l2 if config.l2 is not None else HEAD_L2_PER_IMAGE / len(y)
    t = time.perf_counter()
    log.info("training the softmax head on %s at %d px from %s: %d rows, validating on %d (streamed)", tap,
             src.image_size, config.data_dir, len(train_idx), len(val_idx))
    head = fit_streamed(lambda: src.groups(tap), y, split, dtype=src.dtype, num_classes=len(src.classes),
                        workdir=os.path.dirname(os.path.abspath(config.out)), epochs=config.epochs,
                        learning_rate=config.learning_rate, l2=l2, patience=config.patience, seed=config.seed)
    timings["head_s"] = time.perf_counter() - t
    return head, l2


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


def train_from_features(config, *, cache_dir=None, progress=None):
    """The FEATURES location ``config.data_dir`` -> the bundle at ``config.out``."""
    from ..data.folder import stratified_split
    from .bundle import check_agreement, check_finite, finish_bundle, head_arrays, metrics_header
    from .config import HEAD_DEFAULTS
    from .result import TrainResult
    from .rundir import staging
    from .sampling import sample_splits

    t0 = time.perf_counter()
    config = config.with_defaults(HEAD_DEFAULTS)
    timings: dict[str, float] = {}
    src, tap, data_dir = _open(config)
    graph = _graph(config, src, cache_dir)
    y = src.labels()
    if len(np.unique(y)) < 2:
        raise DataError(f"'{config.data_dir}' holds one class only; a classifier needs two or more")
    train_idx, val_idx = stratified_split(y, config.val_split, config.seed)
    head, l2 = _fit(config, src, tap, y, train_idx, val_idx, timings)
    check_finite(f"lower --learning-rate (now {config.learning_rate:g}) and run again", **head_arrays(head))
    t = time.perf_counter()
    pred, prob = _predict_all(src, tap, head, y)
    val_metrics, listed_rows, listed = _val_record(src, data_dir, y, val_idx, pred, prob, config.seed)
    timings["predict_s"] = time.perf_counter() - t
    t = time.perf_counter()
    sample = sample_splits(y, train_idx, val_idx, config.sample_images, config.seed)
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
            "chosen": {"tap": tap, "image_size": src.image_size, "head": "softmax", "dim": int(head.coef_.shape[1]),
                       "val_accuracy": val_metrics["accuracy"]},
            "baselines": {"raw_pixels": raw},
            "transfer_beats_raw_pixels": bool(val_metrics["accuracy"] > raw["val_accuracy"]),
            "sample": sample.record(),  # None: the raw-pixel baseline used every image
            "search": {"enabled": False, "protocol": {"kind": "features", "description": (
                f"the {tap} features at {src.image_size} px that 'edgetl extract' wrote to {config.data_dir}")}},
            "counts": {"images_found": int(src.manifest.get("num_images", len(y))), "images_used": int(len(y)),
                       "train": int(len(train_idx)), "val": int(len(val_idx)), "skipped": len(src.manifest.get(
                           "skipped", [])), "duplicates": 0,
                       "per_class": {c: int(n) for c, n in zip(src.classes, np.bincount(y, minlength=len(
                           src.classes)))}},
            "skipped": src.manifest.get("skipped", []),
            "features": {"from_parquet": config.data_dir, "dtype": str(src.dtype), "extracted": 0,
                         "from_cache": int(len(y)), "dim": int(head.coef_.shape[1])},
            "head": {"type": "softmax", "epochs_run": head.n_epochs_, "best_epoch": head.best_epoch_,
                     "learning_rate": config.learning_rate, "l2": l2, "history": head.history_,
                     "shipped": "fitted on the train split by mini-batches streamed from the Parquet features, "
                                "early-stopped on the validation split (not refitted)"},
            "config": {"val_split": config.val_split, "epochs": config.epochs, "seed": config.seed,
                       "image_size": src.image_size, "search": False, "tap": tap, "heads": ["softmax"]},
            "val_predictions": listed_rows,
            "val_predictions_sample": {"rows": len(listed_rows), "of": int(len(val_idx))},
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
        }
        finish_bundle(tmp_dir, config.out, metrics, config.to_toml())
    return TrainResult(config.out, metrics, [], val_paths, y[listed])
