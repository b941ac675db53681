"""Folder of labeled images -> on-device bundle, end to end.

scan -> split -> backbone graph (ONNX, cached) -> features (ONNX Runtime,
cached) -> softmax head -> fused model.onnx + int8 -> agreement check ->
RUN_DIR, written under a temporary name and renamed when complete."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field

import numpy as np

from . import __version__
from .data.folder import scan_folder, stratified_split
from .data.image import decode_image
from .errors import DataError, RunExistsError, storage_error
from .export.backbone_onnx import FINAL_TAP
from .runtime.bundle import (FEATURES_FP32, FEATURES_INT8, HEAD, LABELS, METRICS, MODEL_FP32, MODEL_INT8,
                             TRAIN_STEP)

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "efficientnet_lite0"
MAX_AGREEMENT_IMAGES = 1000
NUM_CALIBRATION_IMAGES = 128
SEARCH_PLOT = "search.png"
CONFIG = "config.toml"
EXEMPLARS_PER_CLASS = 50  # training features per class kept in the bundle for on-device rehearsal


@dataclass
class TrainResult:
    run_dir: str
    metrics: dict
    train_paths: list[str]
    val_paths: list[str]
    val_targets: np.ndarray
    searcher: object = None  # edgetl.search.Search: candidates, features, graphs
    baseline_models: dict = field(default_factory=dict)  # fitted baselines, each with score(paths, y)


def _atomic_write_text(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _check_out_dir(out_dir: str, data_dir: str, overwrite: bool) -> None:
    out_abs, data_abs = os.path.realpath(out_dir), os.path.realpath(data_dir)
    if out_abs == data_abs or out_abs.startswith(data_abs + os.sep):
        raise DataError(f"--out '{out_dir}' is inside the data folder, which edgetl never writes to; choose another --out")
    if data_abs.startswith(out_abs + os.sep):
        # --overwrite would replace out_dir, and the photos inside it with it.
        raise DataError(f"--out '{out_dir}' contains the data folder; choose an --out outside '{data_dir}'")
    if os.path.exists(out_dir) and not overwrite:
        raise RunExistsError(f"Run folder '{out_dir}' already exists; pass --overwrite or choose another --out")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise RunExistsError(f"'{out_dir}' is a file; choose another --out")


def _publish(tmp_dir: str, out_dir: str) -> None:
    """Move the finished run into place; an old run is removed only after."""
    old = None
    if os.path.exists(out_dir):
        old = f"{out_dir}.old-{os.getpid()}"
        os.replace(out_dir, old)
    os.replace(tmp_dir, out_dir)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def _sweep_dead_runs(out_dir: str) -> None:
    """What a killed 'edgetl train' left beside RUN_DIR: its temporary folder
    (removed) and, when it died mid-publish, the previous bundle set aside as
    RUN.old-PID (put back in place)."""
    from .features.cache import _pid_alive

    parent, base = os.path.split(os.path.abspath(out_dir))
    for name in sorted(os.listdir(parent)):
        for prefix in (f".{base}.tmp-", f"{base}.old-"):
            pid = name[len(prefix):] if name.startswith(prefix) else ""
            if not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)):
                continue
            path = os.path.join(parent, name)
            if prefix.endswith(".old-") and not os.path.exists(out_dir):
                os.replace(path, out_dir)  # the previous bundle, back in place
            else:
                shutil.rmtree(path, ignore_errors=True)


def _calibration_batches(paths: list[str], spec, seed: int, batch_size: int = 16):
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(paths))[:NUM_CALIBRATION_IMAGES]
    arrays = []
    for i in chosen:
        with open(paths[i], "rb") as fh:
            arrays.append(spec.to_array(decode_image(fh.read(), paths[i], "native")))
    return [np.stack(arrays[i : i + batch_size]) for i in range(0, len(arrays), batch_size)]


def exemplar_rows(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Up to ``per_class`` random row indices of each class, sorted."""
    rng = np.random.default_rng(seed)
    rows = [rng.permutation(np.flatnonzero(y == c))[:per_class] for c in np.unique(y)]
    return np.sort(np.concatenate(rows))


def write_device_files(folder: str, features_model, head, X_train: np.ndarray, y_train: np.ndarray,
                       calibration, seed: int, model_head=None) -> None:
    """features.onnx (+ int8), model.onnx (+ int8) = the same feature models
    with ``model_head`` (default: ``head``) on top, head.safetensors (the
    softmax ``head``: what the device trains) and train_step.onnx."""
    import onnx
    from safetensors.numpy import save_file

    from .export.fuse import append_head
    from .export.train_step import build_train_step
    from .quantize import quantize_int8

    onnx.save(features_model, os.path.join(folder, FEATURES_FP32))
    quantize_int8(os.path.join(folder, FEATURES_FP32), os.path.join(folder, FEATURES_INT8), calibration)
    for features_name, model_name in ((FEATURES_FP32, MODEL_FP32), (FEATURES_INT8, MODEL_INT8)):
        onnx.save(append_head(onnx.load(os.path.join(folder, features_name)), model_head or head),
                  os.path.join(folder, model_name))
    keep = exemplar_rows(y_train, EXEMPLARS_PER_CLASS, seed)
    save_file({
        "weight": np.ascontiguousarray(head.coef_, np.float32),
        "bias": np.ascontiguousarray(head.intercept_, np.float32),
        "mean": np.ascontiguousarray(head.mean_, np.float32),
        "scale": np.ascontiguousarray(head.scale_, np.float32),
        "exemplar_features": np.ascontiguousarray(X_train[keep], np.float32),
        "exemplar_labels": np.ascontiguousarray(y_train[keep], np.int64),
    }, os.path.join(folder, HEAD), metadata={"format": "edgetl.head/1", "kind": "softmax", "l2": repr(float(head.l2))})
    onnx.save(build_train_step(head.mean_, head.scale_), os.path.join(folder, TRAIN_STEP))


def check_agreement(bundle: str, val_paths: list[str], host_pred: np.ndarray, y_val: np.ndarray,
                    seed: int) -> dict:
    """The device runtime on the bundle (fp32 and int8) against the host's
    predictions on up to MAX_AGREEMENT_IMAGES validation images."""
    from .runtime.predictor import Predictor

    rng = np.random.default_rng(seed)
    check = np.sort(rng.permutation(len(val_paths))[:MAX_AGREEMENT_IMAGES])
    check_paths = [val_paths[i] for i in check]
    out = {}
    for name, int8 in (("fp32", False), ("int8", True)):
        pred = Predictor(bundle, int8=int8).predict_proba(check_paths).argmax(axis=1)
        out[f"agreement_{name}"] = float((pred == host_pred[check]).mean())
        out[f"bundle_accuracy_{name}"] = float((pred == y_val[check]).mean())
    out["agreement_n"] = int(len(check))
    return out


def metrics_header(backbone: str, weights_id: str, input_spec, labels: list[str], val_metrics: dict,
                   train_accuracy: float, agreement: dict) -> dict:
    """The first keys of every run's metrics.json, whatever trained it."""
    return {
        "edgetl_version": __version__,
        "backbone": backbone,
        "weights": weights_id,
        "input_spec": json.loads(input_spec.to_json()),
        "labels": labels,
        "val_accuracy": val_metrics["accuracy"],
        "train_accuracy": train_accuracy,
        "per_class": val_metrics["per_class"],
        "confusion_matrix": val_metrics["confusion_matrix"],
        **agreement,
    }


def prediction_rows(paths: list[str], classes: list[str], targets, predicted, proba) -> list[dict]:
    """metrics.json's ``val_predictions``."""
    return [{"path": p, "label": classes[int(t)], "predicted": classes[int(q)], "probability": float(pr[q])}
            for p, t, q, pr in zip(paths, targets, predicted, proba)]


def finish_bundle(tmp_dir: str, out_dir: str, metrics: dict, config_text: str) -> None:
    """Sizes into ``metrics``, then metrics.json, config.toml, the report and
    the model card into ``tmp_dir``, which is then published as ``out_dir``."""
    from .report import write_model_card, write_report

    metrics["model_mb"] = {
        "fp32": os.path.getsize(os.path.join(tmp_dir, MODEL_FP32)) / 1e6,
        "int8": os.path.getsize(os.path.join(tmp_dir, MODEL_INT8)) / 1e6,
        "features_int8": os.path.getsize(os.path.join(tmp_dir, FEATURES_INT8)) / 1e6,
        "head": os.path.getsize(os.path.join(tmp_dir, HEAD)) / 1e6,
    }
    _atomic_write_text(os.path.join(tmp_dir, METRICS), json.dumps(metrics, indent=2) + "\n")
    _atomic_write_text(os.path.join(tmp_dir, CONFIG), config_text)
    t = time.perf_counter()
    write_report(tmp_dir)  # report.html + plots/*.png
    write_model_card(tmp_dir)  # README.md
    log.info("wrote the run report (report.html) and the model card (README.md) in %.1f s", time.perf_counter() - t)
    _publish(tmp_dir, out_dir)


def folder_is_grayscale(paths: list[str]) -> bool:
    from .data.image import is_grayscale_file

    seen = [is_grayscale_file(p) for p in paths]
    known = [v for v in seen if v is not None]
    return bool(known) and all(known)


def config_toml(settings: dict, data_dir: str, out_dir: str) -> str:
    """The settings of a run as TOML (``edgetl train --config`` reads it back);
    unset (None) settings are left out, so they keep their defaults."""
    lines = ["# edgetl train settings of this run; repeat it with: edgetl train --config config.toml", "[train]"]
    values = dict(settings, data_dir=os.path.abspath(data_dir), out=os.path.abspath(out_dir))
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = repr(value)
        elif isinstance(value, (list, tuple)):
            text = json.dumps(list(value))
        else:
            text = json.dumps(str(value))  # a TOML basic string: JSON escapes are TOML escapes
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


def _pinned(search, tap, image_size, heads) -> tuple[bool, tuple[str, ...] | None, tuple[str, ...]]:
    """(search on?, taps to try or None for all, heads to try)."""
    from .search import HEADS

    if search in (False, "off"):
        return False, (tap or FINAL_TAP,), (heads[0],) if heads else ("softmax",)
    if search not in (True, "on"):
        raise DataError(f"--search must be 'on' or 'off', got {search!r}")
    heads = tuple(heads) if heads else HEADS
    unknown = [h for h in heads if h not in HEADS]
    if unknown:
        raise DataError(f"Unknown head {unknown[0]!r}; choose from {', '.join(HEADS)}")
    return True, ((tap,) if tap else None), heads


def train(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    backbone: str = DEFAULT_BACKBONE,
    weights: str | None = "default",
    image_size: int | None = None,
    crop_fraction: float | None = None,
    val_split: float = 0.2,
    epochs: int | None = None,
    learning_rate: float = 1e-3,
    l2: float = 1e-4,
    patience: int | None = None,
    seed: int = 0,
    grayscale: bool | None = None,
    cache_dir: str | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    search: bool | str = True,
    tap: str | None = None,
    heads: tuple[str, ...] | None = None,
    image_sizes: list[int] | None = None,
    max_latency_ms: float | None = None,
    max_macs: float | str | None = None,
    max_model_mb: float | None = None,
    strategy: str = "head",
    batch_size: int | None = None,
    max_memory_mb: float | None = None,
    resume: bool = False,
) -> TrainResult:
    """Transfer-learn a classifier for the images in ``data_dir`` and write
    the bundle to ``out_dir``. Returns the metrics (also in metrics.json).

    By default the layer (tap), input size and head are searched (see
    ``edgetl.search``) under the device budget ``max_latency_ms`` /
    ``max_macs`` / ``max_model_mb``; ``tap``, ``image_size`` (or a list
    ``image_sizes``) and ``heads`` pin parts of it. ``search="off"``: the
    naive choice (softmax head on the final layer at ``image_size`` or the
    backbone's default size).

    ``grayscale``: None decides from the images (one channel when all are
    grey), True/False forces it.

    ``strategy``: ``head`` (the frozen base and the search above; epochs
    default 100, patience 10), or ``bias``, ``last-K``, ``full``,
    ``scratch``, ``auto`` (``edgetl.finetune``: at ``image_size`` or the
    images' own scale, ``batch_size`` default 32, epochs 15, patience 3,
    checkpointed every epoch, ``resume`` continues a killed run).
    ``max_memory_mb``: the training's peak memory budget (above the idle
    footprint of Python and torch); the batch size is lowered to fit it, or
    the run refused before it starts.

    The resolved settings are saved as ``config.toml`` in the run folder;
    ``edgetl train --config RUN_DIR/config.toml`` repeats the run."""
    settings = {k: v for k, v in locals().items() if k not in ("data_dir", "out_dir", "cache_dir", "progress")}
    from .finetune import parse_strategy

    kind, _ = parse_strategy(strategy)
    if kind != "head":
        from .finetune.run import train_finetuned

        return train_finetuned(os.fspath(data_dir), os.fspath(out_dir), dict(settings, cache_dir=cache_dir),
                               progress=progress)
    if resume:
        raise DataError("--resume continues a fine-tuning run (--strategy bias, last-K, full, scratch); the head "
                        "strategy caches its features and restarts quickly without it")
    epochs = 100 if epochs is None else epochs
    patience = 10 if patience is None else patience
    settings.update(epochs=epochs, patience=patience)
    for unused in ("strategy", "batch_size", "max_memory_mb", "resume"):
        if settings[unused] in (None, False, "head"):
            settings.pop(unused)
    from .baselines import raw_pixel_baseline
    from .export.fuse import feature_model
    from .report import classification_metrics
    from .search import (Budget, Search, holdout_and_refit, native_side, parse_count, search_sizes, single_thread,
                         with_native_size)
    from .search.plot import plot_candidates
    from .zoo import get_spec

    data_dir, out_dir = os.fspath(data_dir), os.fspath(out_dir)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    spec = get_spec(backbone)
    if epochs < 1:
        raise DataError(f"--epochs must be at least 1, got {epochs}")
    if not 0.0 < val_split < 1.0:
        raise DataError(f"--val-split must be between 0 and 1 (exclusive), got {val_split}")
    for size in ([image_size] if image_size is not None else []) + list(image_sizes or []):
        if size < 16:
            raise DataError(f"--image-size must be at least 16 pixels, got {size}")
    searching, taps, heads = _pinned(search, tap, image_size, heads)
    budget = Budget(max_latency_ms, parse_count(max_macs), max_model_mb)
    _check_out_dir(out_dir, data_dir, overwrite)
    folder = scan_folder(data_dir)
    base_spec = spec.input_spec
    default_size = base_spec.image_size
    if grayscale is None:
        # The article: a grey photo is often enough. When every image is grey,
        # the first layer folds to one channel: same features, a third of its work.
        grayscale = folder_is_grayscale(folder.paths)
    if grayscale:
        from .zoo.grayscale import gray_input_spec

        base_spec = gray_input_spec(base_spec)
    if crop_fraction is not None:
        base_spec = base_spec.replace(crop_fraction=float(crop_fraction))
    if image_size is not None:
        sizes = [int(image_size)]
    elif image_sizes:
        sizes = sorted({int(s) for s in image_sizes}, reverse=True)
    else:
        # Halving from the default size, plus the images' own resolution when it falls inside.
        sizes = with_native_size(search_sizes(default_size), native_side(folder.paths)) if searching \
            else [default_size]
    timings["scan_s"] = time.perf_counter() - t0
    if max_memory_mb is not None:  # refused here, before any work, when even the frozen base does not fit
        from .finetune.run import choose

        choose(backbone, "head", len(folder.paths), len(folder.classes), base_spec.replace(image_size=max(sizes)),
               32, max_memory_mb, val_split)

    # Costs of every candidate before any image is read; the naive
    # baseline's graph (final layer, default size) joins the same extraction.
    t = time.perf_counter()
    searcher = Search(backbone, weights, base_spec, sizes, len(folder.classes), heads=heads, taps=taps,
                      budget=budget, baseline_size=default_size, cache_dir=cache_dir)
    timings["export_and_costs_s"] = time.perf_counter() - t

    t = time.perf_counter()
    log.info("%d images in %d classes; extracting features at %s px", len(folder.paths), len(folder.classes),
             ", ".join(str(s) for s in searcher.extract_sizes))
    extraction = searcher.extract(folder.paths, progress=progress)
    timings["features_s"] = time.perf_counter() - t
    skipped = folder.skipped + extraction.skipped
    used = folder.subset(extraction.ok)
    for idx, cls in enumerate(used.classes):
        n = int((used.targets == idx).sum())
        if n < 2:
            raise DataError(
                f"Class '{cls}' has {n} usable image{'s' if n != 1 else ''}; each class needs at least 2 "
                f"(one to train, one to validate): add images to {os.path.join(data_dir, cls)}"
            )
    y = used.targets
    train_idx, val_idx = stratified_split(y, val_split, seed)
    head_params = {"epochs": epochs, "learning_rate": learning_rate, "l2": l2, "patience": patience, "seed": seed}

    t = time.perf_counter()
    chosen = searcher.score(y, train_idx, val_idx, seed=seed, head_params=head_params)
    timings["search_s"] = time.perf_counter() - t
    graph = searcher.graphs[chosen.image_size]
    input_spec = graph.input_spec
    X = searcher.features[chosen.image_size].tap(chosen.tap)

    t = time.perf_counter()
    log.info("training the %s head on %s at %d px: %d images, validating on %d", chosen.head, chosen.tap,
             chosen.image_size, len(train_idx), len(val_idx))
    num_classes = len(used.classes)
    with single_thread():
        # ``head`` (fitted on the training split, early-stopped on the
        # holdout) gives the honest validation figures; the bundle ships
        # ``shipped``: the same head refitted on every labeled image for as
        # many epochs as early stopping chose.
        head, shipped = holdout_and_refit(chosen.head, searcher.head_kwargs(chosen.head, head_params), X, y,
                                          train_idx, val_idx, num_classes)
        # What the device trains is always a softmax head on the same features.
        device_head = shipped if chosen.head == "softmax" else holdout_and_refit(
            "softmax", head_params, X, y, train_idx, val_idx, num_classes)[1]
    timings["head_s"] = time.perf_counter() - t
    val_proba = head.predict_proba(X[val_idx])
    val_pred = val_proba.argmax(axis=1)
    val_metrics = classification_metrics(y[val_idx], val_pred, used.classes)
    train_acc = float((head.predict(X[train_idx]) == y[train_idx]).mean())
    shipped_val_pred = shipped.predict(X[val_idx])

    # Baselines on the same holdout split (and refitted on everything, like the shipped model).
    t = time.perf_counter()
    naive = searcher.naive_baseline(y, train_idx, val_idx, head_params)
    train_paths = [used.paths[i] for i in train_idx]
    val_paths = [used.paths[i] for i in val_idx]
    raw, _ = raw_pixel_baseline(train_paths, y[train_idx], val_paths, y[val_idx], seed=seed)
    _, raw_model = raw_pixel_baseline(used.paths, y, val_paths, y[val_idx], image_size=raw["image_size"],
                                      grayscale=raw["grayscale"], C=raw["C"], seed=seed)
    baselines = {"raw_pixels": raw, "final_layer": naive.summary}
    timings["baselines_s"] = time.perf_counter() - t

    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    _sweep_dead_runs(out_dir)
    tmp_dir = os.path.join(parent, f".{os.path.basename(os.path.abspath(out_dir))}.tmp-{os.getpid()}")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    os.makedirs(tmp_dir)
    try:
        t = time.perf_counter()
        log.info("exporting model.onnx and model.int8.onnx (cut after %s; calibrated on %d training images)",
                 chosen.tap, min(NUM_CALIBRATION_IMAGES, len(train_idx)))
        with open(os.path.join(tmp_dir, LABELS), "w", encoding="utf-8") as fh:
            fh.write("".join(f"{c}\n" for c in used.classes))
        calib = _calibration_batches(used.paths, input_spec, seed)
        features = feature_model(graph.onnx_path, used.classes, input_spec, backbone, tap=chosen.tap)
        write_device_files(tmp_dir, features, device_head, X, y, calib, seed, model_head=shipped)
        timings["bundle_s"] = time.perf_counter() - t

        # The device runtime on the bundle vs the host head on cached features.
        t = time.perf_counter()
        log.info("checking the exported models against the host on validation images")
        agreement = check_agreement(tmp_dir, val_paths, shipped_val_pred, y[val_idx], seed)
        timings["agreement_s"] = time.perf_counter() - t
        plot_path = None
        if sum(c.val_accuracy is not None for c in searcher.candidates) > 1:
            plot_path = plot_candidates(
                searcher.candidates, chosen, os.path.join(tmp_dir, SEARCH_PLOT),
                baselines={"raw pixels (holdout)": raw["val_accuracy"],
                           "final layer, default size (holdout)": naive.summary["val_accuracy"]},
                title=f"{backbone}: validation accuracy ({searcher.protocol['kind']}) vs compute")
        timings["total_s"] = time.perf_counter() - t0

        chosen_summary = {
            "tap": chosen.tap, "image_size": chosen.image_size, "head": chosen.head, "dim": chosen.dim,
            "macs": int(chosen.macs), "latency_ms": chosen.latency_ms, "model_mb": chosen.model_mb,
            "val_accuracy": val_metrics["accuracy"], "selection_score": chosen.val_accuracy,
        }
        metrics = {
            **metrics_header(backbone, graph.weights_id, input_spec, used.classes, val_metrics, train_acc, agreement),
            "chosen": chosen_summary,
            "baselines": baselines,
            "transfer_beats_raw_pixels": bool(val_metrics["accuracy"] > raw["val_accuracy"]),
            "search": {
                "enabled": searching,
                "sizes": searcher.sizes,
                "protocol": searcher.protocol,
                "budget": {"max_latency_ms": budget.max_latency_ms, "max_macs": budget.max_macs,
                           "max_model_mb": budget.max_model_mb},
                "candidates": [c.to_dict() for c in searcher.candidates],
                "plot": SEARCH_PLOT if plot_path else None,
                "timings_s": {k: round(v, 3) for k, v in searcher.timings.items()},
            },
            "counts": {
                "images_found": len(folder.paths),
                "images_used": len(used.paths),
                "train": int(len(train_idx)),
                "val": int(len(val_idx)),
                "skipped": len(skipped),
                "duplicates": len(folder.duplicates),
                "per_class": used.counts(),
            },
            "skipped": skipped,
            "duplicates": folder.duplicates,  # the same image under two or more classes (warned)
            "features": {"extracted": extraction.num_extracted, "from_cache": extraction.num_cached,
                         "dim": int(X.shape[1])},
            "head": {"type": chosen.head, "epochs_run": head.n_epochs_, "best_epoch": head.best_epoch_,
                     "learning_rate": learning_rate, "l2": l2, "history": head.history_,
                     "shipped": "refitted on all labeled images (train + val) for best_epoch epochs; "
                                "the validation figures are those of the head fitted on the train split"},
            "config": {"val_split": val_split, "epochs": epochs, "seed": seed, "image_size": input_spec.image_size,
                       "search": searching, "tap": tap, "heads": list(heads), "image_sizes": sizes},
            "val_predictions": prediction_rows(val_paths, used.classes, y[val_idx], val_pred, val_proba),
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
        }
        finish_bundle(tmp_dir, out_dir, metrics, config_toml(settings, data_dir, out_dir))
    except OSError as exc:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise storage_error(exc, f"the bundle '{out_dir}'", parent) from None
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return TrainResult(out_dir, metrics, train_paths, val_paths, y[val_idx], searcher=searcher,
                       baseline_models={"raw_pixels": raw_model, "final_layer": naive})
