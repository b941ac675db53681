"""The model code of the efficientnet_lite family (torch): MBConv blocks, TF
"SAME" padding, ``EfficientNetLite``.

Its backbones are registered, as data, by ``zoo/efficientnet_lite.py``, which imports
this module only when a model is built: reading a spec (``get_spec``,
``list_backbones``, ``resolve_weights``) must not import torch, which a
warm ``edgetl train`` (cached ONNX graphs, numpy heads) never needs."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ._layers import kaiming_normal_


# (repeats, kernel, stride, expand_ratio, in_filters, out_filters), from the
# reference efficientnet_lite_builder.py.
_BLOCKS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_BN_EPS = 1e-3


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding, computed from the input size."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, groups=1, bias=False):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = int(x.shape[-2]), int(x.shape[-1])
        kh, kw = self.kernel_size
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(in_ch, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._project_conv = Conv2dSame(mid, out_ch, 1)
        self._bn2 = nn.BatchNorm2d(out_ch, eps=_BN_EPS)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.use_residual else y


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    if width == 1.0:
        return filters
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


@dataclass(frozen=True)
class LiteConfig:
    width: float
    depth: float
    dropout: float
    head: int = 1280  # fixed for the lite variants; smaller only in the tiny test configuration


class _ConvBnRelu6(nn.Module):
    """The stem or the final 1x1 convolution as one module of a stage group
    (ReLU6 is functional there); shares the model's layers."""

    def __init__(self, conv: nn.Module, bn: nn.Module):
        super().__init__()
        self.conv, self.bn = conv, bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self.bn(self.conv(x)))


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite. ``forward`` gives ImageNet logits when the model has
    its classifier (``num_classes > 0``), else the pooled features."""

    def __init__(self, config: LiteConfig, num_classes: int = 1000):
        super().__init__()
        stem, head = 32, config.head
        self._conv_stem = Conv2dSame(3, stem, 3, 2)
        self._bn0 = nn.BatchNorm2d(stem, eps=_BN_EPS)
        blocks = []
        self.stage_ends: list[int] = []  # index of the last block of each stage
        for i, (repeats, kernel, stride, expand, cin, cout) in enumerate(_BLOCKS):
            cin = stem if i == 0 else _round_filters(cin, config.width)
            cout = _round_filters(cout, config.width)
            if 0 < i < len(_BLOCKS) - 1:
                repeats = int(math.ceil(config.depth * repeats))
            for r in range(repeats):
                blocks.append(MBConv(cin if r == 0 else cout, cout, kernel, stride if r == 0 else 1, expand))
            self.stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(cout, head, 1)
        self._bn1 = nn.BatchNorm2d(head, eps=_BN_EPS)
        self._dropout = nn.Dropout(config.dropout)
        self.num_features = head
        self.num_classes = num_classes
        self._fc = nn.Linear(head, num_classes) if num_classes else None
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.uniform_(m.weight, -1.0 / math.sqrt(m.out_features), 1.0 / math.sqrt(m.out_features))
                nn.init.zeros_(m.bias)

    def reset_classifier(self, num_classes: int = 0) -> None:
        self.num_classes = num_classes
        self._fc = nn.Linear(self.num_features, num_classes) if num_classes else None

    def tap_points(self) -> list[tuple[str, str]]:
        """The end of each stage, ``("block7", "_blocks.7")``; leading stages
        that do not downsample run at the stem's resolution and are skipped."""
        first = next(i for i, stage in enumerate(_BLOCKS) if stage[2] > 1)
        return [(f"block{end}", f"_blocks.{end}") for end in self.stage_ends[first:]]

    def stage_groups(self) -> list[nn.Module]:
        """The stem, then one group per stage of blocks, the last one with
        the final 1x1 convolution."""
        groups, start = [], 0
        for end in self.stage_ends:
            groups.append(nn.Sequential(*self._blocks[start:end + 1]))
            start = end + 1
        groups[-1] = nn.Sequential(*groups[-1], _ConvBnRelu6(self._conv_head, self._bn1))
        return [_ConvBnRelu6(self._conv_stem, self._bn0)] + groups

    def forward_feature_map(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def pool_feature_map(self, fmap: torch.Tensor) -> torch.Tensor:
        return fmap.mean(dim=(2, 3))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features, shape (N, num_features)."""
        return self.pool_feature_map(self.forward_feature_map(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        if self._fc is None:
            return features
        return self._fc(self._dropout(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
