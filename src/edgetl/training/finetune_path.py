"""The fine-tuning path (``--strategy bias|last-K|full|scratch``, or what
``auto`` resolved to): the same bundle as the head path, so the device
runtime does not care how the model was trained. The fine-tuned backbone is
exported as ``features.onnx`` and its new classifier becomes the softmax
head. Work in progress lives in ``.RUN.state/`` beside the run folder
(decoded images, the frozen prefix's outputs, ``checkpoint.pt``) and is
removed once the bundle is published; ``--resume`` continues from it."""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass

import numpy as np

from .._files import write_json
from ..errors import DataError, ResultCheckError, storage_error
from .bundle import (EXEMPLARS_PER_CLASS, calibration_batches, check_agreement, check_finite, counts, exemplar_rows,
                     finish_bundle, head_arrays, metrics_header, prediction_rows, write_device_files, write_labels)
from .inputs import check_usable
from .result import TrainResult
from .rundir import staging, state_dir_for

log = logging.getLogger(__name__)


@dataclass
class _Trained:
    """The fine-tuned network and its figures on the run's split."""

    net: object
    result: object  # finetune.engine result: history, epochs_run, best_epoch, resumed_from
    used: object  # the ImageFolder of images that decoded
    ok: np.ndarray
    skipped: list
    y_all: np.ndarray
    train_rows: np.ndarray
    val_rows: np.ndarray
    val_proba: np.ndarray
    train_accuracy: float
    store: object


def _bar(total: int, desc: str, progress):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not progress, leave=False)


def decode_store(paths: list[str], input_spec, state_dir: str, progress, key: str):
    """Every image decoded and preprocessed once into a RowStore (reused when
    complete and made from the same images and InputSpec: ``key``).
    Returns (store, rows that decoded, skipped)."""
    import json

    from ..data.image import decode_image
    from ..finetune.store import RowStore

    shape = (input_spec.num_channels, input_spec.image_size, input_spec.image_size)
    store = RowStore(os.path.join(state_dir, f"images-{key}.f32"), shape, len(paths))
    status_path = os.path.join(state_dir, f"images-{key}.status.json")
    if store.complete and os.path.isfile(status_path):
        with open(status_path, encoding="utf-8") as fh:
            status = json.load(fh)
        return store, np.asarray(status["ok"], np.int64), status["skipped"]
    ok, skipped = [], []
    writer = store.writer()
    row = np.zeros(shape, np.float32)
    try:
        bar = _bar(len(paths), "decoding", progress)
        for i, path in enumerate(paths):
            try:
                with open(path, "rb") as fh:
                    input_spec.to_array(decode_image(fh.read(), path, "native"), out=row)
                ok.append(i)
            except (DataError, OSError) as exc:
                skipped.append({"path": path, "reason": str(exc)})
                log.warning("skipped %s: %s", path, exc)
                row[:] = 0.0
            writer.write(row[None])
            bar.update(1)
        bar.close()
        writer.finish()
    except BaseException:
        writer.close()
        raise
    write_json(status_path, {"ok": ok, "skipped": skipped}, indent=None)
    return store, np.asarray(ok, np.int64), skipped


def _data_fingerprint(paths: list[str]) -> list:
    out = []
    for p in paths:
        st = os.stat(p)
        out.append([p, st.st_size, st.st_mtime_ns])
    return out


def _train(config, folder, strategy: str, plan, input_spec, weights_id: str, state_dir: str, progress,
           timings: dict) -> _Trained:
    """Decode once, cache the frozen prefix once, then train the suffix with
    a checkpoint every epoch."""
    import torch

    from ..data.folder import stratified_split
    from ..finetune.engine import cache_prefix, config_hash, evaluate, finetune
    from ..finetune.net import build_net

    fingerprint = {
        "data": _data_fingerprint(folder.paths), "classes": folder.classes, "backbone": config.backbone,
        "weights": weights_id, "strategy": strategy, "input_spec": input_spec.to_json(),
        "batch_size": plan.batch_size, "epochs": config.epochs, "patience": config.patience,
        "learning_rate": config.learning_rate, "l2": config.l2, "seed": config.seed, "val_split": config.val_split,
    }
    t = time.perf_counter()
    data_key = config_hash([fingerprint["data"], fingerprint["input_spec"]])
    store, ok, skipped = decode_store(folder.paths, input_spec, state_dir, progress, data_key)
    timings["decode_s"] = time.perf_counter() - t
    used = folder.subset(ok)
    check_usable(used, config.data_dir)
    y_all = np.zeros(len(folder.paths), np.int64)
    y_all[ok] = used.targets
    tr, va = stratified_split(used.targets, config.val_split, config.seed)
    train_rows, val_rows = ok[tr], ok[va]
    torch.manual_seed(config.seed)
    net = build_net(config.backbone, config.weights or "default", strategy, len(folder.classes), input_spec)
    t, cpu = time.perf_counter(), time.process_time()
    cached = cache_prefix(net, store, state_dir, key=config_hash([data_key, weights_id]))
    timings["cache_s"] = time.perf_counter() - t
    result = finetune(net, cached, y_all, train_rows, val_rows, epochs=config.epochs, batch_size=plan.batch_size,
                      learning_rate=config.learning_rate, patience=config.patience, seed=config.seed,
                      state_dir=state_dir, config=fingerprint, resume=config.resume, weight_decay=config.l2)
    timings["train_s"] = time.perf_counter() - t
    timings["train_cpu_s"] = time.process_time() - cpu
    _, _, val_proba = evaluate(net, cached, val_rows, y_all, plan.batch_size)
    train_acc = evaluate(net, cached, train_rows, y_all, plan.batch_size)[0]
    return _Trained(net, result, used, ok, skipped, y_all, train_rows, val_rows, val_proba, train_acc, store)


def _device_head(trained: _Trained, config):
    """The fine-tuned classifier as a softmax head on the network's features
    (standardisation: identity), and the exemplar rows' features."""
    import torch

    from ..heads.softmax import SoftmaxHead

    net = trained.net
    net.set_mode(False)
    params = [p for p in net.model.parameters() if id(p) in net.head_ids]
    weight = next(p for p in params if p.dim() == 2).detach().numpy()
    bias = next(p for p in params if p.dim() == 1).detach().numpy()
    head = SoftmaxHead(l2=config.l2)
    head.coef_, head.intercept_ = weight.astype(np.float32), bias.astype(np.float32)
    head.mean_ = np.zeros(weight.shape[1], np.float32)
    head.scale_ = np.ones(weight.shape[1], np.float32)
    rows = trained.train_rows
    keep = rows[exemplar_rows(trained.y_all[rows], EXEMPLARS_PER_CLASS, config.seed)]
    with torch.no_grad():
        feats = np.concatenate([net.model.forward_features(torch.from_numpy(trained.store.read(keep[i:i + 64])))
                                .numpy() for i in range(0, len(keep), 64)])
    return head, feats, keep


def train_finetuned(config, folder, strategy: str, plan, input_spec, *, cache_dir=None, progress=None) -> TrainResult:
    """``folder`` (scanned) -> the bundle at ``config.out``, training
    ``strategy`` at ``plan.batch_size`` (both resolved by ``edgetl.train``)."""
    from ..export.backbone_onnx import export_module, features_module
    from ..export.fuse import feature_model
    from ..finetune.planner import idle_mb, warm_up
    from ..report import classification_metrics
    from ..zoo import resolve_weights

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    state_dir = state_dir_for(config.out)
    parent = os.path.dirname(os.path.abspath(config.out))
    _, weights_id = resolve_weights(config.backbone, config.weights or "default")
    warm_up()
    idle = idle_mb()
    log.info("%s: caching the frozen prefix, then training %d of %d parameters at %d px, batch %d "
             "(planned peak %.0f MB above %.0f MB idle)", strategy, plan.trainable_params, plan.total_params,
             input_spec.image_size, plan.batch_size, plan.estimated_mb, idle)
    again = "run again with --overwrite (the saved state is of the refused run)"
    lower = f"lower --learning-rate (now {config.learning_rate:g}) and {again}"
    try:
        os.makedirs(state_dir, exist_ok=True)
        trained = _train(config, folder, strategy, plan, input_spec, weights_id, state_dir, progress, timings)
        head, feats, keep = _device_head(trained, config)
    except OSError as exc:
        raise storage_error(exc, f"the training state '{state_dir}'", parent) from None
    except RuntimeError as exc:  # torch's optimizer, a step beyond float32: "cannot be converted ... overflow"
        if "overflow" not in str(exc):
            raise
        raise ResultCheckError(f"training diverged (a step of the optimizer overflows float32); nothing was "
                               f"published; {lower}") from None
    used, y_val = trained.used, trained.y_all[trained.val_rows]
    check_finite(lower, validation_probabilities=trained.val_proba, exemplar_features=feats, **head_arrays(head))
    val_pred = trained.val_proba.argmax(1)
    val_metrics = classification_metrics(y_val, val_pred, used.classes)
    val_paths = [folder.paths[i] for i in trained.val_rows]
    with staging(config.out) as tmp_dir:
        t = time.perf_counter()
        write_labels(tmp_dir, used.classes)
        onnx_path = export_module(features_module(trained.net.model), input_spec,
                                  os.path.join(state_dir, "backbone.onnx"), ["features"])
        features = feature_model(onnx_path, used.classes, input_spec, config.backbone)
        calib = calibration_batches(used.paths, input_spec, config.seed)
        # No exemplar_optimism: this head is the fine-tuned network's last layer, not a head that
        # refitting on the exemplars' features reproduces.
        write_device_files(tmp_dir, features, head, feats, trained.y_all[keep], calib, config.seed, optimism=False)
        timings["bundle_s"] = time.perf_counter() - t
        t = time.perf_counter()
        agreement = check_agreement(tmp_dir, val_paths, val_pred, y_val, config.seed, fix=again)
        timings["agreement_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - t0
        metrics = {
            **metrics_header(config.backbone, weights_id, input_spec, used.classes, val_metrics,
                             trained.train_accuracy, agreement),
            "chosen": {"tap": "final", "image_size": input_spec.image_size, "head": "softmax",
                       "dim": int(head.coef_.shape[1]), "val_accuracy": val_metrics["accuracy"]},
            "strategy": _strategy_record(config, strategy, plan, trained, idle, timings),
            "counts": counts(folder, used, len(trained.train_rows), len(trained.val_rows),
                             folder.skipped + trained.skipped),
            "skipped": folder.skipped + trained.skipped,
            "duplicates": folder.duplicates,
            "features": {"extracted": int(len(trained.ok)), "from_cache": 0, "dim": int(head.coef_.shape[1])},
            "head": {"type": "softmax", "epochs_run": trained.result.epochs_run,
                     "best_epoch": trained.result.best_epoch, "learning_rate": config.learning_rate,
                     "l2": config.l2, "history": trained.result.history,
                     "shipped": f"the {strategy} fine-tuned network at its best validation epoch"},
            "config": {"val_split": config.val_split, "epochs": config.epochs, "seed": config.seed,
                       "image_size": input_spec.image_size, "strategy": strategy, "batch_size": plan.batch_size},
            "val_predictions": prediction_rows(val_paths, used.classes, y_val, val_pred, trained.val_proba),
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
        }
        finish_bundle(tmp_dir, config.out, metrics, config.to_toml())
    shutil.rmtree(state_dir, ignore_errors=True)  # published: the work in progress is no longer needed
    return TrainResult(config.out, metrics, [folder.paths[i] for i in trained.train_rows], val_paths, y_val)


def _strategy_record(config, strategy: str, plan, trained: _Trained, idle: float, timings: dict) -> dict:
    result = trained.result
    return {
        "name": strategy, "asked": config.strategy, "batch_size": plan.batch_size,
        "trainable_params": plan.trainable_params, "total_params": plan.total_params,
        "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
        "resumed_after_epoch": result.resumed_from, "plan": plan.to_dict(), "idle_mb": round(idle, 1),
        "max_memory_mb": config.max_memory_mb, "train_cpu_s": round(timings["train_cpu_s"], 2),
    }
