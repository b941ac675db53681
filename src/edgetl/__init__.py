"""edgetl: transfer learning for mobile and edge ML.

The public API is imported lazily so that ``import edgetl.runtime`` (the
device half) never pulls in torch."""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "create_backbone": ("edgetl.zoo", "create_backbone"),
    "list_backbones": ("edgetl.zoo", "list_backbones"),
    "imagenet_classes": ("edgetl.zoo", "imagenet_classes"),
    "InputSpec": ("edgetl.data", "InputSpec"),
    "train": ("edgetl.training", "train"),
    "TrainConfig": ("edgetl.training", "TrainConfig"),
    "evaluate": ("edgetl.evaluation", "evaluate"),
    "classify_imagenet": ("edgetl.imagenet", "classify_imagenet"),
    "Predictor": ("edgetl.runtime", "Predictor"),
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'edgetl' has no attribute {name!r}")
