"""What an export is checked on: validation images, preprocessed exactly as
the device runtime does, and ONNX Runtime's answers on them (the reference a
converted model must agree with)."""

from __future__ import annotations

import os

import numpy as np

from ..errors import DataError
from ..runtime.bundle import read_metrics

MAX_CHECK_IMAGES = 500
_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _listed(images) -> list[str]:
    paths: list[str] = []
    for item in images:
        item = os.fspath(item)
        if os.path.isdir(item):
            for root, _dirs, files in os.walk(item):
                paths += [os.path.join(root, f) for f in sorted(files) if f.lower().endswith(_IMAGE_EXT)]
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise DataError(f"{item} does not exist: pass image files or folders to --images")
    return paths


def check_images(run_dir: str, images=None, limit: int = MAX_CHECK_IMAGES) -> list[str]:
    """Validation images to compare the exports on: ``images`` (files or
    folders) if given, else metrics.json's ``val_predictions`` that still exist."""
    if images:
        paths = _listed(images)
    else:
        metrics = read_metrics(run_dir)
        paths = [p["path"] for p in metrics.get("val_predictions", []) if os.path.isfile(p.get("path", ""))]
    if not paths:
        raise DataError(
            f"no validation images to check the export of {run_dir} on (the run's validation images are gone "
            f"or not listed): pass --images FOLDER with a few labeled photos"
        )
    if len(paths) > limit:
        idx = np.random.default_rng(0).permutation(len(paths))[:limit]
        paths = [paths[i] for i in sorted(idx)]
    return paths


def preprocess(run_dir: str, paths: list[str]) -> np.ndarray:
    """The float32 NCHW batch model.onnx takes for ``paths`` (the device runtime's preprocessing)."""
    from ..runtime import Predictor

    return Predictor(run_dir).preprocess(paths)


def onnx_proba(onnx_path: str, batch: np.ndarray) -> np.ndarray:
    """ONNX Runtime's probabilities for an NCHW batch, 32 images at a time."""
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"input": batch[i:i + 32]})[0] for i in range(0, len(batch), 32)])
