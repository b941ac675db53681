"""Preprocessing as data: one ``InputSpec`` turns a decoded image into the
float32 tensor a backbone takes. numpy and Pillow only, so the host and the
device runtime run exactly this code and see the same tensor."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np
from PIL import Image

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


@dataclass(frozen=True)
class InputSpec:
    """How an image becomes a model input.

    ``image_size`` is the square side fed to the model. The image's shorter
    side is first resized to ``image_size / crop_fraction`` and the centre
    ``image_size`` square is cut out (``crop_fraction=1`` keeps everything
    inside the square). ``mean`` and ``std`` are in pixel units (0-255), per
    channel: ``x = (pixel - mean) / std``. ``channels`` is ``"RGB"`` or ``"L"``.
    """

    image_size: int = 224
    crop_fraction: float = 0.875
    mean: tuple[float, ...] = (127.0, 127.0, 127.0)
    std: tuple[float, ...] = (128.0, 128.0, 128.0)
    channels: str = "RGB"
    resample: str = "bilinear"

    def __post_init__(self) -> None:
        if not isinstance(self.image_size, int) or self.image_size < 8:
            raise ValueError(f"InputSpec.image_size must be an integer >= 8, got {self.image_size!r}")
        if not 0.1 <= self.crop_fraction <= 1.0:
            raise ValueError(f"InputSpec.crop_fraction must be in [0.1, 1], got {self.crop_fraction!r}")
        if self.channels not in ("RGB", "L"):
            raise ValueError(f"InputSpec.channels must be 'RGB' or 'L', got {self.channels!r}")
        n = 3 if self.channels == "RGB" else 1
        if len(self.mean) != n or len(self.std) != n:
            raise ValueError(f"InputSpec.mean and std need {n} values for channels {self.channels!r}")
        if not all(0.0 < float(s) < float("inf") for s in self.std):
            raise ValueError(f"InputSpec.std values must be positive and finite, got {self.std!r}")
        if not all(-float("inf") < float(m) < float("inf") for m in self.mean):
            raise ValueError(f"InputSpec.mean values must be finite, got {self.mean!r}")
        if self.resample not in _RESAMPLE:
            raise ValueError(f"InputSpec.resample must be one of {sorted(_RESAMPLE)}, got {self.resample!r}")

    @property
    def num_channels(self) -> int:
        return 3 if self.channels == "RGB" else 1

    def replace(self, **changes) -> "InputSpec":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "InputSpec":
        raw = json.loads(text)
        raw["mean"] = tuple(raw["mean"])
        raw["std"] = tuple(raw["std"])
        return cls(**raw)

    def resize_crop(self, image: Image.Image) -> Image.Image:
        """Resize the shorter side to ``image_size / crop_fraction`` and cut
        the centre ``image_size`` square, in one resampling of just the source
        region that survives the crop (no full-size intermediate)."""
        w, h = image.size
        size = self.image_size
        scale = size / self.crop_fraction / min(w, h)
        crop_w, crop_h = min(w, size / scale), min(h, size / scale)
        left, top = (w - crop_w) / 2, (h - crop_h) / 2
        box = (left, top, left + crop_w, top + crop_h)
        if (w, h) != (size, size) or box != (0, 0, w, h):
            image = image.resize((size, size), _RESAMPLE[self.resample], box=box)
        # Convert after resizing: a grey source is resampled once, not three times.
        return image.convert(self.channels) if image.mode != self.channels else image

    def to_array(self, image: Image.Image, out: np.ndarray | None = None) -> np.ndarray:
        """One decoded image -> float32 CHW (written into ``out`` if given)."""
        pixels = np.asarray(self.resize_crop(image))
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        if out is None:
            out = np.empty((self.num_channels, self.image_size, self.image_size), np.float32)
        # One pass from uint8 HWC into float32 CHW, no temporaries: this runs
        # for every image, beside ONNX Runtime on the same two cores.
        np.subtract(pixels.transpose(2, 0, 1), self._mean, out=out, dtype=np.float32)
        out *= self._inv_std
        return out

    @property
    def _mean(self) -> np.ndarray:
        return np.asarray(self.mean, dtype=np.float32)[:, None, None]

    @property
    def _inv_std(self) -> np.ndarray:
        return (1.0 / np.asarray(self.std, dtype=np.float32))[:, None, None]

    def batch(self, images) -> np.ndarray:
        """Decoded images -> float32 NCHW."""
        out = np.empty((len(images), self.num_channels, self.image_size, self.image_size), np.float32)
        for i, image in enumerate(images):
            self.to_array(image, out=out[i])
        return out
