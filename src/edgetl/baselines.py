"""Baselines a transfer-learned head has to beat.

``raw_pixel_baseline``: a linear classifier on standardised raw pixels of
the images shrunk to a small square, fitted in closed form (ridge
regression on one-hot targets, ``heads.ridge``: every penalty strength from
one eigendecomposition, a fraction of a second where an iterative logistic
regression took several). If a frozen backbone's features do not beat
this, the backbone is not earning its cost."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image

from .data.image import GRAY_MODES, is_grayscale_file, load_image
from .data.input_spec import InputSpec

DEFAULT_MAX_SIZE = 32
MIN_SIZE = 8  # InputSpec's floor
ALPHA_GRID = (0.01, 0.1, 1.0, 10.0)  # penalty / training images

ImageLike = Any  # a PIL image, or a path to an image file


def _is_path(item: ImageLike) -> bool:
    return isinstance(item, (str, os.PathLike))


def _size_and_gray(item: ImageLike) -> tuple[int, bool]:
    """(shorter side, is grey) without decoding the pixels of a file."""
    if _is_path(item):
        try:
            with Image.open(item) as image:  # header only
                side = min(image.size)
        except Exception:
            side = min(load_image(item).size)  # raises the DataError that explains the problem
        return side, bool(is_grayscale_file(os.fspath(item)))
    return min(item.size), item.mode in GRAY_MODES


def _decoded(item: ImageLike) -> Image.Image:
    if _is_path(item):
        return load_image(item, channels="native")
    return item if item.mode in ("L", "RGB") else item.convert("L" if item.mode in GRAY_MODES else "RGB")


@dataclass
class RawPixelClassifier:
    """Images -> pixels at ``image_size`` -> standardise -> ridge classifier
    (``heads.ridge.RidgeClassifier``)."""

    image_size: int
    grayscale: bool
    model: Any

    @property
    def input_spec(self) -> InputSpec:
        n = 1 if self.grayscale else 3
        # Centre square, whole of it (crop_fraction 1); pixels scaled to 0..1.
        return InputSpec(image_size=self.image_size, crop_fraction=1.0, mean=(0.0,) * n, std=(255.0,) * n,
                         channels="L" if self.grayscale else "RGB")

    def features(self, images: Sequence[ImageLike]) -> np.ndarray:
        spec = self.input_spec
        out = np.empty((len(images), spec.num_channels, spec.image_size, spec.image_size), np.float32)
        for i, item in enumerate(images):
            spec.to_array(_decoded(item), out=out[i])
        return out.reshape(len(images), -1)

    def decision_function(self, images: Sequence[ImageLike]) -> np.ndarray:
        return self.model.decision_function(self.features(images))

    def predict(self, images: Sequence[ImageLike]) -> np.ndarray:
        return self.model.predict(self.features(images))

    def score(self, images: Sequence[ImageLike], y: np.ndarray) -> float:
        """Accuracy on labelled images (e.g. a held-out test set)."""
        return float((self.predict(images) == np.asarray(y)).mean())


def raw_pixel_baseline(train_images: Sequence[ImageLike], y_train: np.ndarray, val_images: Sequence[ImageLike],
                       y_val: np.ndarray, image_size: int | None = None, grayscale: bool | None = None,
                       alpha: float | None = None, seed: int = 0) -> tuple[dict, RawPixelClassifier]:
    """Fit the raw-pixel baseline; returns (result, predictor).

    ``train_images``/``val_images``: PIL images or image paths. ``image_size``
    defaults to min(32, the shorter side of the smallest training image)
    (at least 8); ``grayscale`` defaults to "every training image is grey".
    ``alpha`` (the penalty per training image) defaults to the best of
    ALPHA_GRID on the validation split (ties go to the stronger penalty).
    ``result`` has ``val_accuracy``, ``train_accuracy``, ``image_size``,
    ``grayscale``, ``alpha``, ``num_features`` and ``model``
    ("ridge_classifier"); the predictor's ``score(images, y)`` rates a
    held-out test set the same way. ``seed`` is unused (the fit is exact)."""
    from .heads.ridge import RidgeClassifier

    if len(train_images) == 0 or len(val_images) == 0:
        raise ValueError("raw_pixel_baseline needs training and validation images")
    if image_size is None or grayscale is None:
        info = [_size_and_gray(item) for item in train_images]
        if image_size is None:
            image_size = max(MIN_SIZE, min(DEFAULT_MAX_SIZE, min(side for side, _ in info)))
        if grayscale is None:
            grayscale = all(gray for _, gray in info)
    clf = RawPixelClassifier(int(image_size), bool(grayscale), None)
    X = clf.features(train_images)
    Xv = clf.features(val_images)
    y_train, y_val = np.asarray(y_train, np.int64), np.asarray(y_val, np.int64)
    num_classes = int(max(y_train.max(), y_val.max())) + 1
    best = None
    for a in sorted((alpha,) if alpha is not None else ALPHA_GRID, reverse=True):
        model = RidgeClassifier(a).fit(X, y_train, num_classes)
        acc = float((model.predict(Xv) == y_val).mean())
        if best is None or acc > best[0]:
            best = (acc, a, model)
    val_acc, clf_alpha, clf.model = best
    result = {
        "model": "ridge_classifier",
        "val_accuracy": val_acc,
        "train_accuracy": float((clf.model.predict(X) == y_train).mean()),
        "image_size": clf.image_size,
        "grayscale": clf.grayscale,
        "alpha": clf_alpha,
        "num_features": int(X.shape[1]),
    }
    return result, clf
