"""The contract every registered head keeps (``edgetl.heads.base``), checked
on each kind in the registry, so a new head is checked the day it is
registered. On real features: scikit-learn's digits (64 pixel values).

Each check is a plain function of a head class; the last tests feed it heads
broken on purpose, one rule each, to show that the checks catch the break."""

from __future__ import annotations

import inspect

import numpy as np
import onnxruntime as ort
import pytest

from edgetl.errors import EdgetlError, NotFittedError
from edgetl.heads import HEAD_KINDS, NearestClassMeanHead, SoftmaxHead, head_class, head_kinds, head_model
from edgetl.heads import registry

# A run's common head settings (what training passes as ``head_params``).
RUN_PARAMS = {"epochs": 7, "learning_rate": 2e-3, "l2": 1e-4, "patience": 3, "seed": 1}
NUM_CLASSES = 10
_FITTED: dict = {}  # head class -> (head fitted on DATA, what fit returned)
DATA: dict = {}


@pytest.fixture(scope="module", autouse=True)
def data(features):
    (X, y), (Xv, yv) = features["train"], features["val"]
    DATA.update(X=X[:600], y=y[:600], Xv=Xv[:200], yv=yv[:200])
    yield DATA
    DATA.clear()
    _FITTED.clear()


def fit_once(cls):
    """(a ``cls()`` fitted on the digits with a validation split, what ``fit`` returned); once per class."""
    if cls not in _FITTED:
        head = cls()
        _FITTED[cls] = (head, head.fit(DATA["X"], DATA["y"], DATA["Xv"], DATA["yv"], num_classes=NUM_CLASSES))
    return _FITTED[cls]


# -- the checks ---------------------------------------------------------------------------------------------


def check_not_fitted(cls):
    """Before fit: every use of what fit learns raises NotFittedError (an EdgetlError, an AttributeError)."""
    head = cls()
    assert not head.is_fitted()
    uses = {"predict": lambda: head.predict(DATA["Xv"]),
            "predict_proba": lambda: head.predict_proba(DATA["Xv"]),
            "decision_function": lambda: head.decision_function(DATA["Xv"]),
            "onnx_head": lambda: head.onnx_head("features", "logits"),
            "refit_params": head.refit_params}
    for name, use in uses.items():
        try:
            use()
        except NotFittedError as e:
            assert isinstance(e, EdgetlError) and isinstance(e, AttributeError)
            assert cls.__name__ in str(e) and "fit" in str(e)
        else:
            raise AssertionError(f"{cls.__name__}.{name} before fit did not raise NotFittedError")


def check_params(cls):
    """Hyper-parameters are __init__'s arguments, stored as is: get_params round-trips, none ends in '_'."""
    head = cls()
    params = head.get_params()
    assert set(params) == set(cls.param_names())
    assert vars(head) == params, "__init__ must only store its arguments"
    assert not any(name.endswith("_") for name in params)
    defaults = {p.name: p.default for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"}
    assert params == defaults, "__init__ must store its arguments unchanged"
    assert type(head)(**params).get_params() == params


def check_fit(cls):
    """fit returns self; what it learns ends in '_'; hyper-parameters unchanged; the bookkeeping attributes."""
    head, returned = fit_once(cls)
    assert returned is head, "fit must return self"
    assert head.is_fitted()
    params = cls().get_params()
    learned = set(vars(head)) - set(params)
    assert learned and all(name.endswith("_") for name in learned), sorted(learned)
    assert head.get_params() == params, "fit must not change the hyper-parameters"
    np.testing.assert_array_equal(head.classes_, np.arange(NUM_CLASSES))
    assert head.mean_.shape == head.scale_.shape == (DATA["X"].shape[1],)
    assert 1 <= head.best_epoch_ <= head.n_epochs_ == len(head.history_)


def check_predictions(cls):
    """decision_function is N x C; predict_proba rows sum to 1 and their argmax is predict; it learns."""
    head, _ = fit_once(cls)
    X = DATA["Xv"]
    logits = head.decision_function(X)
    assert logits.shape == (len(X), NUM_CLASSES) and np.isfinite(logits).all()
    proba = head.predict_proba(X)
    assert proba.shape == logits.shape and (proba >= 0).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    pred = head.predict(X)
    np.testing.assert_array_equal(proba.argmax(axis=1), pred)
    np.testing.assert_array_equal(logits.argmax(axis=1), pred)
    assert (pred == DATA["yv"]).mean() > 0.5


def check_onnx(cls):
    """onnx_head, run by ONNX Runtime, computes decision_function (explicit and folded standardisation)."""
    head, _ = fit_once(cls)
    X = DATA["Xv"]
    for fold in (False, True):
        model = head_model(head, X.shape[1], fold=fold)
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        logits = session.run(["logits"], {"features": X})[0]
        np.testing.assert_allclose(logits, head.decision_function(X), rtol=1e-4, atol=1e-3)


def check_cost(cls):
    """cost(dim, C): positive, grows with dim and with C, known unfitted, and equal to what the ONNX head holds."""
    head = cls()
    d = DATA["X"].shape[1]
    macs, mb = head.cost(d, NUM_CLASSES)
    assert macs > 0 and mb > 0 and isinstance(macs, int)
    bigger = head.cost(2 * d, NUM_CLASSES)
    assert bigger[0] > macs and bigger[1] > mb
    more = head.cost(d, 2 * NUM_CLASSES)
    assert more[0] > macs and more[1] > mb
    fitted, _ = fit_once(cls)
    nodes, inits = fitted.onnx_head("features", "logits")
    assert sum(np.prod(t.dims) for t in inits) * 4 / 1e6 == pytest.approx(mb), "fp32 MB: every initializer"
    gemm_weights = {n.input[1] for n in nodes if n.op_type == "Gemm"}
    assert sum(int(np.prod(t.dims)) for t in inits if t.name in gemm_weights) == macs, "MACs: the Gemm weights"


def check_run_params_and_refit(cls):
    """params_for_run gives valid hyper-parameters; refit_all ships a new head with refit_params."""
    kwargs = cls.params_for_run(dict(RUN_PARAMS))
    assert set(kwargs) <= set(cls.param_names())
    head = cls(**kwargs).fit(DATA["X"], DATA["y"], DATA["Xv"], DATA["yv"], num_classes=NUM_CLASSES)
    again = cls(**kwargs).fit(DATA["X"], DATA["y"], DATA["Xv"], DATA["yv"], num_classes=NUM_CLASSES)
    np.testing.assert_array_equal(head.decision_function(DATA["Xv"]), again.decision_function(DATA["Xv"]))
    refit = head.refit_params()
    assert set(refit) == set(cls.param_names())
    X = np.concatenate([DATA["X"], DATA["Xv"]])
    y = np.concatenate([DATA["y"], DATA["yv"]])
    shipped = head.refit_all(X, y, num_classes=NUM_CLASSES)
    assert type(shipped) is cls and shipped is not head and shipped.get_params() == refit
    assert shipped.predict(X).shape == (len(X),)


CHECKS = [check_not_fitted, check_params, check_fit, check_predictions, check_onnx, check_cost,
          check_run_params_and_refit]


@pytest.mark.parametrize("check", CHECKS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("kind", head_kinds())
def test_registered_head_keeps_the_contract(kind, check):
    check(head_class(kind))


# -- the registry ---------------------------------------------------------------------------------------------


def test_registry_is_the_one_list_of_kinds():
    import edgetl.search

    assert HEAD_KINDS == head_kinds() == ("softmax", "ncm", "mlp")
    assert edgetl.search.HEADS is HEAD_KINDS
    for kind in HEAD_KINDS:
        assert head_class(kind).kind == kind
    with pytest.raises(ValueError, match="unknown head kind 'svm'; choose one of softmax, ncm, mlp"):
        head_class("svm")


def test_registry_refuses_a_duplicate_and_a_non_head(monkeypatch):
    monkeypatch.setattr(registry, "_HEADS", dict(registry._HEADS))
    with pytest.raises(ValueError, match="'softmax' is already registered"):
        registry.register_head("softmax")(type("Another", (SoftmaxHead,), {}))
    with pytest.raises(TypeError, match="subclass of edgetl.heads.base.Head"):
        registry.register_head("plain")(type("Plain", (), {}))
    assert head_kinds() == HEAD_KINDS


def test_a_new_head_is_one_registration(monkeypatch):
    """A registered class is a kind at once: make_head builds it, the search's tie-break puts it last."""
    from edgetl.heads import make_head
    from edgetl.search import Candidate, choose

    monkeypatch.setattr(registry, "_HEADS", dict(registry._HEADS))

    @registry.register_head("tiny")
    class TinyHead(NearestClassMeanHead):
        label = "tiny head"

    assert head_kinds() == (*HEAD_KINDS, "tiny") and TinyHead.kind == "tiny"
    assert isinstance(make_head("tiny"), TinyHead)
    for check in CHECKS:
        check(TinyHead)
    tie = [Candidate(32, "block2", kind, 8, 1000, 1.0, None, val_accuracy=0.9) for kind in ("tiny", "mlp")]
    assert choose(tie).head == "mlp"


# -- the checks catch a broken head -----------------------------------------------------------------------


class _Quick(SoftmaxHead):
    """A correct head, not registered: each class below breaks one rule of it."""


class _ReturnsNone(_Quick):
    def fit(self, *args, **kwargs):
        super().fit(*args, **kwargs)


class _UnderscorelessAttribute(_Quick):
    def fit(self, *args, **kwargs):
        super().fit(*args, **kwargs)
        self.weights = self.coef_
        return self


class _ChangesItsParams(_Quick):
    def fit(self, *args, **kwargs):
        self.epochs = 1
        return super().fit(*args, **kwargs)


class _LogicInInit(_Quick):
    def __init__(self, epochs: int = 30, batch_size=None, learning_rate: float = 1e-3, l2: float = 1e-4,
                 patience: int = 5, seed: int = 0):
        super().__init__(epochs + 1, batch_size, learning_rate, l2, patience, seed)


class _PredictsUnfitted(_Quick):
    def decision_function(self, X):
        if not self.is_fitted():
            return np.zeros((len(X), NUM_CLASSES), np.float32)
        return super().decision_function(X)


class _UnnormalisedProba(_Quick):
    def predict_proba(self, X):
        return np.exp(self.decision_function(X))


class _OnnxDisagrees(_Quick):
    def decision_function(self, X):
        logits = super().decision_function(X)
        logits[:, 0] += 1.0
        return logits


class _WrongCost(_Quick):
    def layer_shapes(self, dim, num_classes):
        return [(num_classes, 16)]


class _BadRefit(_Quick):
    def refit_params(self):
        return {**super().refit_params(), "hidden": 8}


class _BadRunParams(_Quick):
    @classmethod
    def params_for_run(cls, head_params):
        return {**head_params, "dropout": 0.1}  # the MLP's, not its own


@pytest.mark.parametrize("broken, check", [
    (_ReturnsNone, check_fit), (_UnderscorelessAttribute, check_fit), (_ChangesItsParams, check_fit),
    (_LogicInInit, check_params), (_PredictsUnfitted, check_not_fitted), (_UnnormalisedProba, check_predictions),
    (_OnnxDisagrees, check_onnx), (_WrongCost, check_cost), (_BadRefit, check_run_params_and_refit),
    (_BadRunParams, check_run_params_and_refit),
], ids=lambda x: getattr(x, "__name__", ""))
def test_the_checks_catch_a_broken_head(broken, check):
    with pytest.raises(AssertionError):
        check(broken)


def test_the_unbroken_base_passes_every_check():
    for check in CHECKS:
        check(_Quick)
