"""Heads for the transfer search (softmax, nearest class mean, MLP), their
ONNX export, the raw-pixel baseline and k-fold selection, on real data:
scikit-learn's 8x8 handwritten digits."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from edgetl.baselines import raw_pixel_baseline
from edgetl.heads import HEAD_KINDS, MLPHead, NearestClassMeanHead, SoftmaxHead, head_model, make_head
from edgetl.heads.selection import choose_n_splits, cv_score, cv_scores

MIN_ACCURACY = {"softmax": 0.93, "mlp": 0.93, "ncm": 0.85}


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
    d = load_digits()
    idx = np.random.default_rng(0).permutation(len(d.target))
    split = {"train": idx[:1000], "val": idx[1000:1300], "test": idx[1300:]}
    return d, split


@pytest.fixture(scope="module")
def features(digits):
    d, split = digits
    X = d.data.astype(np.float32)
    return {k: (X[v], d.target[v]) for k, v in split.items()}


@pytest.fixture(scope="module")
def fitted(features):
    (X, y), (Xv, yv) = features["train"], features["val"]
    return {kind: make_head(kind).fit(X, y, Xv, yv, num_classes=10) for kind in HEAD_KINDS}


def test_make_head_kinds():
    assert HEAD_KINDS == ("softmax", "ncm", "mlp")
    assert isinstance(make_head("softmax", epochs=3), SoftmaxHead)
    assert isinstance(make_head("ncm"), NearestClassMeanHead)
    head = make_head("mlp", hidden=16, dropout=0.1)
    assert isinstance(head, MLPHead) and head.hidden == 16 and head.dropout == 0.1
    with pytest.raises(ValueError, match="unknown head kind"):
        make_head("svm")


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_head_learns_digits(kind, fitted, features):
    head = fitted[kind]
    Xt, yt = features["test"]
    acc = float((head.predict(Xt) == yt).mean())
    print(f"{kind}: held-out accuracy {acc:.4f}")
    assert acc >= MIN_ACCURACY[kind]
    proba = head.predict_proba(Xt)
    assert proba.shape == (len(yt), 10)
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)
    np.testing.assert_array_equal(proba.argmax(1), head.predict(Xt))
    assert 1 <= head.best_epoch_ <= head.n_epochs_


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_deterministic_for_seed(kind, features):
    X, y = features["train"]
    Xv, yv = features["val"]
    kwargs = {"ncm": {}, "softmax": {"epochs": 4, "seed": 7}, "mlp": {"epochs": 4, "seed": 7, "dropout": 0.2}}
    a = make_head(kind, **kwargs[kind]).fit(X, y, Xv, yv)
    b = make_head(kind, **kwargs[kind]).fit(X, y, Xv, yv)
    np.testing.assert_array_equal(a.decision_function(Xv), b.decision_function(Xv))
    if kind != "ncm":
        c = make_head(kind, **{**kwargs[kind], "seed": 8}).fit(X, y, Xv, yv)
        assert not np.array_equal(a.decision_function(Xv), c.decision_function(Xv))


@pytest.mark.parametrize("fold", [False, True])
@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_onnx_head_matches_decision_function(kind, fold, fitted, features):
    head = fitted[kind]
    Xt, _ = features["test"]
    nodes, inits = head.onnx_head("features", "logits", prefix="head")
    assert nodes and inits and nodes[-1].output[0] == "logits"
    assert all(t.name.startswith("head.") for t in inits)
    model = head_model(head, Xt.shape[1], fold=fold)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"features": Xt})[0]
    np.testing.assert_allclose(logits, head.decision_function(Xt), rtol=1e-5, atol=1e-4)


def test_onnx_head_is_relocatable(fitted):
    nodes, inits = fitted["mlp"].onnx_head("feat", "out", prefix="h2")
    assert nodes[0].input[0] == "feat" and nodes[-1].output[0] == "out"
    assert [n.op_type for n in nodes] == ["Sub", "Div", "Gemm", "Relu", "Gemm"]
    assert all(n.name.startswith("h2_") for n in nodes) and all(t.name.startswith("h2.") for t in inits)


def test_linear_heads_fold(fitted, features):
    Xt, _ = features["test"]
    for kind in ("softmax", "ncm"):
        W, b = fitted[kind].folded()
        np.testing.assert_allclose(Xt @ W.T + b, fitted[kind].decision_function(Xt), rtol=1e-4, atol=1e-3)
        nodes, _ = fitted[kind].onnx_head("features", "logits", fold=True)
        assert [n.op_type for n in nodes] == ["Gemm"] and nodes[0].name == "head_fc"


def test_ncm_is_nearest_class_mean(fitted, features):
    head = fitted["ncm"]
    Xt, _ = features["test"]
    Z = (Xt - head.mean_) / head.scale_
    dist = ((Z[:, None, :] - head.class_means_[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(head.predict(Xt), dist.argmin(1))
    # Logits are -distance^2 up to a per-row constant.
    diff = head.decision_function(Xt) + dist
    np.testing.assert_allclose(diff - diff[:, :1], 0, atol=1e-2)


def test_ncm_absent_class_never_predicted(features):
    X, y = features["train"]
    keep = y != 3
    head = NearestClassMeanHead().fit(X[keep], y[keep], num_classes=10)
    assert head.coef_.shape == (10, 64) and not np.isin(3, head.predict(X))
    assert np.isfinite(head.decision_function(X)).all()


def test_mlp_early_stopping_keeps_best_epoch(features):
    (X, y), (Xv, yv) = features["train"], features["val"]
    head = MLPHead(hidden=32, epochs=60, patience=3, seed=0).fit(X[:150], y[:150], Xv, yv)
    assert head.n_epochs_ < 60
    best = max(h["val_accuracy"] for h in head.history_)
    assert abs((head.predict(Xv) == yv).mean() - best) < 1e-6
    assert head.history_[head.best_epoch_ - 1]["val_accuracy"] == best


def test_mlp_without_validation_runs_all_epochs(features):
    X, y = features["train"]
    head = MLPHead(hidden=8, epochs=3).fit(X, y)
    assert head.n_epochs_ == head.best_epoch_ == 3 and "val_accuracy" not in head.history_[0]


def _digit_images(d, idx):
    # 0..16 ink levels -> 8-bit grey images.
    return [Image.fromarray((d.images[i] * (255 / 16)).round().astype(np.uint8), "L") for i in idx]


def test_raw_pixel_baseline_on_digit_images(digits, tmp_path):
    d, split = digits
    train, val, test = (_digit_images(d, split[k]) for k in ("train", "val", "test"))
    result, clf = raw_pixel_baseline(train, d.target[split["train"]], val, d.target[split["val"]])
    test_acc = clf.score(test, d.target[split["test"]])
    print(f"raw pixels: val {result['val_accuracy']:.4f} test {test_acc:.4f} C={result['C']}")
    assert result["model"] == "logistic_regression"
    assert result["image_size"] == 8 and result["grayscale"] is True and result["num_features"] == 64
    assert result["val_accuracy"] >= 0.9 and test_acc >= 0.9
    # Paths work too, and give the same features as the PIL images.
    paths = []
    for i, image in enumerate(test[:20]):
        paths.append(str(tmp_path / f"{i}.png"))
        image.save(paths[-1])
    np.testing.assert_array_equal(clf.features(paths), clf.features(test[:20]))
    small, _ = raw_pixel_baseline(train[:200], d.target[split["train"]][:200], val, d.target[split["val"]],
                                  image_size=8, grayscale=False, C=0.1)
    assert small["C"] == 0.1 and small["num_features"] == 3 * 64 and small["grayscale"] is False


def test_choose_n_splits():
    assert choose_n_splits(np.repeat(np.arange(10), 100)) == 0  # 1,000 images, 100 a class
    assert choose_n_splits(np.repeat(np.arange(4), 50)) == 5  # 200 images
    assert choose_n_splits(np.repeat(np.arange(40), 20)) == 5  # 800 images, 20 a class
    assert choose_n_splits(np.r_[np.zeros(100), np.ones(3)]) == 3  # the small class limits the folds
    assert choose_n_splits(np.r_[np.zeros(100), np.ones(1)]) == 2  # never below 2


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_cv_score_uses_all_folds(kind, features):
    X, y = features["train"]
    X, y = X[:300], y[:300]
    calls = []

    def make():
        calls.append(1)
        return make_head(kind, **({} if kind == "ncm" else {"epochs": 5}))

    scores = cv_scores(make, X, y, n_splits=4, seed=0)
    assert len(scores) == len(calls) == 4 and all(0.0 <= s <= 1.0 for s in scores)
    score = cv_score(lambda: make_head(kind, **({} if kind == "ncm" else {"epochs": 5})), X, y, 4, 0)
    assert 0.0 <= score <= 1.0 and score == pytest.approx(np.mean(scores))
    assert score > 0.7


def test_cv_score_reduces_splits_for_small_classes(features):
    X, y = features["train"]
    idx = np.r_[np.flatnonzero(y == 0)[:3], np.flatnonzero(y == 1)[:20], np.flatnonzero(y == 2)[:20]]
    scores = cv_scores(NearestClassMeanHead, X[idx], y[idx], n_splits=5, seed=0, num_classes=3)
    assert len(scores) == 3
    scores = cv_scores(lambda: SoftmaxHead(epochs=2), X[idx], y[idx], n_splits=5, inner_val_fraction=0.0)
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)
