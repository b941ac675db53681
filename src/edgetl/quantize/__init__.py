"""Quantization of a bundle's ONNX graphs: ONNX Runtime static int8 (``int8``)."""

from __future__ import annotations

from .int8 import quantize_int8

__all__ = ["quantize_int8"]
