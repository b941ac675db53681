"""The backbone registry: a backbone is one builder plus its spec (data)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable

from ..data.input_spec import InputSpec
from ..errors import UnknownBackboneError


@dataclass(frozen=True)
class PackagedWeights:
    """Pretrained weights shipped inside an installed Python package.

    ``resource`` is the file inside the package; ``None`` takes the single
    ``*.pth`` file under the package's ``models/`` folder."""

    package: str
    pip_name: str
    resource: str | None = None


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    family: str
    builder: Callable[..., object]
    input_spec: InputSpec
    num_features: int
    num_params: int
    default_weights: PackagedWeights | None
    description: str = ""
    num_classes: int = 1000


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"Backbone {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def _load_families() -> None:
    # Importing a family module registers its backbones.
    from . import efficientnet_lite  # noqa: F401


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
