"""MobileNet V2 (Sandler et al. 2018) and V3 (Howard et al. 2019), laid out
like torchvision's ImageNet checkpoints so those load strictly.

Layout (the state-dict keys follow from it):

* ``features.0`` is the stem: a ``[Conv2d, BatchNorm2d, activation]``
  sequence (keys ``features.0.0``, ``features.0.1``); the last entry of
  ``features`` is the 1x1 expansion to the head width, built the same way.
* In between, inverted-residual blocks. V2 keeps its layers in ``.conv``:
  an optional 1x1 expansion triple, the depthwise triple, then the linear
  projection as a bare ``Conv2d`` and ``BatchNorm2d``. V3 keeps them in
  ``.block``: optional expansion triple, depthwise triple, optional
  squeeze-excitation (``fc1``/``fc2``, 1x1 convolutions with bias), and the
  projection as a ``[Conv2d, BatchNorm2d]`` pair.
* V2's classifier is ``[Dropout, Linear(1280, 1000)]``; V3's is
  ``[Linear, Hardswish, Dropout, Linear]``. The pooled features handed to
  the transfer-learning head are the input of the last ``Linear``, so V3's
  ``forward_features`` runs the first ``Linear`` and its Hardswish.

The model code (torch) is in ``_mobilenet_net``, imported when a model is built:
this file is the family's specs, as data, readable without torch.
"""

from __future__ import annotations

from ..data.input_spec import InputSpec
from .registry import BackboneSpec, RemoteWeights, register_backbone

_TV = "https://download.pytorch.org/models/"
# torchvision's ImageNet evaluation: shorter side to 256, centre 224 crop.
_IMAGENET = InputSpec(image_size=224, crop_fraction=224 / 256, mean=(123.675, 116.28, 103.53),
                      std=(58.395, 57.12, 57.375))



def mobilenet_v2(num_classes: int = 1000, width: float = 1.0, depth: float = 1.0, head: int = 1280):
    from ._mobilenet_net import MobileNetV2

    return MobileNetV2(num_classes, width=width, depth=depth, head=head)


def mobilenet_v3_large(num_classes: int = 1000, width: float = 1.0, head: int = 1280):
    from ._mobilenet_net import V3_LARGE, MobileNetV3

    return MobileNetV3(V3_LARGE, head, num_classes, width=width)


def mobilenet_v3_small(num_classes: int = 1000, width: float = 1.0, head: int = 1024):
    from ._mobilenet_net import V3_SMALL, MobileNetV3

    return MobileNetV3(V3_SMALL, head, num_classes, width=width)


# name: (builder, num_features, num_params, weights file, top-1 %, head, description, tiny configuration)
_MODELS = {
    "mobilenet_v2": (mobilenet_v2, 1280, 3_504_872, "mobilenet_v2-b0353104.pth", 71.878, "classifier.1.",
                     "MobileNetV2: inverted residuals with linear bottlenecks, ReLU6",
                     {"width": 0.25, "depth": 0.25, "head": 64}),
    "mobilenet_v3_large": (mobilenet_v3_large, 1280, 5_483_032, "mobilenet_v3_large-8738ca79.pth", 74.042,
                           "classifier.3.", "MobileNetV3-Large: NAS-found blocks, squeeze-excitation, hard-swish",
                           {"width": 0.25, "head": 64}),
    "mobilenet_v3_small": (mobilenet_v3_small, 1024, 2_542_856, "mobilenet_v3_small-047dcff4.pth", 67.668,
                           "classifier.3.", "MobileNetV3-Small: the low-budget V3 (about 57 M multiply-adds)",
                           {"width": 0.25, "head": 64}),
}

# The published files' sizes in MiB (torchvision's _file_size): 'weights fetch' stops just above.
_FILE_MB = {"mobilenet_v2-b0353104.pth": 13.555, "mobilenet_v3_large-8738ca79.pth": 21.114,
            "mobilenet_v3_small-047dcff4.pth": 9.829}

for _name, (_build, _feats, _params, _file, _top1, _head, _desc, _tiny) in _MODELS.items():
    register_backbone(
        BackboneSpec(
            name=_name,
            family="mobilenet",
            builder=_build,
            input_spec=_IMAGENET,
            num_features=_feats,
            num_params=_params,
            default_weights=RemoteWeights(url=_TV + _file, filename=_file, sha256=_file.rsplit("-", 1)[1][:8],
                                          size_mb=_FILE_MB[_file]),
            description=_desc,
            head_prefix=_head,
            stem_conv="features.0.0",
            top1=_top1,
            tiny=_tiny,
        )
    )


# The model classes live in ``_mobilenet_net`` (torch); importing one from here
# still works, and imports torch only then (PEP 562).
_NET_NAMES = frozenset({"ConvNormAct", "InvertedResidualV2", "InvertedResidualV3", "MobileNetV2", "MobileNetV3", "SqueezeExcitation"})


def __getattr__(name: str):
    if name in _NET_NAMES:
        from . import _mobilenet_net

        return getattr(_mobilenet_net, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
