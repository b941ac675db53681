"""The numpy training machinery of the heads (heads.fitting): Adam against
the textbook update, the softmax gradient against its definition, the
standardisation (float64 sums, the std floor, in place), the one shuffled
copy of X, the overflow guard, and that fitting a head imports no torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edgetl.heads import MLPHead, NearestClassMeanHead, SoftmaxHead
from edgetl.heads import fitting


def test_adam_is_the_textbook_update():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(5, 7)).astype(np.float32)
    ref, m, v = p.astype(np.float64), np.zeros((5, 7)), np.zeros((5, 7))
    lr, b1, b2, eps = 1e-2, 0.9, 0.999, 1e-8
    adam = fitting.Adam([p], lr)
    for t in range(1, 30):
        g = rng.normal(size=(5, 7)) * 10.0 ** rng.uniform(-4, 1)
        adam.step([g.astype(np.float32)])
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        ref -= lr / (1 - b1**t) * m / (np.sqrt(v / (1 - b2**t)) + eps)
        assert p.dtype == np.float32
        np.testing.assert_allclose(p, ref, rtol=1e-5, atol=1e-6)


def test_adam_with_an_absurd_rate_gives_non_finite_weights_not_an_error():
    p = np.ones(4, np.float32)
    adam = fitting.Adam([p], 1e300)
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(3):
            adam.step([np.array([1, -1, 2, -2], np.float32) * p])
    assert p.dtype == np.float32 and not np.isfinite(p).all()


@pytest.mark.parametrize("head", [SoftmaxHead(epochs=2, learning_rate=1e300),
                                  MLPHead(hidden=8, epochs=2, learning_rate=1e300)])
def test_absurd_learning_rate_diverges_quietly(head, recwarn):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 5)).astype(np.float32), np.repeat([0, 1, 2], 20)
    head.fit(X, y, X[:15], y[:15], num_classes=3)
    weights = head.coef_ if isinstance(head, SoftmaxHead) else head.coefs_[0]
    assert not np.isfinite(weights).all()  # refused by the run (check_finite), not raised here
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_softmax_nll_grad_is_the_mean_nll_gradient():
    rng = np.random.default_rng(1)
    logits = (rng.normal(size=(6, 4)) * 30).astype(np.float32)  # large: needs the max shift
    y = np.array([0, 3, 1, 1, 2, 0])
    z = logits.astype(np.float64)
    logp = z - z.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    onehot = np.eye(4)[y]
    total, g = fitting.softmax_nll_grad(logits.copy(), y)
    np.testing.assert_allclose(total, -(logp * onehot).sum(), rtol=1e-5)
    np.testing.assert_allclose(g, (np.exp(logp) - onehot) / len(y), atol=1e-6)
    assert g.dtype == np.float32


def test_standardize_in_place_with_float64_sums_and_the_floor():
    rng = np.random.default_rng(2)
    X = (rng.normal(size=(9000, 6)) * [1, 2, 3, 4, 5, 1e-4] + 1e3).astype(np.float32)  # > one block of rows
    X[:, 0] = 7.0  # constant: std 0, floored
    X64 = X.astype(np.float64)
    Z = X.copy()
    mean, std = fitting.standardize_(Z)
    assert mean.dtype == std.dtype == Z.dtype == np.float32
    np.testing.assert_allclose(mean, X64.mean(0), rtol=1e-6)
    true_std = X64.std(0)
    floor = 0.1 * np.median(true_std)
    np.testing.assert_allclose(std, np.maximum(true_std, floor), rtol=1e-4)
    assert std[0] == std[5] and std[0] > true_std[5]  # both at the floor
    np.testing.assert_allclose(Z, (X - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(fitting.feature_stats(X)[1], std)  # the same without touching X
    np.testing.assert_array_equal(X, X64.astype(np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_prepare_training_shuffles_one_float32_copy(dtype):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(2000, 5)).astype(dtype)
    y = rng.integers(0, 3, 2000)
    before = X.copy()
    data = fitting.prepare_training(X, y, X[:10], y[:10], None, None, np.random.default_rng(0))
    np.testing.assert_array_equal(X, before)  # the caller's X is left alone
    assert data.X.dtype == data.X_val.dtype == np.float32 and data.X.flags.c_contiguous
    order = np.random.default_rng(0).permutation(2000)
    np.testing.assert_allclose(data.X, (X[order].astype(np.float32) - data.mean) / data.scale, atol=1e-5)
    np.testing.assert_array_equal(data.y, y[order])
    assert data.batch_size == 40 and data.num_classes == 3
    np.testing.assert_array_equal(data.starts, np.arange(0, 2000, 40))


def test_a_small_set_is_repeated_to_min_steps():
    X = np.random.default_rng(4).normal(size=(30, 3)).astype(np.float32)
    data = fitting.prepare_training(X, np.arange(30) % 2, None, None, None, None, np.random.default_rng(0))
    assert not data.has_val and len(data.y) == 30 * 27 and len(data.starts) >= fitting.MIN_STEPS
    np.testing.assert_array_equal(data.X[:30], data.X[30:60])


def test_float64_input_fits_like_float32():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 12))
    y = rng.integers(0, 3, 300)
    a = SoftmaxHead(epochs=3, seed=1).fit(X, y, X[:40], y[:40])
    b = SoftmaxHead(epochs=3, seed=1).fit(X.astype(np.float32), y, X[:40].astype(np.float32), y[:40])
    np.testing.assert_array_equal(a.coef_, b.coef_)
    assert a.coef_.dtype == a.mean_.dtype == np.float32
    n = NearestClassMeanHead().fit(X, y)
    assert n.coef_.dtype == n.intercept_.dtype == n.class_means_.dtype == np.float32


def test_fitting_every_head_imports_no_torch():
    code = ("import sys, numpy as np\n"
            "from edgetl.heads import make_head, HEAD_KINDS\n"
            "from edgetl.search import single_thread\n"
            "X = np.random.default_rng(0).random((90, 8), dtype=np.float32); y = np.arange(90) % 3\n"
            "with single_thread():\n"
            "    for kind in HEAD_KINDS:\n"
            "        make_head(kind).fit(X, y, X[:20], y[:20]).refit_all(X, y)\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize("head, copies", [(SoftmaxHead(epochs=1), 1), (MLPHead(hidden=16, epochs=1), 1),
                                          (NearestClassMeanHead(), 0)])
def test_fit_copies_x_at_most_once(head, copies):
    """Memory: the shuffled, standardised copy is the only full copy of X
    (none for NCM), also from float64 input; no float64 copy, only blocks
    of rows. numpy's allocations are traced by tracemalloc."""
    import tracemalloc

    rng = np.random.default_rng(6)
    y = np.arange(40_000) % 10
    for X in (rng.random((40_000, 128), dtype=np.float32), rng.random((40_000, 128))):
        one = X.shape[0] * X.shape[1] * 4  # bytes of a float32 copy
        blocks = 2 * fitting.CHUNK_ROWS * X.shape[1] * 8  # float64 temporaries of a block of rows
        tracemalloc.start()
        try:
            head.fit(X, y)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < copies * one + blocks + 0.05 * one, (X.dtype, peak / one)
