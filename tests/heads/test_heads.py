"""The three heads (softmax, nearest class mean, MLP) on real data,
scikit-learn's 8x8 handwritten digits: accuracy, determinism, their ONNX
export, and what is particular to each. The contract every registered head
keeps is checked in test_contract.py."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from edgetl.heads import HEAD_KINDS, MLPHead, NearestClassMeanHead, SoftmaxHead, head_model, make_head

MIN_ACCURACY = {"softmax": 0.93, "mlp": 0.93, "ncm": 0.85}


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
