"""GoogLeNet / Inception v1 (Szegedy et al. 2014), in the layout of
torchvision's ImageNet checkpoint (``googlenet-1378be20.pth``).

Every convolution is a ``ConvBN`` unit: conv without bias, BatchNorm
(eps 1e-3), ReLU; keys ``<name>.conv`` / ``<name>.bn``. An inception module
has four parallel branches concatenated on channels: ``branch1`` (1x1),
``branch2`` (1x1 -> 3x3), ``branch3`` (1x1 -> 3x3: the published port uses a
3x3 here where the paper has a 5x5, and its weights have that shape) and
``branch4`` (3x3/1 max-pool -> 1x1). Max-pools round up (``ceil_mode``).

The checkpoint's two auxiliary classifiers (``aux1.``, ``aux2.``) only serve
training; they are not built and their keys are skipped on load.

torchvision's pretrained model rescales its ImageNet-normalised input to
``(pixel / 255 - 0.5) / 0.5`` first (``transform_input``); this model takes
that tensor directly: its InputSpec has mean = std = 127.5.

The model code (torch) is in ``_googlenet_net``, imported when a model is built:
this file is the family's specs, as data, readable without torch.
"""

from __future__ import annotations

from ..data.input_spec import InputSpec
from .registry import BackboneSpec, RemoteWeights, register_backbone


def _build(num_classes: int = 1000, width: float = 1.0):
    from ._googlenet_net import GoogLeNet

    return GoogLeNet(num_classes, width=width)


_FILE = "googlenet-1378be20.pth"

register_backbone(
    BackboneSpec(
        name="googlenet",
        family="googlenet",
        builder=_build,
        # transform_input equivalent: (pixel - 127.5) / 127.5; resize 256, crop 224.
        input_spec=InputSpec(image_size=224, crop_fraction=0.875, mean=(127.5,) * 3, std=(127.5,) * 3),
        num_features=1024,
        num_params=6_624_904,  # without the auxiliary heads, as torchvision publishes it
        default_weights=RemoteWeights(url="https://download.pytorch.org/models/" + _FILE, filename=_FILE,
                                      sha256="1378be20", size_mb=49.731),
        description="GoogLeNet (Inception v1): nine inception modules, BatchNorm; torchvision ImageNet weights",
        head_prefix="fc.",
        ignore_prefixes=("aux1.", "aux2."),
        stem_conv="conv1.conv",
        top1=69.778,
        min_image_size=15,
        tiny={"width": 1 / 8},
    )
)


# The model classes live in ``_googlenet_net`` (torch); importing one from here
# still works, and imports torch only then (PEP 562).
_NET_NAMES = frozenset({"GoogLeNet", "InceptionModule"})


def __getattr__(name: str):
    if name in _NET_NAMES:
        from . import _googlenet_net

        return getattr(_googlenet_net, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
