"""The model code of the mobilenet family (torch): inverted-residual blocks and
the ``MobileNetV2`` / ``MobileNetV3`` classes.

Its backbones are registered, as data, by ``zoo/mobilenet.py``, which imports
this module only when a model is built: reading a spec (``get_spec``,
``list_backbones``, ``resolve_weights``) must not import torch, which a
warm ``edgetl train`` (cached ONNX graphs, numpy heads) never needs."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._layers import kaiming_normal_, normal_


def _round8(channels: float, divisor: int = 8) -> int:
    """Nearest multiple of ``divisor``, never more than 10 % below ``channels``."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * channels:
        rounded += divisor
    return rounded


class ConvNormAct(nn.Sequential):
    """Indices 0 (conv, no bias), 1 (batch norm), 2 (activation, if any)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 act: type[nn.Module] | None = nn.ReLU6, bn_eps: float = 1e-5, bn_momentum: float = 0.1):
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, padding=(kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout, eps=bn_eps, momentum=bn_momentum),
        ]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def _new_linear(cin: int, cout: int) -> nn.Module:
    if not cout:
        return nn.Identity()
    layer = nn.Linear(cin, cout)
    normal_(layer.weight, 0.0, 0.01)
    nn.init.zeros_(layer.bias)
    return layer


class _MobileNetBase(nn.Module):
    """The shared contract: the final ``Linear`` is ``classifier[-1]``.
    ``stages`` lists, per stage of blocks (consecutive blocks of one output
    width), the index in ``features`` of its last block and its stride."""

    features: nn.Sequential
    classifier: nn.Sequential
    num_features: int
    num_classes: int
    stages: list[tuple[int, int]]

    def reset_classifier(self, num_classes: int = 0) -> None:
        self.num_classes = num_classes
        self.classifier[-1] = _new_linear(self.num_features, num_classes)

    def tap_points(self) -> list[tuple[str, str]]:
        """The last block of each stage (where resolution or width changes),
        ``("block3", "features.3")``; leading stages that do not downsample
        run at the stem's resolution and are skipped."""
        first = next(i for i, (_, stride) in enumerate(self.stages) if stride > 1)
        return [(f"block{end}", f"features.{end}") for end, _ in self.stages[first:]]

    def stage_groups(self) -> list[nn.Module]:
        """Slices of ``features``, one per stage (the stem joins the first),
        the final 1x1 convolution joining the last."""
        groups, start = [], 0
        for end, _ in self.stages:
            groups.append(self.features[start:end + 1])
            start = end + 1
        if start < len(self.features):
            groups[-1] = nn.Sequential(*groups[-1], *self.features[start:])
        return groups

    def forward_feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def pool_feature_map(self, fmap: torch.Tensor) -> torch.Tensor:
        return fmap.mean(dim=(2, 3))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features, shape (N, num_features)."""
        return self.pool_feature_map(self.forward_feature_map(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ----------------------------------------------------------------- V2

# (expand ratio, output channels, repeats, first stride) per stage.
_V2_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class InvertedResidualV2(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvNormAct(cin, mid, 1))
        layers += [
            ConvNormAct(mid, mid, 3, stride, groups=mid),
            nn.Conv2d(mid, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.use_residual else y


class MobileNetV2(_MobileNetBase):
    """``width`` scales every block's channels, ``depth`` the repeats of
    each stage; ``head``: the width of the final 1x1 convolution (the
    features). Only the tiny test configuration changes them."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2, width: float = 1.0, depth: float = 1.0,
                 head: int = 1280):
        super().__init__()
        stem = _round8(32 * width)
        layers: list[nn.Module] = [ConvNormAct(3, stem, 3, 2)]
        cin = stem
        self.stages = []
        for expand, cout, repeats, stride in _V2_STAGES:
            cout = _round8(cout * width)
            for r in range(math.ceil(repeats * depth)):
                layers.append(InvertedResidualV2(cin, cout, stride if r == 0 else 1, expand))
                cin = cout
            self.stages.append((len(layers) - 1, stride))
        layers.append(ConvNormAct(cin, head, 1))
        self.features = nn.Sequential(*layers)
        self.num_features = head
        self.num_classes = num_classes
        self.classifier = nn.Sequential(nn.Dropout(dropout), _new_linear(head, num_classes))
        _init_weights(self)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)


# ----------------------------------------------------------------- V3

_V3_BN = {"bn_eps": 1e-3, "bn_momentum": 0.01}

# (kernel, expanded channels, output channels, squeeze-excite, hardswish, stride)
V3_LARGE = (
    (3, 16, 16, False, False, 1),
    (3, 64, 24, False, False, 2),
    (3, 72, 24, False, False, 1),
    (5, 72, 40, True, False, 2),
    (5, 120, 40, True, False, 1),
    (5, 120, 40, True, False, 1),
    (3, 240, 80, False, True, 2),
    (3, 200, 80, False, True, 1),
    (3, 184, 80, False, True, 1),
    (3, 184, 80, False, True, 1),
    (3, 480, 112, True, True, 1),
    (3, 672, 112, True, True, 1),
    (5, 672, 160, True, True, 2),
    (5, 960, 160, True, True, 1),
    (5, 960, 160, True, True, 1),
)
V3_SMALL = (
    (3, 16, 16, True, False, 2),
    (3, 72, 24, False, False, 2),
    (3, 88, 24, False, False, 1),
    (5, 96, 40, True, True, 2),
    (5, 240, 40, True, True, 1),
    (5, 240, 40, True, True, 1),
    (5, 120, 48, True, True, 1),
    (5, 144, 48, True, True, 1),
    (5, 288, 96, True, True, 2),
    (5, 576, 96, True, True, 1),
    (5, 576, 96, True, True, 1),
)


class SqueezeExcitation(nn.Module):
    """Channel gate: global average -> 1x1 conv -> ReLU -> 1x1 conv -> hard sigmoid."""

    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = F.hardsigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))
        return x * gate


class InvertedResidualV3(nn.Module):
    """``expand``: whether a 1x1 expansion comes first (the published table's
    ``mid != cin``, decided on its unscaled widths)."""

    def __init__(self, cin: int, kernel: int, mid: int, cout: int, use_se: bool, hardswish: bool, stride: int,
                 expand: bool):
        super().__init__()
        act = nn.Hardswish if hardswish else nn.ReLU
        layers: list[nn.Module] = []
        if expand:
            layers.append(ConvNormAct(cin, mid, 1, act=act, **_V3_BN))
        layers.append(ConvNormAct(mid, mid, kernel, stride, groups=mid, act=act, **_V3_BN))
        if use_se:
            layers.append(SqueezeExcitation(mid, _round8(mid // 4)))
        layers.append(ConvNormAct(mid, cout, 1, act=None, **_V3_BN))
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_residual else y


class MobileNetV3(_MobileNetBase):
    """``width`` scales every block's channels (the tiny test configuration);
    the stages and the blocks' layers follow the published table's widths."""

    def __init__(self, setting, last_channels: int, num_classes: int = 1000, dropout: float = 0.2,
                 width: float = 1.0):
        super().__init__()
        stem = _round8(16 * width)
        layers: list[nn.Module] = [ConvNormAct(3, stem, 3, 2, act=nn.Hardswish, **_V3_BN)]
        cin, table_cin = stem, 16
        self.stages = []
        for kernel, mid, cout, use_se, hardswish, stride in setting:
            if stride > 1 or not self.stages or cout != table_cin:  # a block changing resolution or width opens a stage
                self.stages.append((len(layers), stride))
            else:
                self.stages[-1] = (len(layers), self.stages[-1][1])
            layers.append(InvertedResidualV3(cin, kernel, _round8(mid * width), _round8(cout * width), use_se,
                                             hardswish, stride, expand=mid != table_cin))
            cin, table_cin = _round8(cout * width), cout
        layers.append(ConvNormAct(cin, 6 * cin, 1, act=nn.Hardswish, **_V3_BN))
        self.features = nn.Sequential(*layers)
        self.num_features = last_channels
        self.num_classes = num_classes
        self.classifier = nn.Sequential(
            nn.Linear(6 * cin, last_channels),
            nn.Hardswish(),
            nn.Dropout(dropout),
            _new_linear(last_channels, num_classes),
        )
        _init_weights(self)

    def pool_feature_map(self, fmap: torch.Tensor) -> torch.Tensor:
        """The input of the last Linear: pooled map -> Linear -> Hardswish."""
        return self.classifier[1](self.classifier[0](fmap.mean(dim=(2, 3))))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier[3](self.classifier[2](features))
