"""The zoo's backbones as sequences of block groups (stages), so a frozen
prefix can run once and only the trainable suffix each epoch: applying
``feature_stages(model)`` in order equals ``model.forward_feature_map``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from ..errors import DataError


class _ConvBnRelu6(nn.Module):
    """EfficientNet-Lite's stem and final 1x1 convolution (ReLU6 is functional there)."""

    def __init__(self, conv, bn):
        super().__init__()
        self.conv, self.bn = conv, bn

    def forward(self, x):
        return F.relu6(self.bn(self.conv(x)))


class _ResNetStem(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.conv1, self.bn1, self.maxpool = model.conv1, model.bn1, model.maxpool

    def forward(self, x):
        return self.maxpool(F.relu(self.bn1(self.conv1(x))))


def feature_stages(model: nn.Module) -> list[nn.Module]:
    """The block groups of ``model``, earliest first: the stem, one group
    per stage of blocks (the last one with the final 1x1 convolution when
    the family has one). The modules share the model's parameters."""
    from ..zoo.efficientnet_lite import EfficientNetLite
    from ..zoo.mobilenet import _MobileNetBase
    from ..zoo.resnet import ResNet

    if isinstance(model, EfficientNetLite):
        groups, start = [], 0
        for end in model.stage_ends:
            groups.append(nn.Sequential(*model._blocks[start:end + 1]))
            start = end + 1
        groups[-1] = nn.Sequential(*groups[-1], _ConvBnRelu6(model._conv_head, model._bn1))
        return [_ConvBnRelu6(model._conv_stem, model._bn0)] + groups
    if isinstance(model, ResNet):
        return [_ResNetStem(model), model.layer1, model.layer2, model.layer3, model.layer4]
    if isinstance(model, _MobileNetBase):
        ends = [end for end, _ in model.stages]
        groups, start = [], 0
        for end in ends:
            groups.append(model.features[start:end + 1])
            start = end + 1
        if start < len(model.features):  # the final 1x1 convolution joins the last group
            groups[-1] = nn.Sequential(*groups[-1], *model.features[start:])
        return groups
    raise DataError(f"--strategy last-K needs a backbone built of stages (efficientnet_lite*, mobilenet_*, "
                    f"resnet*); {type(model).__name__} is not: use bias, full or head")


def pool_features(model: nn.Module, fmap):
    """The model's features from its final feature map (what
    ``forward_features`` does after ``forward_feature_map``)."""
    from ..zoo.mobilenet import MobileNetV3

    pooled = fmap.mean(dim=(2, 3))
    if isinstance(model, MobileNetV3):
        return model.classifier[1](model.classifier[0](pooled))
    return pooled
