"""Run a bundle on the device: numpy + onnxruntime + Pillow, never torch."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..data.image import load_image
from ..errors import DataError
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


def to_image(item, channels: str = "native") -> Image.Image:
    """A path, a PIL image or an HxW / HxWxC uint8 array -> upright 8-bit L or
    RGB image. The InputSpec converts to its channels after resizing, the same
    way for every kind of input, so paths, images and arrays give one tensor."""
    if isinstance(item, (str, os.PathLike)):
        return load_image(item, "native")
    if isinstance(item, Image.Image):
        return _native(item) if channels == "native" else item.convert(channels)
    arr = np.asarray(item)
    if arr.dtype != np.uint8:
        raise TypeError(f"image arrays must be uint8 (0-255), got {arr.dtype}; convert with .astype(np.uint8)")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    image = Image.fromarray(arr)
    return _native(image) if channels == "native" else image.convert(channels)


def run_images(session, spec, images, output: str, batch_size: int = 32) -> np.ndarray:
    """One output of ``session`` for every image, in batches of ``batch_size``."""
    images = list(images)
    parts = [session.run([output], {INPUT_NAME: spec.batch([to_image(item) for item in images[i : i + batch_size]])})[0]
             for i in range(0, len(images), batch_size)]
    if not parts:
        raise DataError("no images given; pass at least one image")
    return np.concatenate(parts)


class Predictor:
    """Classify images with a bundle's ``model.onnx`` (or ``model.int8.onnx``)."""

    def __init__(self, run_dir: str | os.PathLike, int8: bool = False, num_threads: int | None = None,
                 batch_size: int = 32):
        self.bundle = read_bundle(os.fspath(run_dir), int8=int8)
        self.labels = self.bundle.labels
        self.input_spec = self.bundle.input_spec
        self.batch_size = batch_size
        self._session = make_session(self.bundle.model_path, num_threads=num_threads)

    def preprocess(self, images) -> np.ndarray:
        """The exact float32 NCHW batch the model takes."""
        spec = self.input_spec
        return spec.batch([to_image(item) for item in images])

    def predict_proba(self, images) -> np.ndarray:
        images = list(images)
        if not images:
            return np.zeros((0, len(self.labels)), np.float32)
        return run_images(self._session, self.input_spec, images, OUTPUT_NAME, self.batch_size)

    def predict(self, images) -> list[Prediction]:
        return top_predictions(self.predict_proba(images), self.labels)


def top_predictions(proba: np.ndarray, labels: list[str]) -> list[Prediction]:
    idx = proba.argmax(axis=1)
    return [Prediction(labels[i], float(p[i]), int(i)) for i, p in zip(idx, proba)]
