"""The bundle's tail, the same whatever trained the model: the device files
(features + int8, model + int8, head.safetensors, train_step.onnx), the
agreement of the exported models with the host, the first keys of
metrics.json, then metrics, config, report and model card, and publishing."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from typing import Iterator

import numpy as np

from .. import __version__
from .._files import write_json, write_text
from ..data.image import decode_image
from ..errors import DataError, ResultCheckError
from ..runtime.bundle import (FEATURES_FP32, FEATURES_INT8, HEAD, LABELS, METRICS, MODEL_FP32, MODEL_INT8,
                              TRAIN_STEP)
from .rundir import publish

log = logging.getLogger(__name__)

MAX_AGREEMENT_IMAGES = 1000
# int8 calibration images (MinMax ranges). 64 instead of 128 halves the calibration time (~2.5 s saved at
# 224 px here) for the same int8/fp32 top-1 agreement, measured with --image-size 224 --tap final:
# Fashion-MNIST 1,000 (agreement on 2,000 images) 96.2 % with 128, 64 and 32; GCompris photos and Tux Paint
# stamps (70 and 73 images; agreement on ~145) 99.3 % and 95.9 % with 128 (all), 64 and 32.
NUM_CALIBRATION_IMAGES = 64
EXEMPLARS_PER_CLASS = 50  # training features per class kept in the bundle for on-device rehearsal
CONFIG = "config.toml"
# model.onnx computes the host's own arithmetic (the same graph, the same head): it agrees on ~100 % of
# the validation images. Below 90 % (and at least two images: one near-tie may flip in float rounding)
# the head was trained on features the model does not compute (a wrong cache), and the run is refused.
MIN_AGREEMENT_FP32 = 0.9
# int8 legitimately agrees less (96 % on the digits demo): below this it is only warned about.
WARN_AGREEMENT_INT8 = 0.8


@contextlib.contextmanager
def images_still_there(paths: list[str]) -> Iterator[None]:
    """Around a step that reads the run's images again (baselines, int8
    calibration, the agreement check): an image renamed or deleted since it
    was scanned is named as such, not reported as a storage or image error."""
    try:
        yield
    except (OSError, DataError):
        gone = next((p for p in paths if not os.path.isfile(p)), None)
        if gone is None:
            raise
        raise DataError(f"image {gone} disappeared during the run (renamed or deleted?); run again") from None


def calibration_batches(paths: list[str], spec, seed: int, batch_size: int = 16):
    """Up to NUM_CALIBRATION_IMAGES random images, preprocessed, for int8 calibration."""
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(paths))[:NUM_CALIBRATION_IMAGES]
    arrays = []
    with images_still_there([paths[i] for i in chosen]):
        for i in chosen:
            with open(paths[i], "rb") as fh:
                arrays.append(spec.to_array(decode_image(fh.read(), paths[i], "native")))
    return [np.stack(arrays[i : i + batch_size]) for i in range(0, len(arrays), batch_size)]


def check_finite(fix: str, **arrays) -> None:
    """Refuses a trained model whose weights or outputs (``arrays``, named by
    what they are) hold NaN or Inf: training diverged, and such a bundle
    would answer NaN for every image. The one line ends with ``fix``."""
    bad = [name.replace("_", " ") for name, a in arrays.items() if not np.isfinite(np.asarray(a, np.float64)).all()]
    if bad:
        raise ResultCheckError(f"training diverged (NaN or Inf in the {', '.join(bad)}); nothing was published; "
                               f"{fix}")


def head_arrays(head) -> dict:
    """A softmax head's arrays, as check_finite takes them."""
    return {"head weights": head.coef_, "head bias": head.intercept_, "head mean": head.mean_,
            "head scale": head.scale_}


def exemplar_rows(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Up to ``per_class`` random row indices of each class, sorted."""
    rng = np.random.default_rng(seed)
    rows = [rng.permutation(np.flatnonzero(y == c))[:per_class] for c in np.unique(y)]
    return np.sort(np.concatenate(rows))


# Parts of the training rows for exemplar_optimism: each exemplar is scored by a head fitted without its
# fifth of the rows (five heads); as for the device's folds, the usual compromise between honest scores
# and heads close to the one that ships.
OPTIMISM_FOLDS = 5


def exemplar_optimism(head, X: np.ndarray, y: np.ndarray, keep: np.ndarray, seed: int) -> np.ndarray:
    """Per exemplar row ``keep[i]``: the shipped ``head``'s best logit on it
    minus the best logit of the same kind of head (same settings) fitted
    without it (OPTIMISM_FOLDS parts, stratified). The head trained on its
    exemplars, so their logits are higher than a new photo of the same class
    gets; the device (``Personalizer._imprint``) subtracts this to judge how
    far a new class may reach into the old ones on honest numbers. 0 where
    a part leaves a class without rows to fit."""
    y = np.asarray(y, np.int64)
    num_classes = int(y.max()) + 1
    rng = np.random.default_rng(seed)
    folds = np.empty(len(y), np.int64)
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c))
        folds[rows] = np.arange(len(rows)) % OPTIMISM_FOLDS
    inside = head.decision_function(X[keep]).max(axis=1)
    outside = inside.copy()
    for f in range(OPTIMISM_FOLDS):
        scored = folds[keep] == f
        train = folds != f
        if not scored.any() or len(np.unique(y[train])) < num_classes:
            continue
        fold_head = type(head)(**head.get_params()).fit(X[train], y[train], num_classes=num_classes)
        outside[scored] = fold_head.decision_function(X[keep[scored]]).max(axis=1)
    return np.ascontiguousarray(inside - outside, np.float32)


def exemplar_storage(features: np.ndarray) -> np.ndarray:
    """The exemplars as head.safetensors keeps them: float16 (half the bytes a
    phone or a web page downloads; rehearsal needs no more precision), float32
    when a value is outside float16's range. Every runtime widens them to
    float32 the same way, so they all start from the same numbers."""
    features = np.asarray(features, np.float32)
    fits = features.size == 0 or float(np.abs(features).max()) < 60000.0
    return np.ascontiguousarray(features, np.float16 if fits else np.float32)


def write_labels(folder: str, labels: list[str]) -> None:
    write_text(os.path.join(folder, LABELS), "".join(f"{c}\n" for c in labels))


def write_device_files(folder: str, features_model, head, X_train: np.ndarray, y_train: np.ndarray,
                       calibration, seed: int, model_head=None, optimism: bool = True) -> None:
    """features.onnx (+ int8), model.onnx (+ int8) = the same feature models
    with ``model_head`` (default: ``head``) on top, head.safetensors (the
    softmax ``head``: what the device trains, its exemplars and, with
    ``optimism``, their ``exemplar_optimism``: ``head`` must then be a head
    fitted on ``X_train``, ``y_train`` that ``type(head)(**head.get_params())``
    fits again) and train_step.onnx."""
    import onnx
    from safetensors.numpy import save_file

    from ..export.fuse import append_head
    from ..export.train_step import build_train_step
    from ..quantize import quantize_int8

    onnx.save(features_model, os.path.join(folder, FEATURES_FP32))
    quantize_int8(os.path.join(folder, FEATURES_FP32), os.path.join(folder, FEATURES_INT8), calibration)
    for features_name, model_name in ((FEATURES_FP32, MODEL_FP32), (FEATURES_INT8, MODEL_INT8)):
        onnx.save(append_head(onnx.load(os.path.join(folder, features_name)), model_head or head),
                  os.path.join(folder, model_name))
    keep = exemplar_rows(y_train, EXEMPLARS_PER_CLASS, seed)
    extra = {"exemplar_optimism": exemplar_optimism(head, X_train, y_train, keep, seed)} if optimism else {}
    save_file({
        "weight": np.ascontiguousarray(head.coef_, np.float32),
        "bias": np.ascontiguousarray(head.intercept_, np.float32),
        "mean": np.ascontiguousarray(head.mean_, np.float32),
        "scale": np.ascontiguousarray(head.scale_, np.float32),
        "exemplar_features": exemplar_storage(X_train[keep]),
        "exemplar_labels": np.ascontiguousarray(y_train[keep], np.int64),
        **extra,
    }, os.path.join(folder, HEAD), metadata={"format": "edgetl.head/1", "kind": "softmax", "l2": repr(float(head.l2))})
    onnx.save(build_train_step(head.mean_, head.scale_), os.path.join(folder, TRAIN_STEP))


def check_agreement(bundle: str, val_paths: list[str], host_pred: np.ndarray, y_val: np.ndarray,
                    seed: int, fix: str = "run again") -> dict:
    """The device runtime on the bundle (fp32 and int8) against the host's
    predictions on up to MAX_AGREEMENT_IMAGES validation images. A model.onnx
    that disagrees with the host (below MIN_AGREEMENT_FP32) or answers NaN is
    refused (ResultCheckError, ending with ``fix``): nothing is published."""
    from ..runtime.predictor import Predictor

    rng = np.random.default_rng(seed)
    check = np.sort(rng.permutation(len(val_paths))[:MAX_AGREEMENT_IMAGES])
    check_paths = [val_paths[i] for i in check]
    out = {}
    for name, int8 in (("fp32", False), ("int8", True)):
        with images_still_there(check_paths):
            proba = Predictor(bundle, int8=int8).predict_proba(check_paths)
        if not np.isfinite(proba).all():
            raise ResultCheckError(f"the exported {name} model computes NaN or Inf on the validation images; "
                                   f"nothing was published; {fix}")
        agree = proba.argmax(axis=1) == host_pred[check]
        out[f"agreement_{name}"] = float(agree.mean())
        out[f"bundle_accuracy_{name}"] = float((proba.argmax(axis=1) == y_val[check]).mean())
        _judge_agreement(name, agree, fix)
    out["agreement_n"] = int(len(check))
    return out


def _judge_agreement(name: str, agree: np.ndarray, fix: str) -> None:
    n, same = len(agree), int(agree.sum())
    if not n or same / n >= (MIN_AGREEMENT_FP32 if name == "fp32" else WARN_AGREEMENT_INT8) or n - same < 2:
        return
    what = f"agrees with the host's predictions on only {same} of {n} validation images ({100 * same / n:.0f} %)"
    if name == "int8":
        log.warning("model.int8.onnx %s; prefer model.onnx on the device", what)
        return
    raise ResultCheckError(f"the exported model.onnx {what}, where it should agree on ~100 %: the head was trained "
                           f"on features the model does not compute; nothing was published; {fix}")


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


def counts(folder, used, num_train: int, num_val: int, skipped: list) -> dict:
    """metrics.json's ``counts``."""
    return {
        "images_found": len(folder.paths), "images_used": len(used.paths), "train": int(num_train),
        "val": int(num_val), "skipped": len(skipped), "duplicates": len(folder.duplicates),
        "per_class": used.counts(),
    }


def prediction_rows(paths: list[str], classes: list[str], targets, predicted, proba) -> list[dict]:
    """metrics.json's ``val_predictions``."""
    return [{"path": p, "label": classes[int(t)], "predicted": classes[int(q)], "probability": float(pr[q])}
            for p, t, q, pr in zip(paths, targets, predicted, proba)]


def finish_bundle(tmp_dir: str, out_dir: str, metrics: dict, config_text: str) -> None:
    """Sizes into ``metrics``, then metrics.json, config.toml, the report and
    the model card into ``tmp_dir``, which is then published as ``out_dir``."""
    from ..report import write_model_card, write_report

    metrics["model_mb"] = {
        "fp32": os.path.getsize(os.path.join(tmp_dir, MODEL_FP32)) / 1e6,
        "int8": os.path.getsize(os.path.join(tmp_dir, MODEL_INT8)) / 1e6,
        "features_int8": os.path.getsize(os.path.join(tmp_dir, FEATURES_INT8)) / 1e6,
        "head": os.path.getsize(os.path.join(tmp_dir, HEAD)) / 1e6,
    }
    write_json(os.path.join(tmp_dir, METRICS), metrics)
    write_text(os.path.join(tmp_dir, CONFIG), config_text)
    t = time.perf_counter()
    write_report(tmp_dir)  # report.html + plots/*.png
    write_model_card(tmp_dir)  # README.md
    log.info("wrote the run report (report.html) and the model card (README.md) in %.1f s", time.perf_counter() - t)
    publish(tmp_dir, out_dir)
