"""The head path (``--strategy head``, the default): the frozen base as an
ONNX graph, features through the cache, the layer/size/head search, the
chosen head refitted on every labeled image, baselines on the same holdout,
then the bundle. Above ``sample_images`` labeled images the search and the
raw-pixel baseline work on a stratified sample (``training.sampling``)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from ..data.folder import stratified_split
from .bundle import (NUM_CALIBRATION_IMAGES, calibration_batches, check_agreement, check_finite, counts,
                     finish_bundle, head_arrays, images_still_there, metrics_header, prediction_rows,
                     write_device_files, write_labels)
from .config import HEAD_DEFAULTS, HEAD_L2_PER_IMAGE
from .inputs import base_input_spec, check_usable, search_sizes_for
from .result import TrainResult
from .rundir import staging
from .sampling import RunSample, sample_splits

log = logging.getLogger(__name__)

SEARCH_PLOT = "search.png"


@dataclass
class _Fitted:
    """What the search and the head fitting produced for the bundle."""

    chosen: object  # search.Candidate
    X: np.ndarray  # the chosen tap's features of every used image
    head: object  # fitted on the train split: the honest validation figures
    shipped: object  # refitted on every labeled image: what model.onnx computes
    device_head: object  # a softmax head on the same features: what the device trains


def _candidates(config) -> tuple[bool, tuple[str, ...] | None, tuple[str, ...]]:
    """(search on?, taps to try or None for all, heads to try)."""
    from ..search import SEARCH_HEADS
    from ..zoo import FINAL_TAP

    if config.search == "off":
        return False, (config.tap or FINAL_TAP,), (config.heads[0],) if config.heads else ("softmax",)
    return True, ((config.tap,) if config.tap else None), tuple(config.heads) if config.heads else SEARCH_HEADS


def _fit(searcher, y, train_idx, val_idx, sample: RunSample, num_classes: int, config, head_params: dict,
         timings: dict) -> _Fitted:
    """The search's choice (scored on ``sample``), then its head on the
    whole splits: fitted on the train split, refitted on everything."""
    from ..search import holdout_and_refit, single_thread

    t = time.perf_counter()
    chosen = searcher.score(y, sample.train, sample.val, seed=config.seed, head_params=head_params)
    timings["search_s"] = time.perf_counter() - t
    X = searcher.features[chosen.image_size].tap(chosen.tap)
    t = time.perf_counter()
    log.info("training the %s head on %s at %d px: %d images, validating on %d", chosen.head, chosen.tap,
             chosen.image_size, len(train_idx), len(val_idx))
    with single_thread():
        head, shipped = holdout_and_refit(chosen.head, searcher.head_kwargs(chosen.head, head_params), X, y,
                                          train_idx, val_idx, num_classes)
        device_head = shipped if chosen.head == "softmax" else holdout_and_refit(
            "softmax", head_params, X, y, train_idx, val_idx, num_classes)[1]
    timings["head_s"] = time.perf_counter() - t
    return _Fitted(chosen, X, head, shipped, device_head)


def _baselines(searcher, used, y, train_idx, val_idx, sample: RunSample, config, head_params: dict):
    """(summaries, fitted models): the ridge classifier on raw pixels and the
    naive head, on the same holdout split (and refitted on everything, like
    the shipped model). The raw-pixel baseline decodes its images again: on
    ``sample`` (the whole split unless the run is above ``sample_images``),
    refitted on the sample's train and val images; its record says how many."""
    from ..baselines import raw_pixel_baseline

    naive = searcher.naive_baseline(y, train_idx, val_idx, head_params)
    train_paths = [used.paths[i] for i in sample.train]
    val_paths = [used.paths[i] for i in sample.val]
    raw, _ = raw_pixel_baseline(train_paths, y[sample.train], val_paths, y[sample.val], seed=config.seed)
    rows = np.sort(np.concatenate([sample.train, sample.val]))  # every labeled image unless sampled
    _, raw_model = raw_pixel_baseline([used.paths[i] for i in rows], y[rows], val_paths, y[sample.val],
                                      image_size=raw["image_size"], grayscale=raw["grayscale"], alpha=raw["alpha"])
    raw.update(train_images=len(train_paths), val_images=len(val_paths), sampled=sample.sampled)
    return {"raw_pixels": raw, "final_layer": naive.summary}, {"raw_pixels": raw_model, "final_layer": naive}


def _search_record(searcher, searching: bool, budget, plot_path) -> dict:
    return {
        "enabled": searching,
        "sizes": searcher.sizes,
        "protocol": searcher.protocol,
        "budget": {"max_latency_ms": budget.max_latency_ms, "max_macs": budget.max_macs,
                   "max_model_mb": budget.max_model_mb},
        "candidates": [c.to_dict() for c in searcher.candidates],
        "plot": SEARCH_PLOT if plot_path else None,
        "timings_s": {k: round(v, 3) for k, v in searcher.timings.items()},
    }


def _plot(searcher, chosen, baselines: dict, folder: str, backbone: str):
    import os

    from ..search.plot import plot_candidates

    if sum(c.val_accuracy is not None for c in searcher.candidates) <= 1:
        return None
    raw = "raw pixels (holdout, a sample)" if baselines["raw_pixels"]["sampled"] else "raw pixels (holdout)"
    return plot_candidates(
        searcher.candidates, chosen, os.path.join(folder, SEARCH_PLOT),
        baselines={raw: baselines["raw_pixels"]["val_accuracy"],
                   "final layer, default size (holdout)": baselines["final_layer"]["val_accuracy"]},
        title=f"{backbone}: validation accuracy ({searcher.protocol['kind']}) vs compute")


def _search(config, folder, cache_dir, timings: dict):
    """The Search with every candidate's costs (nothing read yet): sizes,
    taps and heads from the settings, the device budget, the naive
    baseline's graph (final layer, default size) joining the extraction."""
    from ..finetune.planner import choose
    from ..search import Budget, Search, parse_count
    from ..zoo import get_spec

    t = time.perf_counter()
    spec = get_spec(config.backbone)
    searching, taps, heads = _candidates(config)
    budget = Budget(config.max_latency_ms, parse_count(config.max_macs), config.max_model_mb)
    base_spec = base_input_spec(spec, folder.paths, config.grayscale, config.crop_fraction)
    default_size = spec.input_spec.image_size
    sizes = search_sizes_for(config, default_size, folder.paths)
    timings["scan_s"] = time.perf_counter() - t
    if config.max_memory_mb is not None:  # refused here, before any work, when even the frozen base does not fit
        choose(config.backbone, "head", len(folder.paths), len(folder.classes),
               base_spec.replace(image_size=max(sizes)), 32, config.max_memory_mb, config.val_split)
    t = time.perf_counter()
    searcher = Search(config.backbone, config.weights, base_spec, sizes, len(folder.classes), heads=heads, taps=taps,
                      budget=budget, baseline_size=default_size, cache_dir=cache_dir)
    timings["export_and_costs_s"] = time.perf_counter() - t
    return searcher, searching, budget, sizes


def split_and_head_params(config, y: np.ndarray):
    """(config with its l2 resolved, train rows, val rows, the search's
    sample, the common head settings): what both head paths (a folder, or
    Parquet features) derive from the labels the same way."""
    train_idx, val_idx = stratified_split(y, config.val_split, config.seed)
    sample = sample_splits(y, train_idx, val_idx, config.sample_images, config.seed)
    if config.l2 is None:
        config = config.replace(l2=HEAD_L2_PER_IMAGE / len(y))
    head_params = {"epochs": config.epochs, "learning_rate": config.learning_rate, "l2": config.l2,
                   "patience": config.patience, "seed": config.seed}
    return config, train_idx, val_idx, sample, head_params


def train_head(config, folder, *, cache_dir=None, progress=None, strategy_record: dict | None = None) -> TrainResult:
    """``folder`` (a scanned ImageFolder) -> the bundle at ``config.out``."""
    from ..report import classification_metrics

    t0 = time.perf_counter()
    config = config.with_defaults(HEAD_DEFAULTS)
    timings: dict[str, float] = {}
    searcher, searching, budget, sizes = _search(config, folder, cache_dir, timings)
    t = time.perf_counter()
    log.info("%d images in %d classes; extracting features at %s px", len(folder.paths), len(folder.classes),
             ", ".join(str(s) for s in searcher.extract_sizes))
    extraction = searcher.extract(folder.paths, progress=progress, engine=config.engine,
                                  ray_address=config.ray_address)
    timings["features_s"] = time.perf_counter() - t
    skipped = folder.skipped + extraction.skipped
    used = folder.subset(extraction.ok)
    check_usable(used, config.data_dir)
    y = used.targets
    config, train_idx, val_idx, sample, head_params = split_and_head_params(config, y)
    fitted = _fit(searcher, y, train_idx, val_idx, sample, len(used.classes), config, head_params, timings)
    val_proba = fitted.head.predict_proba(fitted.X[val_idx])
    check_finite(f"lower --learning-rate (now {config.learning_rate:g}) and run again",
                 validation_probabilities=val_proba,
                 shipped_model_probabilities=fitted.shipped.predict_proba(fitted.X[val_idx]),
                 **head_arrays(fitted.device_head))
    val_pred = val_proba.argmax(axis=1)
    val_metrics = classification_metrics(y[val_idx], val_pred, used.classes)
    train_acc = float((fitted.head.predict(fitted.X[train_idx]) == y[train_idx]).mean())
    t = time.perf_counter()
    with images_still_there(used.paths):
        baselines, baseline_models = _baselines(searcher, used, y, train_idx, val_idx, sample, config,
                                                 head_params)
    timings["baselines_s"] = time.perf_counter() - t
    val_paths = [used.paths[i] for i in val_idx]
    chosen, graph = fitted.chosen, searcher.graphs[fitted.chosen.image_size]
    with staging(config.out) as tmp_dir:
        t = time.perf_counter()
        _write_bundle(tmp_dir, config, fitted, graph, used, y)
        timings["bundle_s"] = time.perf_counter() - t
        t = time.perf_counter()
        log.info("checking the exported models against the host on validation images")
        agreement = check_agreement(tmp_dir, val_paths, fitted.shipped.predict(fitted.X[val_idx]), y[val_idx],
                                    config.seed, fix=_cache_fix(cache_dir))
        timings["agreement_s"] = time.perf_counter() - t
        plot_path = _plot(searcher, chosen, baselines, tmp_dir, config.backbone)
        timings["total_s"] = time.perf_counter() - t0
        metrics = {
            **metrics_header(config.backbone, graph.weights_id, graph.input_spec, used.classes, val_metrics,
                             train_acc, agreement),
            "chosen": {"tap": chosen.tap, "image_size": chosen.image_size, "head": chosen.head, "dim": chosen.dim,
                       "macs": int(chosen.macs), "latency_ms": chosen.latency_ms, "model_mb": chosen.model_mb,
                       "val_accuracy": val_metrics["accuracy"], "selection_score": chosen.val_accuracy},
            "baselines": baselines,
            "transfer_beats_raw_pixels": bool(val_metrics["accuracy"] > baselines["raw_pixels"]["val_accuracy"]),
            "search": _search_record(searcher, searching, budget, plot_path),
            "sample": sample.record(),  # None: the search and the raw-pixel baseline used every image
            "counts": counts(folder, used, len(train_idx), len(val_idx), skipped),
            "skipped": skipped,
            "duplicates": folder.duplicates,  # the same image under two or more classes (warned)
            "features": {"extracted": extraction.num_extracted, "from_cache": extraction.num_cached,
                         "dim": int(fitted.X.shape[1])},
            "head": _head_record(fitted, config),
            "config": _config_record(config, graph, searching, sizes),
            "val_predictions": prediction_rows(val_paths, used.classes, y[val_idx], val_pred, val_proba),
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
            **({"strategy": strategy_record} if strategy_record else {}),
        }
        finish_bundle(tmp_dir, config.out, metrics, config.to_toml())
    return TrainResult(config.out, metrics, [used.paths[i] for i in train_idx], val_paths, y[val_idx],
                       searcher=searcher, baseline_models=baseline_models)


def _config_record(config, graph, searching: bool, sizes) -> dict:
    return {"val_split": config.val_split, "epochs": config.epochs, "seed": config.seed,
            "image_size": graph.input_spec.image_size, "search": searching, "tap": config.tap,
            "heads": list(_candidates(config)[2]), "image_sizes": sizes, "sample_images": config.sample_images}


def _cache_fix(cache_dir) -> str:
    from .._files import cache_path

    return f"delete the feature cache ({cache_path(cache_dir, 'features')}) and run again"


def _head_record(fitted: _Fitted, config) -> dict:
    head = fitted.head
    return {"type": fitted.chosen.head, "epochs_run": head.n_epochs_,
            "best_epoch": head.best_epoch_, "learning_rate": config.learning_rate, "l2": config.l2,
            "history": head.history_,
            "shipped": "refitted on all labeled images (train + val) for best_epoch epochs; "
                       "the validation figures are those of the head fitted on the train split"}


def _write_bundle(tmp_dir: str, config, fitted: _Fitted, graph, used, y) -> None:
    """labels.txt and the device files, cut after the chosen tap."""
    from ..export.fuse import feature_model

    log.info("exporting model.onnx and model.int8.onnx (cut after %s; calibrated on %d training images)",
             fitted.chosen.tap, min(NUM_CALIBRATION_IMAGES, len(y)))
    write_labels(tmp_dir, used.classes)
    calib = calibration_batches(used.paths, graph.input_spec, config.seed)
    features = feature_model(graph.onnx_path, used.classes, graph.input_spec, config.backbone, tap=fitted.chosen.tap)
    write_device_files(tmp_dir, features, fitted.device_head, fitted.X, y, calib, config.seed,
                       model_head=fitted.shipped)
