"""Evaluate a bundle on a labeled folder, through the device runtime."""

from __future__ import annotations

import logging
import os

import numpy as np

from .data.folder import scan_folder
from .errors import DataError
from .runtime.predictor import Predictor, to_image

log = logging.getLogger(__name__)


def evaluate(run_dir: str | os.PathLike, data_dir: str | os.PathLike, int8: bool = False,
             batch_size: int = 32) -> dict:
    """Accuracy, per-class report and confusion matrix of the bundle on
    ``data_dir`` (ImageFolder layout; class names must be bundle labels)."""
    from .report import classification_metrics

    predictor = Predictor(run_dir, int8=int8)
    folder = scan_folder(data_dir, min_classes=1)
    label_index = {name: i for i, name in enumerate(predictor.labels)}
    unknown = [c for c in folder.classes if c not in label_index]
    if unknown:
        raise DataError(
            f"Class folder '{unknown[0]}' in '{os.fspath(data_dir)}' is not one of the model's labels "
            f"({', '.join(predictor.labels[:10])}{', ...' if len(predictor.labels) > 10 else ''}); "
            f"rename or remove it"
        )
    y_true, y_pred, skipped = [], [], list(folder.skipped)
    for start in range(0, len(folder.paths), batch_size):
        images, targets = [], []
        for path, target in zip(folder.paths[start : start + batch_size], folder.targets[start : start + batch_size]):
            try:
                images.append(to_image(path))
                targets.append(label_index[folder.classes[target]])
            except DataError as exc:
                skipped.append({"path": path, "reason": str(exc).split(": ", 1)[-1]})
                log.warning("skipped %s", exc)
        if images:
            y_pred.extend(predictor.predict_proba(images).argmax(axis=1).tolist())
            y_true.extend(targets)
    if not y_true:
        raise DataError(f"No readable images in '{os.fspath(data_dir)}'; add JPEG or PNG images to its class folders")
    metrics = classification_metrics(np.asarray(y_true), np.asarray(y_pred), predictor.labels)
    metrics["model"] = os.path.basename(predictor.bundle.model_path)
    metrics["skipped"] = skipped
    return metrics
