"""VGG (Simonyan & Zisserman 2014): stacks of 3x3 convolutions (padding 1)
separated by 2x2 max-pooling, then three fully-connected layers.

Configurations A, B, D and E of the article are VGG-11, -13, -16 and -19; the
``_bn`` variants put a BatchNorm after every convolution. Module names and
indices (``features.N``, ``avgpool``, ``classifier.0/3/6``) match
torchvision's published ImageNet checkpoints, which load strictly.

The model code (torch) is in ``_vgg_net``, imported when a model is built:
this file is the family's specs, as data, readable without torch.
"""

from __future__ import annotations

from ..data.input_spec import InputSpec
from .registry import BackboneSpec, RemoteWeights, register_backbone

# Output channels of each 3x3 convolution, "M" a 2x2/2 max-pool (article, table 1).
_CONFIGS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}

# name: (depth, batch norm, torchvision weights file, published params, published ImageNet top-1)
_MODELS = {
    "vgg11": (11, False, "vgg11-8a719046.pth", 132_863_336, 69.020),
    "vgg13": (13, False, "vgg13-19584684.pth", 133_047_848, 69.928),
    "vgg16": (16, False, "vgg16-397923af.pth", 138_357_544, 71.592),
    "vgg19": (19, False, "vgg19-dcbb9e9d.pth", 143_667_240, 72.376),
    "vgg11_bn": (11, True, "vgg11_bn-6002323d.pth", 132_868_840, 70.370),
    "vgg13_bn": (13, True, "vgg13_bn-abd245e5.pth", 133_053_736, 71.586),
    "vgg16_bn": (16, True, "vgg16_bn-6c64b313.pth", 138_365_992, 73.360),
    "vgg19_bn": (19, True, "vgg19_bn-c79401a0.pth", 143_678_248, 74.218),
}

_HIDDEN = 4096


def _make_builder(depth: int, batch_norm: bool):
    def build(num_classes: int = 1000, width: float = 1.0, hidden: int = _HIDDEN):
        from ._vgg_net import VGG

        return VGG(_CONFIGS[depth], batch_norm, num_classes, width=width, hidden=hidden)

    return build


# The published files' sizes in MiB (torchvision's _file_size): 'weights fetch' stops just above.
_FILE_MB = {"vgg11-8a719046.pth": 506.84, "vgg13-19584684.pth": 507.545, "vgg16-397923af.pth": 527.796,
            "vgg19-dcbb9e9d.pth": 548.051, "vgg11_bn-6002323d.pth": 506.881, "vgg13_bn-abd245e5.pth": 507.59,
            "vgg16_bn-6c64b313.pth": 527.866, "vgg19_bn-c79401a0.pth": 548.143}

for _name, (_depth, _bn, _file, _params, _top1) in _MODELS.items():
    register_backbone(
        BackboneSpec(
            name=_name,
            family="vgg",
            builder=_make_builder(_depth, _bn),
            input_spec=InputSpec(image_size=224, crop_fraction=0.875, mean=(123.675, 116.28, 103.53),
                                 std=(58.395, 57.12, 57.375)),
            num_features=_HIDDEN,
            num_params=_params,
            default_weights=RemoteWeights(url=f"https://download.pytorch.org/models/{_file}", filename=_file,
                                          sha256=_file.rsplit("-", 1)[1].split(".")[0], size_mb=_FILE_MB[_file]),
            description=(f"VGG-{_depth}{' with batch norm' if _bn else ''}: 3x3 convolutions, three "
                         "fully-connected layers; fc7 features; large (mostly in fc6)"),
            head_prefix="classifier.6.",
            stem_conv="features.0",
            top1=_top1,
            min_image_size=32,
            tiny={"width": 1 / 16, "hidden": 64},
        )
    )


# The model classes live in ``_vgg_net`` (torch); importing one from here
# still works, and imports torch only then (PEP 562).
_NET_NAMES = frozenset({"VGG"})


def __getattr__(name: str):
    if name in _NET_NAMES:
        from . import _vgg_net

        return getattr(_vgg_net, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
