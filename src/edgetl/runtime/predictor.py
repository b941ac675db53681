"""Run a bundle on the device: numpy + onnxruntime + Pillow, never torch."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..data.image import load_image
from ..errors import BundleError, DataError
from .bundle import INPUT_NAME, OUTPUT_NAME, read_bundle
from .session import make_session


@dataclass(frozen=True)
class Prediction:
    label: str
    probability: float
    index: int

    def to_dict(self, path: str | None = None) -> dict:
        out = {"label": self.label, "probability": self.probability, "index": self.index}
        return {"path": path, **out} if path is not None else out


def _native(image: Image.Image) -> Image.Image:
    return image if image.mode in ("L", "RGB") else image.convert("RGB")


def _check_array(arr: np.ndarray) -> np.ndarray:
    """An image array the way Pillow would take it, or a DataError that says
    what is wrong (not a Pillow or ONNX Runtime error three frames down)."""
    if arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
        raise DataError("image array contains NaN or Inf; pass uint8 pixels (0-255)")
    if arr.dtype != np.uint8:
        raise DataError(f"image arrays must be uint8 (0-255), got {arr.dtype}; convert with "
                        f"np.clip(x, 0, 255).astype(np.uint8)")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise DataError(f"image arrays must be H x W (grey), H x W x 3 (RGB) or H x W x 4 (RGBA), got shape "
                        f"{arr.shape}; for a batch, pass a list of images")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"image array is empty (shape {arr.shape}); pass an image at least 1 x 1")
    return arr


def to_image(item, channels: str = "native") -> Image.Image:
    """A path, a PIL image or an HxW / HxWxC uint8 array -> upright 8-bit L or
    RGB image. The InputSpec converts to its channels after resizing, the same
    way for every kind of input, so paths, images and arrays give one tensor."""
    if isinstance(item, (str, os.PathLike)):
        return load_image(item, "native")
    if isinstance(item, Image.Image):
        return _native(item) if channels == "native" else item.convert(channels)
    if isinstance(item, (bytes, bytearray)) or item is None:
        raise DataError(f"cannot read an image from {type(item).__name__}; pass a path, a PIL image or a uint8 array")
    arr = _check_array(np.asarray(item))
    image = Image.fromarray(arr)
    return _native(image) if channels == "native" else image.convert(channels)


def _batches(images: Iterable, batch_size: int) -> Iterator[list]:
    """Consecutive lists of ``batch_size`` items, without listing the input:
    a generator of 100,000 paths is read one batch at a time."""
    if isinstance(images, (str, os.PathLike, Image.Image)) or (isinstance(images, np.ndarray) and images.ndim != 4):
        # Iterating one image would silently turn its rows into "images".
        raise DataError(f"pass a list of images (or an N x H x W x C array), not one {type(images).__name__}; "
                        f"e.g. predict([image])")
    it = iter(images)
    while batch := list(itertools.islice(it, batch_size)):
        yield batch


def iter_outputs(session, spec, images, output: str, batch_size: int = 32) -> Iterator[np.ndarray]:
    """One output of ``session`` per batch of ``batch_size`` images, decoded
    and run one batch at a time: memory does not grow with the number of images."""
    for batch in _batches(images, batch_size):
        yield session.run([output], {INPUT_NAME: spec.batch([to_image(item) for item in batch])})[0]


def run_images(session, spec, images, output: str, batch_size: int = 32) -> np.ndarray:
    """One output of ``session`` for every image, in batches of ``batch_size``."""
    parts = list(iter_outputs(session, spec, images, output, batch_size))
    if not parts:
        raise DataError("no images given; pass at least one image")
    return np.concatenate(parts)


# ONNX Runtime's memory pool keeps what the largest run needed (~11 MB per
# 224-px image for EfficientNet-Lite0); batches of this many pixels keep it
# near 100 MB, and were as fast as batches of 32 at 224 px here.
PIXELS_PER_BATCH = 8 * 224 * 224


def default_batch_size(image_size: int) -> int:
    """Images per batch: as many as PIXELS_PER_BATCH allows, 1 to 32."""
    return int(max(1, min(32, PIXELS_PER_BATCH // max(1, image_size * image_size))))


class Predictor:
    """Classify images with a bundle's ``model.onnx`` (or ``model.int8.onnx``)."""

    def __init__(self, run_dir: str | os.PathLike, int8: bool = False, num_threads: int | None = None,
                 batch_size: int | None = None):
        self.bundle = read_bundle(os.fspath(run_dir), int8=int8)
        self.labels = self.bundle.labels
        self.input_spec = self.bundle.input_spec
        self.batch_size = batch_size or default_batch_size(self.input_spec.image_size)
        self._session = make_session(self.bundle.model_path, num_threads=num_threads)

    def preprocess(self, images) -> np.ndarray:
        """The exact float32 NCHW batch the model takes."""
        spec = self.input_spec
        return spec.batch([to_image(item) for batch in _batches(images, self.batch_size) for item in batch])

    def _run(self, batch: np.ndarray) -> np.ndarray:
        proba = self._session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
        if proba.ndim != 2 or proba.shape[1] != len(self.labels):
            raise BundleError(f"'{self.bundle.model_path}' returned {proba.shape[1:]} values per image for "
                              f"{len(self.labels)} labels; train the bundle again ('edgetl train')")
        return check_probabilities(proba, f"'{self.bundle.model_path}'")

    def iter_proba(self, images) -> Iterator[np.ndarray]:
        """Probabilities batch by batch (each ``batch_size`` x classes), for any
        iterable of images: memory stays flat however many images there are."""
        spec = self.input_spec
        for batch in _batches(images, self.batch_size):
            yield self._run(spec.batch([to_image(item) for item in batch]))

    def iter_predict(self, images) -> Iterator[Prediction]:
        """One :class:`Prediction` per image, in order, computed a batch at a time."""
        for proba in self.iter_proba(images):
            yield from top_predictions(proba, self.labels)

    def predict_proba(self, images) -> np.ndarray:
        parts = list(self.iter_proba(images))
        return np.concatenate(parts) if parts else np.zeros((0, len(self.labels)), np.float32)

    def predict(self, images) -> list[Prediction]:
        return list(self.iter_predict(images))

    def predict_proba_tensor(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities for an already preprocessed float32 N x C x H x W batch
        (what :meth:`preprocess` returns), checked before ONNX Runtime sees it."""
        spec = self.input_spec
        expected = (spec.num_channels, spec.image_size, spec.image_size)
        if not isinstance(batch, np.ndarray):
            raise DataError(f"pass a numpy array, got {type(batch).__name__}")
        if batch.dtype != np.float32:
            raise DataError(f"the input batch must be float32, got {batch.dtype}; use preprocess() or .astype(np.float32)")
        if batch.ndim != 4 or batch.shape[1:] != expected:
            raise DataError(f"the input batch must be N x {' x '.join(map(str, expected))}, got shape {batch.shape}; "
                            f"use preprocess() to make it")
        if not np.isfinite(batch).all():
            raise DataError("the input batch contains NaN or Inf; use preprocess() to make it")
        if not len(batch):
            return np.zeros((0, len(self.labels)), np.float32)
        return np.concatenate([self._run(np.ascontiguousarray(batch[i : i + self.batch_size]))
                               for i in range(0, len(batch), self.batch_size)])


def check_probabilities(proba: np.ndarray, source: str, fix: str = "train the bundle again ('edgetl train')"
                        ) -> np.ndarray:
    """``proba`` if every value is a finite number; a model whose weights hold
    NaN or infinity gives NaN for every image, which must not be printed as an
    answer (label 0, probability NaN) nor written as JSON."""
    if not np.isfinite(proba).all():
        raise BundleError(f"{source} computed probabilities that are not numbers (NaN or infinity): its weights "
                          f"are damaged; {fix}")
    return proba


def top_predictions(proba: np.ndarray, labels: list[str]) -> list[Prediction]:
    idx = proba.argmax(axis=1)
    return [Prediction(labels[i], float(p[i]), int(i)) for i, p in zip(idx, proba)]
