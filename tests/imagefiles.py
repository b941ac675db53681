"""Image files made in tests: encoded bytes, files on disk, solid images."""

from __future__ import annotations

import io
import os

from PIL import Image


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def write(path, image: Image.Image, fmt: str | None = None, **kwargs) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path, fmt, **kwargs)
    return str(path)


def solid(color=(200, 30, 30), size=(16, 12), mode="RGB") -> Image.Image:
    return Image.new(mode, size, color)
