"""Safe image decoding: format allowlist, decompression-bomb limit, EXIF
orientation, and every mode folded into 8-bit RGB (or L)."""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
from PIL import Image, ImageOps

from ..errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
# MPO is what many phone cameras write for JPEGs with a depth/preview frame.
ALLOWED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "BMP", "GIF", "WEBP"})
# Decoders Pillow may try; the JPEG decoder itself returns MPO files.
_OPEN_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP")
# Above a 108 MP phone photo, below Pillow's own hard limit (2 x 89.5 MP),
# far below what would exhaust memory.
MAX_IMAGE_PIXELS = 120_000_000


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and float greyscale: scale to 0-255 instead of clipping."""
    arr = np.asarray(image, dtype=np.float64)
    hi = 65535.0 if image.mode.startswith("I;16") else max(float(arr.max()), 1.0)
    if image.mode in ("I", "F") and arr.min() < 0:
        arr = arr - arr.min()
        hi = max(float(arr.max()), 1.0)
    return Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_damage(data: bytes) -> str | None:
    """libpng's rule, which Pillow skips for pixel data: a checksum error in a
    critical chunk (IHDR, PLTE, IDAT, IEND: upper-case first letter) makes the
    file unusable; ancillary chunks (text, EXIF, ...) do not matter."""
    pos, end = len(_PNG_SIGNATURE), len(data)
    while pos + 12 <= end:
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        if pos + 12 + length > end:
            return None  # truncated: the decoder reports it
        if kind[:1].isupper():
            (crc,) = struct.unpack_from(">I", data, pos + 8 + length)
            if zlib.crc32(data[pos + 4 : pos + 8 + length]) != crc:
                return f"PNG checksum error in its {kind.decode('latin-1')} chunk"
        if kind == b"IEND":
            return None
        pos += 12 + length
    return None


def decode_image(data: bytes, name: str = "<bytes>", channels: str = "RGB") -> Image.Image:
    """Decode bytes into an upright 8-bit ``channels`` image or raise DataError.

    ``channels`` is "RGB", "L", or "native" (8-bit L for grey sources, else RGB).

    Thread-safe (decode workers call it concurrently): the pixel limit is
    checked here against the header's size before any pixel is decoded,
    without touching Pillow's global ``Image.MAX_IMAGE_PIXELS``."""
    if not data:
        raise DataError(f"{name}: empty file (0 bytes); remove it or replace it with a real image")
    kinds = "JPEG, PNG, BMP, GIF or WebP"
    try:
        image = Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)
    except Image.DecompressionBombError:
        raise DataError(f"{name}: image is too large to decode safely (over {MAX_IMAGE_PIXELS:,} pixels); "
                        f"downscale it") from None
    except Image.UnidentifiedImageError:
        raise DataError(f"{name}: not a readable image (not {kinds}, or damaged); remove it or convert it") from None
    except Exception as exc:
        raise DataError(f"{name}: not a readable image ({type(exc).__name__}: {exc}); remove or re-save it") from None
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise DataError(f"{name}: image is too large to decode safely ({width} x {height} pixels, limit "
                        f"{MAX_IMAGE_PIXELS:,}); downscale it")
    if image.format not in ALLOWED_FORMATS:
        raise DataError(f"{name}: format {image.format} is not supported; convert it to JPEG or PNG")
    if image.format == "PNG" and (damage := _png_damage(data)):
        raise DataError(f"{name}: damaged image ({damage}); remove it or re-save it from the original")
    try:
        image.seek(0)  # animated GIF/WebP: the first frame
        image.load()
    except Exception as exc:
        raise DataError(f"{name}: not a readable image ({type(exc).__name__}: {exc}); remove or re-save it") from None
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # a corrupt EXIF block must not cost the image
        pass

    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = _to_8bit(image)
    if image.mode in ("P", "PA", "LA", "RGBA", "La", "RGBa") or "transparency" in image.info:
        # Transparent pixels carry arbitrary colour; show them over white.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if channels == "native":
        # Grey stays grey (InputSpec converts after resizing: a third of the work).
        return image if image.mode in ("L", "RGB") else image.convert("RGB")
    return image.convert(channels)


def load_image(path: str | os.PathLike, channels: str = "RGB") -> Image.Image:
    """Read and decode one image file (see :func:`decode_image`)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise DataError(f"{os.fspath(path)}: cannot read ({exc.strerror}); check the path and permissions") from None
    return decode_image(data, os.fspath(path), channels)


GRAY_MODES = frozenset({"1", "L", "LA", "I;16", "I;16B", "I;16L", "I", "F"})


def is_grayscale_file(path: str) -> bool | None:
    """From the header only (nothing decoded): True for a one-channel image,
    False for colour, None when the file cannot be identified."""
    try:
        with Image.open(path, formats=_OPEN_FORMATS) as image:
            if image.mode == "P":
                palette = image.getpalette() or []
                rgb = [tuple(palette[i : i + 3]) for i in range(0, len(palette) - 2, 3)]
                return all(r == g == b for r, g, b in rgb)
            return image.mode in GRAY_MODES
    except Exception:
        return None
