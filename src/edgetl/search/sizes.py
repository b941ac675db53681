"""Which input sizes to try, and the device budget a candidate must fit."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError

MIN_SEARCH_SIZE = 32


def search_sizes(default_size: int, min_size: int = MIN_SEARCH_SIZE) -> list[int]:
    """Input sizes to try, largest first: the default, then halving (rounded
    down to multiples of 8) down to ``min_size``, which is always included:
    224 -> [224, 112, 56, 32]. Each size costs at most a quarter of the one
    before, so the whole ladder costs at most 4/3 of its largest size."""
    sizes, size = [], int(default_size)
    while size > min_size:
        sizes.append(size)
        size = max(min_size, size // 2 // 8 * 8)
    sizes.append(min_size)
    return sorted(set(sizes), reverse=True)


def with_native_size(sizes: list[int], native: int | None, max_cost: float = 1.5, near: float = 0.2) -> list[int]:
    """``sizes`` plus the images' own resolution (rounded down to a multiple
    of 8) when it lies inside the ladder, is not within ``near`` of a size
    already there, and the ladder's cost stays within ``max_cost`` times its
    largest size: a 72-px icon set is also tried at 72 px."""
    if not native or not sizes:
        return sizes
    size = native // 8 * 8
    if not sizes[-1] < size < sizes[0] or any(abs(size - s) <= near * s for s in sizes):
        return sizes
    if sum(s * s for s in sizes + [size]) > max_cost * sizes[0] ** 2:
        return sizes
    return sorted(sizes + [size], reverse=True)


def native_side(paths: list[str], sample: int = 200, seed: int = 0) -> int | None:
    """Median shorter side of up to ``sample`` images (headers only)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    chosen = [paths[i] for i in rng.permutation(len(paths))[:sample]]
    sides = []
    for path in chosen:
        try:
            with Image.open(path) as image:
                sides.append(min(image.size))
        except Exception:  # unreadable files are reported by the extraction
            continue
    return int(np.median(sides)) if sides else None


def parse_count(text: str | float | int | None) -> float | None:
    """'40M', '0.5G', '2.5e7', 1e6 -> a number; None stays None."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        return float(text)
    raw = str(text).strip()
    scale = {"k": 1e3, "m": 1e6, "g": 1e9}.get(raw[-1:].lower(), 1.0)
    number = raw[:-1] if scale != 1.0 else raw
    try:
        value = float(number) * scale
    except ValueError:
        raise DataError(f"--max-macs must be a number such as 40M or 0.5G, got {raw!r}") from None
    return value


@dataclass(frozen=True)
class Budget:
    """Device limits; None means no limit."""

    max_latency_ms: float | None = None
    max_macs: float | None = None
    max_model_mb: float | None = None

    def __post_init__(self):
        for name in ("max_latency_ms", "max_macs", "max_model_mb"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise DataError(f"--{name.replace('_', '-')} must be positive, got {value}")

    def over(self, macs: float, model_mb: float, latency_ms: float | None) -> list[str]:
        """The limits a candidate exceeds, as short phrases."""
        out = []
        if self.max_macs is not None and macs > self.max_macs:
            out.append(f"{macs / 1e6:.1f}M MACs > {self.max_macs / 1e6:.1f}M")
        if self.max_model_mb is not None and model_mb > self.max_model_mb:
            out.append(f"{model_mb:.2f} MB > {self.max_model_mb:.2f} MB")
        if self.max_latency_ms is not None and latency_ms is not None and latency_ms > self.max_latency_ms:
            out.append(f"{latency_ms:.2f} ms > {self.max_latency_ms:.2f} ms")
        return out

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.max_latency_ms, self.max_macs, self.max_model_mb))
