"""ResNet (He et al. 2015), in the layout of torchvision's ImageNet checkpoints.

Two residual units: the two-conv ``BasicBlock`` (resnet18/34) and the
1x1-3x3-1x1 ``Bottleneck`` (resnet50/101/152, expansion 4). Bottlenecks
downsample in the 3x3 convolution ("ResNet v1.5"), which is what the published
weights were trained with. A stage whose first unit changes the shape has a
projection shortcut named ``downsample`` (1x1 conv ``.0`` + BatchNorm ``.1``).

State-dict keys: ``conv1``, ``bn1``, ``layer{1..4}.{i}.conv{1,2[,3]}``,
``layer{1..4}.{i}.bn{1,2[,3]}``, ``layer{k}.0.downsample.{0,1}``, ``fc``.

The model code (torch) is in ``_resnet_net``, imported when a model is built:
this file is the family's specs, as data, readable without torch.
"""

from __future__ import annotations

from ..data.input_spec import InputSpec
from .registry import BackboneSpec, RemoteWeights, register_backbone

# torchvision's ImageNet normalisation, in pixel units.
_IMAGENET = InputSpec(image_size=224, crop_fraction=0.875, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))
_TORCHVISION = "https://download.pytorch.org/models/"

# name: (residual unit in _resnet_net.BLOCKS, stage depths, torchvision's IMAGENET1K_V1 file, its num_params,
# its ImageNet top-1)
_RESNETS = {
    "resnet18": ("basic", (2, 2, 2, 2), "resnet18-f37072fd.pth", 11_689_512, 69.758),
    "resnet34": ("basic", (3, 4, 6, 3), "resnet34-b627a593.pth", 21_797_672, 73.314),
    "resnet50": ("bottleneck", (3, 4, 6, 3), "resnet50-0676ba61.pth", 25_557_032, 76.130),
    "resnet101": ("bottleneck", (3, 4, 23, 3), "resnet101-63fe2227.pth", 44_549_160, 77.374),
    "resnet152": ("bottleneck", (3, 8, 36, 3), "resnet152-394f9c45.pth", 60_192_808, 78.312),
}

# Output channels of the last stage per pooled feature: the unit's expansion.
_EXPANSION = {"basic": 1, "bottleneck": 4}


def _make_builder(block: str, depths):
    def build(num_classes: int = 1000, depths: tuple[int, int, int, int] = depths, width: int = 64):
        from ._resnet_net import BLOCKS, ResNet

        return ResNet(BLOCKS[block], depths, num_classes, width)

    return build


# The published files' sizes in MiB (torchvision's _file_size): 'weights fetch' stops just above.
_FILE_MB = {"resnet18-f37072fd.pth": 44.661, "resnet34-b627a593.pth": 83.275, "resnet50-0676ba61.pth": 97.781,
            "resnet101-63fe2227.pth": 170.511, "resnet152-394f9c45.pth": 230.434}

for _name, (_block, _depths, _file, _params, _top1) in _RESNETS.items():
    register_backbone(
        BackboneSpec(
            name=_name,
            family="resnet",
            builder=_make_builder(_block, _depths),
            input_spec=_IMAGENET,
            num_features=512 * _EXPANSION[_block],
            num_params=_params,
            default_weights=RemoteWeights(
                url=_TORCHVISION + _file, filename=_file, sha256=_file.rsplit("-", 1)[1].split(".")[0],
                size_mb=_FILE_MB[_file],
            ),
            description=(f"ResNet-{_name[6:]}: {_block} residual blocks "
                         f"{'-'.join(map(str, _depths))}; torchvision ImageNet weights"),
            head_prefix="fc.",
            stem_conv="conv1",
            top1=_top1,
            tiny={"depths": (1, 1, 1, 1), "width": 8},
        )
    )


# The model classes live in ``_resnet_net`` (torch); importing one from here
# still works, and imports torch only then (PEP 562).
_NET_NAMES = frozenset({"BasicBlock", "Bottleneck", "ResNet"})


def __getattr__(name: str):
    if name in _NET_NAMES:
        from . import _resnet_net

        return getattr(_resnet_net, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
