"""AlexNet (Krizhevsky, Sutskever & Hinton 2012), in two layouts.

``alexnet`` is torchvision's model ("one weird trick" variant, Krizhevsky
2014: 64-192-384-256-256 filters, no response normalisation); its state-dict
keys (``features.N``, ``classifier.N``) match torchvision's published
checkpoint, so those weights load strictly.

``alexnet_2012`` is the network the 2012 article describes, as one tower
(the article split it over two GPUs; the grouped convolutions that split
implies are not reproduced): 227x227 input, 96-256-384-384-256 filters,
local response normalisation after the first two convolutions, overlapping
3x3/2 max-pooling, 4096-4096-1000 fully-connected layers with dropout. There
are no published weights for it: it exists to profile the article's network
(about 62.3 M parameters, 1.1 G multiply-accumulates, 95 % of them in the
convolutions, which hold 6 % of the parameters) and to train from scratch.

Both layouts are described by the same small tables of layers, built by one
class.

The model code (torch) is in ``_alexnet_net``, imported when a model is built:
this file is the family's specs, as data, readable without torch. The layer
tables are there too, beside the class that reads them.
"""

from __future__ import annotations

from ..data.input_spec import InputSpec
from .registry import BackboneSpec, RemoteWeights, register_backbone

_IMAGENET_MEAN = (123.675, 116.28, 103.53)
_IMAGENET_STD = (58.395, 57.12, 57.375)
_HIDDEN = 4096  # fc6/fc7 width of both layouts: fc7 is the features


def _make_builder(layout: str, hidden: int):
    def build(num_classes: int = 1000, width: float = 1.0, hidden: int = hidden):
        from ._alexnet_net import LAYOUTS, AlexNet, scaled

        return AlexNet(scaled(LAYOUTS[layout], width, hidden), num_classes)

    return build


def _imagenet(image_size: int, crop_fraction: float) -> InputSpec:
    return InputSpec(image_size=image_size, crop_fraction=crop_fraction, mean=_IMAGENET_MEAN, std=_IMAGENET_STD)


# name: (layout in _alexnet_net.LAYOUTS, input spec, published params, weights file or None, top-1, smallest
# input, description)
_MODELS = {
    "alexnet": (
        "torchvision", _imagenet(224, 0.875), 61_100_840, "alexnet-owt-7be5be79.pth", 56.522, 63,
        "AlexNet as in torchvision (single tower, Krizhevsky 2014 variant): 5 convolutions, 3 fully-connected "
        "layers; fc7 features",
    ),
    "alexnet_2012": (
        "article_2012", _imagenet(227, 227 / 256), 62_378_344, None, None, 67,
        "AlexNet as the 2012 article lays it out, one tower (227 px input, response normalisation, 96-256-384-"
        "384-256 filters): for profiling and training from scratch; no published weights",
    ),
}

# The published files' sizes in MiB (torchvision's _file_size): 'weights fetch' stops just above.
_FILE_MB = {"alexnet-owt-7be5be79.pth": 233.087}

for _name, (_layout, _input, _params, _file, _top1, _min_size, _desc) in _MODELS.items():
    register_backbone(
        BackboneSpec(
            name=_name,
            family="alexnet",
            builder=_make_builder(_layout, _HIDDEN),
            input_spec=_input,
            num_features=_HIDDEN,
            num_params=_params,
            default_weights=(
                RemoteWeights(url=f"https://download.pytorch.org/models/{_file}", filename=_file,
                              sha256=_file.rsplit("-", 1)[1].split(".")[0], size_mb=_FILE_MB[_file])
                if _file else None
            ),
            description=_desc,
            head_prefix="classifier.6.",
            stem_conv="features.0",
            top1=_top1,
            min_image_size=_min_size,
            tiny={"width": 1 / 16, "hidden": 64},
        )
    )


# The model classes live in ``_alexnet_net`` (torch); importing one from here
# still works, and imports torch only then (PEP 562).
_NET_NAMES = frozenset({"AlexNet", "AlexNetLayout", "Conv", "LRN", "Pool"})


def __getattr__(name: str):
    if name in _NET_NAMES:
        from . import _alexnet_net

        return getattr(_alexnet_net, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
