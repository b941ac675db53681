"""Model zoo: backbones written in this project, loading real weights."""

from __future__ import annotations

import os

from .registry import ALL_TAPS, FINAL_TAP, BackboneSpec, get_spec, list_backbones


def resolve_weights(name: str, weights) -> tuple[str | None, str]:
    """(path or None, identity) for weights=None | "default" | PATH.

    The identity (a content hash) keys the feature cache."""
    from .weights import default_weights_path, file_sha256

    spec = get_spec(name)
    if weights is None:
        return None, "random-init-seed0"
    if weights == "default":
        path = default_weights_path(spec)
    else:
        path = os.fspath(weights)
    if not os.path.isfile(path):
        from ..errors import WeightsError

        raise WeightsError(f"Weights file '{path}' does not exist; pass the path of a .pth or .safetensors file")
    return path, file_sha256(path)


def create_backbone(name: str, weights="default", num_classes: int | None = None):
    """Build backbone ``name`` in eval mode.

    ``weights``: ``None`` (random initialisation, seeded), ``"default"`` (the
    packaged ImageNet weights) or a path to a state dict (.pth/.safetensors).
    ``model(x)`` gives ImageNet logits when the weights have the classifier,
    ``model.forward_features(x)`` the pooled features (``model.num_features``)."""
    from .weights import load_into, read_state_dict

    spec = get_spec(name)
    path, _ = resolve_weights(name, weights)
    if path is None:
        return _seeded(spec, num_classes)
    model = spec.builder(num_classes=spec.num_classes)
    load_into(model, read_state_dict(path), spec, path)
    if num_classes is not None and num_classes != model.num_classes:
        model.reset_classifier(num_classes)
    model.spec = spec
    return model.eval()


def create_tiny(name: str, num_classes: int | None = None):
    """Backbone ``name`` in its tiny configuration (``BackboneSpec.tiny``:
    the same layers, module names, taps and stage groups, a fraction of the
    widths and depths), random weights (seeded), eval mode: what contract
    tests run. ``model.num_features`` is the tiny width, not the spec's."""
    spec = get_spec(name)
    return _seeded(spec, num_classes, **spec.tiny)


def _seeded(spec: BackboneSpec, num_classes: int | None, **config):
    """``spec.builder(**config)`` from random weights drawn with seed 0, in eval mode."""
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = spec.builder(num_classes=spec.num_classes if num_classes is None else num_classes, **config)
    model.spec = spec
    return model.eval()


def imagenet_classes() -> list[str]:
    here = os.path.dirname(__file__)
    with open(os.path.join(here, "imagenet_classes.txt"), encoding="utf-8") as fh:
        names = [line.rstrip("\n") for line in fh]
    return names


__all__ = ["ALL_TAPS", "FINAL_TAP", "BackboneSpec", "create_backbone", "create_tiny", "get_spec", "imagenet_classes",
           "list_backbones", "resolve_weights"]
