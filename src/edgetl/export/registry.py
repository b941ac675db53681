"""The export formats, one registry: each format is a module of this package
that registers its export function under its name with
:func:`register_format`; ``edgetl export --format`` offers exactly the names
registered here (in registration order).

Adding a format: a new module ``edgetl/export/NAME.py`` with

    @register_format("NAME")
    def export_NAME(run_dir: str, int8: bool = False, images=None) -> dict: ...

returning the record it also writes to ``metrics.json["exports"][NAME]``,
and its name in the import line of ``edgetl/export/__init__.py``."""

from __future__ import annotations

import os
from collections.abc import Callable

from ..errors import DataError

ExportFn = Callable[..., dict]

FORMATS: dict[str, ExportFn] = {}


def register_format(name: str) -> Callable[[ExportFn], ExportFn]:
    """Decorator: register ``fn(run_dir, int8=False, images=None) -> record`` as format ``name``."""

    def register(fn: ExportFn) -> ExportFn:
        if name in FORMATS:
            raise ValueError(f"export format {name!r} is already registered (by {FORMATS[name].__module__})")
        FORMATS[name] = fn
        return fn

    return register


def export_model(run_dir: str, format: str, int8: bool = False, images=None, **options) -> dict:
    """Export a run folder to ``format`` (onnx, tflite, coreml, web, ...) beside
    the bundle; returns the record also written to metrics.json's ``exports``.
    ``options``: a format's own keywords (``fp32`` for web)."""
    run_dir = os.fspath(run_dir)
    if format not in FORMATS:
        raise DataError(f"Unknown export format '{format}': use one of {', '.join(FORMATS)}")
    return FORMATS[format](run_dir, int8=int8, images=images, **options)
