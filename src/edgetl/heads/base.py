"""The contract every head keeps, scikit-learn style.

* hyper-parameters are the arguments of ``__init__``, stored under the same
  names with no logic there (:meth:`Head.get_params` reads them back);
* ``fit(X, y, X_val=None, y_val=None, num_classes=None)`` returns ``self``;
  an empty validation split means "none";
* what ``fit`` learns ends in ``_`` (``classes_``, ``mean_``, ``scale_``,
  ``history_``, ``best_epoch_``, ``n_epochs_``, the layers); using a head
  before ``fit`` raises :class:`edgetl.errors.NotFittedError`;
* a head describes itself as ``_layers()``: (W, b) pairs acting on
  *standardised* features (``(X - mean_) / scale_``), a ReLU between
  consecutive layers. From that this class derives ``decision_function``
  (logits), ``predict_proba``, ``predict`` and ``onnx_head``; linear heads
  (one layer) also get ``folded``.

Besides, each head owns what a run needs to know about it: its cost on the
device (:meth:`Head.cost`, from ``layer_shapes``), its hyper-parameters out
of the run's common ones (:meth:`Head.params_for_run`) and how it is refitted
on every labelled image after early stopping on a holdout
(:meth:`Head.refit_params`, :meth:`Head.refit_all`), and how the search
scores it on folds of the labelled images (:meth:`Head.fold_correct`: real
fits by default; a head may give a cheaper faithful proxy). Register a new head with
``@register_head("name")`` (``edgetl.heads.registry``)."""

from __future__ import annotations

import inspect

import numpy as np

from ..errors import NotFittedError
from .onnx_export import fold_standardization, layers_onnx


class Head:
    """The base of every head: prediction, ONNX export and cost from ``_layers()``."""

    kind: str = ""  # the registered name (set by register_head)
    label: str = "head"  # how messages and notes name it: "the {label}"
    expensive: bool = False  # the search fits it only where the cheaper heads did best
    fast_fold_scoring: bool = False  # fold_correct has a closed form: the search may repeat its folds

    # -- hyper-parameters ----------------------------------------------------------------------------

    @classmethod
    def param_names(cls) -> list[str]:
        """The hyper-parameters: the named arguments of ``__init__``."""
        skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        return [p.name for p in inspect.signature(cls.__init__).parameters.values()
                if p.name != "self" and p.kind not in skip]

    def get_params(self) -> dict:
        """``{name: value}`` of the hyper-parameters: ``type(self)(**get_params())`` is an unfitted copy."""
        return {name: getattr(self, name) for name in self.param_names()}

    @classmethod
    def params_for_run(cls, head_params: dict) -> dict:
        """This head's keyword arguments out of a run's common head settings
        (``epochs``, ``learning_rate``, ``l2``, ``patience``, ``seed``): all of them unless a head says otherwise."""
        return dict(head_params)

    def fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
            num_classes: int | None = None) -> "Head":
        raise NotImplementedError

    def refit_params(self) -> dict:
        """Hyper-parameters for refitting on every labelled image once this
        head was fitted with a holdout split: by default its own."""
        self.check_fitted("refit_params")
        return self.get_params()

    def refit_all(self, X: np.ndarray, y: np.ndarray, num_classes: int | None = None) -> "Head":
        """A new head of this kind fitted on all of ``X``, ``y`` (no validation split) with :meth:`refit_params`."""
        return type(self)(**self.refit_params()).fit(X, y, num_classes=num_classes)

    def fold_correct(self, X: np.ndarray, y: np.ndarray, folds: np.ndarray,
                     num_classes: int | None = None) -> np.ndarray:
        """Per row of ``X``: was it classified right by a head like this one
        fitted without the row's fold? ``folds[i]`` is row i's fold (0, 1,
        ...); rows with fold -1 are only trained on (and stay False). By
        default an unfitted copy is fitted per fold, early-stopped on a
        fifth of the training folds."""
        from ..data.folder import stratified_split

        y = np.asarray(y, np.int64)
        out = np.zeros(len(y), bool)
        for f in range(int(np.max(folds)) + 1):
            test = np.flatnonzero(folds == f)
            train = np.flatnonzero(folds != f)
            if not len(test) or not len(train):
                continue
            fit_idx, val_idx = train, train[:0]
            inner_fit, inner_val = stratified_split(y[train], 0.2, f)
            if len(inner_val):
                fit_idx, val_idx = train[inner_fit], train[inner_val]
            head = type(self)(**self.get_params()).fit(X[fit_idx], y[fit_idx], X[val_idx], y[val_idx],
                                                       num_classes=num_classes)
            out[test] = head.predict(X[test]) == y[test]
        return out

    # -- cost ----------------------------------------------------------------------------------------

    def layer_shapes(self, dim: int, num_classes: int) -> list[tuple[int, int]]:
        """(outputs, inputs) of each layer on ``dim`` features; known before fitting."""
        raise NotImplementedError

    def cost(self, dim: int, num_classes: int) -> tuple[int, float]:
        """(MACs, fp32 MB) on ``dim`` features, batch 1: the layers' weights
        and biases plus the standardisation (mean and scale)."""
        shapes = self.layer_shapes(int(dim), int(num_classes))
        macs = sum(out * inp for out, inp in shapes)
        params = sum(out * inp + out for out, inp in shapes)
        return macs, (params + 2 * dim) * 4 / 1e6

    # -- fitted state and prediction ----------------------------------------------------------------

    def is_fitted(self) -> bool:
        """Whether ``fit`` has run: the head has attributes ending in ``_``."""
        return any(k.endswith("_") and not k.startswith("__") for k in vars(self))

    def check_fitted(self, what: str) -> None:
        if not self.is_fitted():
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call fit(X, y) before {what}")

    def _layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        raise NotImplementedError

    def _standardize(self, X: np.ndarray) -> np.ndarray:
        return (np.asarray(X, np.float32) - self.mean_) / self.scale_

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        self.check_fitted("decision_function")
        Z = self._standardize(X)
        for i, (W, b) in enumerate(self._layers()):
            if i:
                Z = np.maximum(Z, 0, out=Z)
            Z = Z @ W.T + b
        return Z

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        logits = self.decision_function(X)
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.decision_function(X).argmax(axis=1)

    def onnx_head(self, features_name: str, logits_name: str, prefix: str = "head",
                  fold: bool = False) -> tuple[list, list]:
        """Standard-ONNX nodes and initializers computing the logits from the
        RAW features ``features_name`` (N x D) into ``logits_name`` (N x C).

        ``fold=False`` standardises explicitly (Sub, Div: the same float32
        arithmetic as ``decision_function``); ``fold=True`` folds it into the
        first Gemm (one node fewer, slightly different rounding). Gemm nodes
        are named ``{prefix}_fc`` (one layer) or ``{prefix}_fc1``, ``_fc2``...;
        tensors and initializers ``{prefix}.*``."""
        self.check_fitted("onnx_head")
        return layers_onnx(self._layers(), self.mean_, self.scale_, features_name, logits_name, prefix, fold)


class LinearHead(Head):
    """A head with one layer: ``coef_`` (C x D) and ``intercept_`` (C)."""

    def layer_shapes(self, dim: int, num_classes: int) -> list[tuple[int, int]]:
        return [(num_classes, dim)]

    def _layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(self.coef_, self.intercept_)]

    def folded(self) -> tuple[np.ndarray, np.ndarray]:
        """(W, b) acting on raw features: the standardisation folded in."""
        self.check_fitted("folded")
        return fold_standardization(self.coef_, self.intercept_, self.mean_, self.scale_)
