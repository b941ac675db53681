"""Heads trained on frozen backbone features.

All share one scikit-learn-style interface: hyper-parameters in
``__init__``, ``fit(X, y, X_val=None, y_val=None, num_classes=None)``
returning ``self``, ``decision_function`` (logits), ``predict_proba``,
``predict``, and ``onnx_head(features_name, logits_name, prefix)`` giving
standard ONNX nodes + initializers that compute the logits from raw
features. Importing this package does not import torch."""

from __future__ import annotations

from ._common import Head, LinearHead, head_model
from .mlp import MLPHead
from .ncm import NearestClassMeanHead
from .softmax import SoftmaxHead

_HEADS = {"softmax": SoftmaxHead, "ncm": NearestClassMeanHead, "mlp": MLPHead}
HEAD_KINDS = tuple(_HEADS)

__all__ = ["HEAD_KINDS", "Head", "LinearHead", "MLPHead", "NearestClassMeanHead", "SoftmaxHead", "head_model",
           "make_head"]


def make_head(kind: str, **kwargs) -> Head:
    """An unfitted head of ``kind`` (one of HEAD_KINDS) with ``kwargs`` as hyper-parameters."""
    try:
        cls = _HEADS[kind]
    except KeyError:
        raise ValueError(f"unknown head kind {kind!r}; choose one of {', '.join(HEAD_KINDS)}") from None
    return cls(**kwargs)
