"""The model code of the resnet family (torch): the two residual units and the
``ResNet`` class.

Its backbones are registered, as data, by ``zoo/resnet.py``, which imports
this module only when a model is built: reading a spec (``get_spec``,
``list_backbones``, ``resolve_weights``) must not import torch, which a
warm ``edgetl train`` (cached ONNX graphs, numpy heads) never needs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._layers import init_weights


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



# The residual units the family file's specs name.
BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}
