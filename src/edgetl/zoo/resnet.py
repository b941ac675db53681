"""ResNet (He et al. 2015), in the layout of torchvision's ImageNet checkpoints.

Two residual units: the two-conv ``BasicBlock`` (resnet18/34) and the
1x1-3x3-1x1 ``Bottleneck`` (resnet50/101/152, expansion 4). Bottlenecks
downsample in the 3x3 convolution ("ResNet v1.5"), which is what the published
weights were trained with. A stage whose first unit changes the shape has a
projection shortcut named ``downsample`` (1x1 conv ``.0`` + BatchNorm ``.1``).

State-dict keys: ``conv1``, ``bn1``, ``layer{1..4}.{i}.conv{1,2[,3]}``,
``layer{1..4}.{i}.bn{1,2[,3]}``, ``layer{k}.0.downsample.{0,1}``, ``fc``.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from ..data.input_spec import InputSpec
from ._layers import init_weights
from .registry import BackboneSpec, RemoteWeights, register_backbone

# torchvision's ImageNet normalisation, in pixel units.
_IMAGENET = InputSpec(image_size=224, crop_fraction=0.875, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))
_TORCHVISION = "https://download.pytorch.org/models/"


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """3x3 -> 3x3, output width ``width``."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(cin, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride) -> 1x1 expand to 4 * ``width``."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv1x1(cin, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, width * self.expansion)
        self.bn3 = nn.BatchNorm2d(width * self.expansion)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + shortcut)


class _Stem(nn.Module):
    """conv1 -> bn1 -> ReLU -> max-pool as one module (the first stage
    group); shares the model's layers."""

    def __init__(self, model: "ResNet"):
        super().__init__()
        self.conv1, self.bn1, self.maxpool = model.conv1, model.bn1, model.maxpool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(F.relu(self.bn1(self.conv1(x))))


class ResNet(nn.Module):
    """ResNet with a 7x7/2 stem, a 3x3/2 max-pool and four stages of widths
    64, 128, 256, 512 (times the block's expansion at the output;
    ``base_width`` is the first, the others double it: smaller only in the
    tiny test configuration). ``forward`` gives ImageNet logits when the model has its
    classifier (``num_classes > 0``), else the pooled features."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], depths: tuple[int, int, int, int],
                 num_classes: int = 1000, base_width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, base_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = base_width
        for index, (width, repeats) in enumerate(zip((base_width * m for m in (1, 2, 4, 8)), depths)):
            stride = 1 if index == 0 else 2
            out = width * block.expansion
            units = []
            for r in range(repeats):
                shortcut = None
                if r == 0 and (stride != 1 or channels != out):
                    shortcut = nn.Sequential(_conv1x1(channels, out, stride), nn.BatchNorm2d(out))
                units.append(block(channels if r == 0 else out, width, stride if r == 0 else 1, shortcut))
            channels = out
            setattr(self, f"layer{index + 1}", nn.Sequential(*units))
        self.num_features = channels
        self.num_classes = num_classes
        self.fc = nn.Linear(channels, num_classes) if num_classes else None
        init_weights(self, uniform_linear_bias=True)

    def reset_classifier(self, num_classes: int = 0) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else None

    def tap_points(self) -> list[tuple[str, str]]:
        """The ends of the stages; ``layer4`` pooled is the final features."""
        return [(f"layer{i}", f"layer{i}") for i in (1, 2, 3)]

    def stage_groups(self) -> list[nn.Module]:
        """The stem, then ``layer1`` .. ``layer4``."""
        return [_Stem(self), self.layer1, self.layer2, self.layer3, self.layer4]

    def forward_feature_map(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
        return x

    def pool_feature_map(self, fmap: torch.Tensor) -> torch.Tensor:
        return fmap.mean(dim=(2, 3))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features, shape (N, num_features)."""
        return self.pool_feature_map(self.forward_feature_map(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return features if self.fc is None else self.fc(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# name: (block, stage depths, torchvision's IMAGENET1K_V1 file, its num_params, its ImageNet top-1)
_RESNETS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2), "resnet18-f37072fd.pth", 11_689_512, 69.758),
    "resnet34": (BasicBlock, (3, 4, 6, 3), "resnet34-b627a593.pth", 21_797_672, 73.314),
    "resnet50": (Bottleneck, (3, 4, 6, 3), "resnet50-0676ba61.pth", 25_557_032, 76.130),
    "resnet101": (Bottleneck, (3, 4, 23, 3), "resnet101-63fe2227.pth", 44_549_160, 77.374),
    "resnet152": (Bottleneck, (3, 8, 36, 3), "resnet152-394f9c45.pth", 60_192_808, 78.312),
}


def _make_builder(block, depths):
    def build(num_classes: int = 1000, depths: tuple[int, int, int, int] = depths, width: int = 64) -> ResNet:
        return ResNet(block, depths, num_classes, width)

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
            num_features=512 * _block.expansion,
            num_params=_params,
            default_weights=RemoteWeights(
                url=_TORCHVISION + _file, filename=_file, sha256=_file.rsplit("-", 1)[1].split(".")[0],
                size_mb=_FILE_MB[_file],
            ),
            description=(f"ResNet-{_name[6:]}: {'basic' if _block is BasicBlock else 'bottleneck'} residual blocks "
                         f"{'-'.join(map(str, _depths))}; torchvision ImageNet weights"),
            head_prefix="fc.",
            stem_conv="conv1",
            top1=_top1,
            tiny={"depths": (1, 1, 1, 1), "width": 8},
        )
    )
