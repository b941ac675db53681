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


def snapshot(root) -> dict[str, str]:
    """Every file and folder under root (hidden ones too) with a content hash:
    equal snapshots before and after mean nothing was written there."""
    import hashlib

    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root) + os.sep] = "dir"
        for f in filenames:
            with open(os.path.join(dirpath, f), "rb") as fh:
                out[os.path.relpath(os.path.join(dirpath, f), root)] = hashlib.sha256(fh.read()).hexdigest()
    return out
