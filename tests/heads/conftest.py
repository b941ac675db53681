"""Fixtures of the head tests: one thread, and real features (scikit-learn's
8x8 handwritten digits, 64 pixel values) split three ways."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Digits-sized problems gain nothing from a second thread, and spinning
    OpenMP/BLAS workers slow them 10x when other processes share the cores."""
    import torch
    from threadpoolctl import threadpool_limits

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    idx = np.random.default_rng(0).permutation(len(d.target))
    split = {"train": idx[:1000], "val": idx[1000:1300], "test": idx[1300:]}
    return d, split


@pytest.fixture(scope="module")
def features(digits):
    d, split = digits
    X = d.data.astype(np.float32)
    return {k: (X[v], d.target[v]) for k, v in split.items()}
