"""Fixtures of the head tests: one thread, and real features (scikit-learn's
8x8 handwritten digits, 64 pixel values, the root conftest's split)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def features(digits):
    d, split = digits
    X = d.data.astype(np.float32)
    return {k: (X[v], d.target[v]) for k, v in split.items()}
