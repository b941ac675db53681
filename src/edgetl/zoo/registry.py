"""The backbone registry: a backbone is one builder plus its spec (data)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Callable

from ..data.input_spec import InputSpec
from ..errors import UnknownBackboneError

# The tap that is ``forward_features(x)``: every backbone's final pooled
# features. ``tap_points()`` never lists it (see ``zoo._taps``); exported
# graphs name its output ``features``.
FINAL_TAP = "final"
# Not a layer: the pooled features of every tap and the final ones,
# concatenated (Head2Toe, Evci et al. 2022, without its feature selection).
# It costs what the whole backbone costs; the head sees early, generic
# features beside the late, ImageNet-specific ones.
ALL_TAPS = "all"


@dataclass(frozen=True)
class PackagedWeights:
    """Pretrained weights shipped inside an installed Python package.

    ``resource`` is the file inside the package; ``None`` takes the single
    ``*.pth`` file under the package's ``models/`` folder."""

    package: str
    pip_name: str
    resource: str | None = None


@dataclass(frozen=True)
class RemoteWeights:
    """A published checkpoint: fetched once into the user's weights cache
    (``edgetl weights fetch``) or imported from a file the user has.
    ``size_mb``: the file's published size in MiB (torchvision's
    ``_file_size``); a download is stopped just above it."""

    url: str
    filename: str
    sha256: str
    size_mb: float | None = None


@dataclass(frozen=True)
class BackboneSpec:
    """Everything known about a backbone, as data.

    The model ``builder(num_classes=1000)`` returns honours one contract:
    ``forward_features(x) -> (N, num_features)`` pooled features,
    ``forward_head(features)`` the ImageNet logits (identity without a
    classifier), ``forward = forward_head(forward_features(x))``,
    ``reset_classifier(n)`` (0 removes the final layer), attributes
    ``num_features`` and ``num_classes``; ``tap_points()`` (see
    ``zoo._taps``; the final features are the tap :data:`FINAL_TAP`) and
    ``stage_groups()``: the block groups (stages) earliest first, modules
    sharing the model's parameters that, applied in order, compute
    ``forward_feature_map(x)``, with ``pool_feature_map(fmap)`` giving
    ``forward_features(x)`` from that map; ``[]`` for a family not built of
    stages (``last-K`` fine-tuning refuses it). State-dict keys equal the
    published checkpoint's; ``head_prefix`` names the final classifier
    layer's keys, ``ignore_prefixes`` checkpoint keys the model does not use
    (auxiliary heads), ``stem_conv`` the module path of the first convolution.

    ``tiny``: keyword arguments of ``builder`` that make a small network
    of the same architecture (the same kinds of layers, stem and classifier,
    as many taps and stage groups; fewer channels, fewer repeated blocks),
    for contract tests that must run in milliseconds
    (:func:`edgetl.zoo.create_tiny`); ``num_features`` and ``num_params``
    describe the full-size network only."""

    name: str
    family: str
    builder: Callable[..., object]
    input_spec: InputSpec
    num_features: int
    num_params: int
    default_weights: PackagedWeights | RemoteWeights | None
    description: str = ""
    num_classes: int = 1000
    head_prefix: str = "_fc."
    ignore_prefixes: tuple[str, ...] = ()
    stem_conv: str = "_conv_stem"
    top1: float | None = None  # published ImageNet top-1 accuracy, %
    min_image_size: int = 32  # smallest input the architecture accepts
    tiny: dict = field(default_factory=dict, hash=False)  # builder kwargs of the tiny configuration


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"Backbone {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


_NOT_FAMILIES = {"registry", "weights", "profile", "fetch", "grayscale"}


def _load_families() -> None:
    """Import every family module of the zoo package (one file per family);
    importing one registers its backbones."""
    import importlib
    import pkgutil

    from . import __path__ as zoo_path

    for info in pkgutil.iter_modules(zoo_path):
        if info.name not in _NOT_FAMILIES and not info.name.startswith("_"):
            importlib.import_module(f"{__package__}.{info.name}")


def list_backbones() -> list[str]:
    _load_families()
    return sorted(_REGISTRY)


def get_spec(name: str) -> BackboneSpec:
    _load_families()
    try:
        return _REGISTRY[name]
    except KeyError:
        pass
    close = difflib.get_close_matches(str(name).lower().replace("-", "_"), _REGISTRY, n=1, cutoff=0.6)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise UnknownBackboneError(f"Unknown backbone '{name}'.{hint} Run 'edgetl models' to list them.") from None
