"""Inception v3 (Szegedy et al. 2015), in the layout of torchvision's ImageNet
checkpoint (``inception_v3_google-0cc3c7bd.pth``, ported from TensorFlow).

Every convolution is a ``ConvBN`` unit (conv without bias, BatchNorm eps 1e-3,
ReLU; keys ``<name>.conv`` / ``<name>.bn``). The stem ``Conv2d_1a_3x3`` ...
``Conv2d_4a_3x3`` is followed by the mixed blocks of the paper's figures:
``Mixed_5b..5d`` (35x35, "A"), ``Mixed_6a`` (grid reduction, "B"),
``Mixed_6b..6e`` (17x17 factorised 7x7, "C"), ``Mixed_7a`` (reduction, "D"),
``Mixed_7b..7c`` (8x8 expanded 3x3, "E"). Inputs are 299x299 (342 resize).

``AuxLogits`` (the auxiliary classifier on Mixed_6e) is kept as a module so
the checkpoint loads strictly and the parameter count equals the published
one; it only serves training and never runs here. It always has the
checkpoint's 1000 outputs, whatever ``num_classes`` is.

torchvision's pretrained model rescales its ImageNet-normalised input to
``(pixel / 255 - 0.5) / 0.5`` first (``transform_input``); this model takes
that tensor directly: its InputSpec has mean = std = 127.5.

The model code (torch) is in ``_inception_net``, imported when a model is built:
this file is the family's specs, as data, readable without torch.
"""

from __future__ import annotations

from ..data.input_spec import InputSpec
from .registry import BackboneSpec, RemoteWeights, register_backbone


def _build(num_classes: int = 1000, width: float = 1.0):
    from ._inception_net import InceptionV3

    return InceptionV3(num_classes, width=width)


_FILE = "inception_v3_google-0cc3c7bd.pth"

register_backbone(
    BackboneSpec(
        name="inception_v3",
        family="inception",
        builder=_build,
        # transform_input equivalent: (pixel - 127.5) / 127.5; resize 342, crop 299.
        input_spec=InputSpec(image_size=299, crop_fraction=299 / 342, mean=(127.5,) * 3, std=(127.5,) * 3),
        num_features=2048,
        num_params=27_161_264,  # including AuxLogits, as torchvision publishes it
        default_weights=RemoteWeights(url="https://download.pytorch.org/models/" + _FILE, filename=_FILE,
                                      sha256="0cc3c7bd", size_mb=103.903),
        description="Inception v3: factorised inception blocks, 299x299 input; torchvision ImageNet weights",
        head_prefix="fc.",
        stem_conv="Conv2d_1a_3x3.conv",
        top1=77.294,
        min_image_size=75,
        tiny={"width": 1 / 8},
    )
)


# The model classes live in ``_inception_net`` (torch); importing one from here
# still works, and imports torch only then (PEP 562).
_NET_NAMES = frozenset({"AuxClassifier", "BlockA", "BlockB", "BlockC", "BlockD", "BlockE", "InceptionV3"})


def __getattr__(name: str):
    if name in _NET_NAMES:
        from . import _inception_net

        return getattr(_inception_net, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
