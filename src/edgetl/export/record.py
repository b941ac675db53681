"""What an export records: ``metrics.json["exports"][format]`` (read,
updated, written atomically) and the size of the files it wrote."""

from __future__ import annotations

import os

from .._files import write_json
from ..runtime.bundle import METRICS, read_metrics


def update_metrics(run_dir: str, key: str, value: dict) -> dict:
    """metrics.json["exports"][key] = value, atomically; returns the whole metrics."""
    metrics = read_metrics(run_dir)
    metrics.setdefault("exports", {})[key] = value
    write_json(os.path.join(run_dir, METRICS), metrics)
    return metrics


def size_mb(path: str) -> float:
    """Size of a file, or of every file in a folder (an .mlpackage), in MB."""
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(r, f)) for r, _d, fs in os.walk(path) for f in fs) / 1e6
    return os.path.getsize(path) / 1e6
