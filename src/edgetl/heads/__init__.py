"""Heads trained on frozen backbone features.

All keep one scikit-learn-style contract (``edgetl.heads.base.Head``):
hyper-parameters in ``__init__``, ``fit(X, y, X_val=None, y_val=None,
num_classes=None)`` returning ``self``, fitted attributes ending in ``_``,
``decision_function`` (logits), ``predict_proba``, ``predict``, and
``onnx_head(features_name, logits_name, prefix)`` giving standard ONNX nodes
+ initializers that compute the logits from raw features. Neither importing
this package nor fitting a head imports torch: the trained heads learn with
numpy alone (``edgetl.heads.fitting``).

The kinds live in one registry (``edgetl.heads.registry``). Adding a head is
one new module with ``@register_head("name")`` on its class, plus its import
below; the import order is the tie-break order (simplest first)."""

from __future__ import annotations

from .base import Head, LinearHead
from .onnx_export import head_model
from .registry import head_class, head_kinds, make_head, make_head_for_run, register_head

# Registration order, kept by hand (not alphabetical): ties in the search go to the earlier.
from .softmax import SoftmaxHead  # isort: skip
from .ncm import NearestClassMeanHead  # isort: skip
from .mlp import MLPHead  # isort: skip

HEAD_KINDS = head_kinds()

__all__ = ["HEAD_KINDS", "Head", "LinearHead", "MLPHead", "NearestClassMeanHead", "SoftmaxHead", "head_class",
           "head_kinds", "head_model", "make_head", "make_head_for_run", "register_head"]
