"""Which input sizes a search tries, the count syntax of --max-macs, and the device budget."""

from __future__ import annotations

import pytest

from edgetl.errors import DataError
from edgetl.search import Budget, parse_count, search_sizes, with_native_size


def test_sizes_halve_and_cost_at_most_four_thirds():
    assert search_sizes(224) == [224, 112, 56, 32]
    assert search_sizes(240) == [240, 120, 56, 32]
    assert search_sizes(32) == [32]
    for default in (224, 240, 260, 299):
        sizes = search_sizes(default)
        assert len(sizes) >= 4 and sizes[-1] == 32
        # Compute grows with the pixel count: the whole ladder vs its largest size.
        assert sum(s * s for s in sizes) / sizes[0] ** 2 <= 4 / 3


def test_native_size_joins_the_ladder_when_cheap_and_new():
    ladder = search_sizes(224)
    assert with_native_size(ladder, 80) == [224, 112, 80, 56, 32]
    assert with_native_size(ladder, 28) == ladder  # below the smallest: upsampling is the ladder's job
    assert with_native_size(ladder, 1000) == ladder  # above the default: never cheaper
    assert with_native_size(ladder, 60) == ladder  # within 20 % of 56
    assert with_native_size(ladder, 160) == ladder  # would cost more than 1.5x the largest size
    assert sum(s * s for s in with_native_size(ladder, 80)) <= 1.5 * 224**2


def test_parse_count():
    assert parse_count("40M") == 40e6 and parse_count("0.5G") == 5e8 and parse_count("2k") == 2000
    assert parse_count(1e6) == 1e6 and parse_count(None) is None
    with pytest.raises(DataError, match="--max-macs"):
        parse_count("lots")


def test_budget_over():
    b = Budget(max_latency_ms=1.0, max_macs=10e6, max_model_mb=2.0)
    assert b.over(5e6, 1.0, 0.5) == []
    assert len(b.over(50e6, 3.0, 2.0)) == 3
    with pytest.raises(DataError, match="positive"):
        Budget(max_macs=0)
