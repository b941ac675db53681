"""Which block groups (stages) ``last-K`` fine-tuning splits a backbone
into: the model's own ``stage_groups()`` (see ``zoo.registry.BackboneSpec``),
earliest first; applying them in order equals ``model.forward_feature_map``,
so a frozen prefix can run once and only the trainable suffix each epoch."""

from __future__ import annotations

import os

from torch import nn

from ..errors import DataError


def feature_stages(model: nn.Module) -> list[nn.Module]:
    """The block groups of ``model``, earliest first (the modules share the
    model's parameters); a family not built of stages is refused in one line."""
    groups = list(model.stage_groups())
    if not groups:
        raise DataError(f"--strategy last-K needs a backbone built of stages ({', '.join(_staged_families())}); "
                        f"{type(model).__name__} is not: use bias, full or head")
    return groups


def _staged_families() -> list[str]:
    """The registered families that have stage groups, each as a pattern of
    its backbones' names (``resnet*``, ``mobilenet_*``), read from models
    built on the meta device."""
    import torch

    from ..zoo import get_spec, list_backbones

    names: dict[str, list[str]] = {}
    for name in list_backbones():
        names.setdefault(get_spec(name).family, []).append(name)
    patterns = []
    for family, members in sorted(names.items()):
        with torch.device("meta"):
            if not get_spec(members[0]).builder(num_classes=0).stage_groups():
                continue
        prefix = os.path.commonprefix(members)
        if len(prefix) > len(family) and not prefix.endswith("_"):
            prefix = prefix[: max(len(family), prefix.rfind("_") + 1)]  # a whole word: mobilenet_, not mobilenet_v
        patterns.append(prefix + "*")
    return patterns
