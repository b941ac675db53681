"""The model code of the inception family (torch): the mixed blocks and the
``InceptionV3`` class.

Its backbones are registered, as data, by ``zoo/inception.py``, which imports
this module only when a model is built: reading a spec (``get_spec``,
``list_backbones``, ``resolve_weights``) must not import torch, which a
warm ``edgetl train`` (cached ONNX graphs, numpy heads) never needs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._layers import ConvBN, init_weights


def _row(cin: int, cout: int, k: int) -> ConvBN:
    """1 x k convolution, same size."""
    return ConvBN(cin, cout, (1, k), padding=(0, k // 2))


def _col(cin: int, cout: int, k: int) -> ConvBN:
    """k x 1 convolution, same size."""
    return ConvBN(cin, cout, (k, 1), padding=(k // 2, 0))


def _avg3(x: torch.Tensor) -> torch.Tensor:
    # 3x3/1 average pool, zero padding counted (count_include_pad), as trained.
    return F.avg_pool2d(x, 3, stride=1, padding=1)


class BlockA(nn.Module):
    """35x35: 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg-pool -> 1x1."""

    def __init__(self, cin: int, pool_features: int, w=int):
        super().__init__()
        self.branch1x1 = ConvBN(cin, w(64), 1)
        self.branch5x5_1 = ConvBN(cin, w(48), 1)
        self.branch5x5_2 = ConvBN(w(48), w(64), 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(cin, w(64), 1)
        self.branch3x3dbl_2 = ConvBN(w(64), w(96), 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(w(96), w(96), 3, padding=1)
        self.branch_pool = ConvBN(cin, w(pool_features), 1)
        self.out_channels = w(64) + w(64) + w(96) + w(pool_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg3(x))], dim=1)


class BlockB(nn.Module):
    """35 -> 17 reduction: 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | max-pool 3x3/2."""

    def __init__(self, cin: int, w=int):
        super().__init__()
        self.branch3x3 = ConvBN(cin, w(384), 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(cin, w(64), 1)
        self.branch3x3dbl_2 = ConvBN(w(64), w(96), 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(w(96), w(96), 3, stride=2)
        self.out_channels = w(384) + w(96) + cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], dim=1)


class BlockC(nn.Module):
    """17x17 with 7x7 convolutions factorised into 1x7 and 7x1 (width ``c7``)."""

    def __init__(self, cin: int, c7: int, w=int):
        super().__init__()
        c7 = w(c7)
        self.branch1x1 = ConvBN(cin, w(192), 1)
        self.branch7x7_1 = ConvBN(cin, c7, 1)
        self.branch7x7_2 = _row(c7, c7, 7)
        self.branch7x7_3 = _col(c7, w(192), 7)
        self.branch7x7dbl_1 = ConvBN(cin, c7, 1)
        self.branch7x7dbl_2 = _col(c7, c7, 7)
        self.branch7x7dbl_3 = _row(c7, c7, 7)
        self.branch7x7dbl_4 = _col(c7, c7, 7)
        self.branch7x7dbl_5 = _row(c7, w(192), 7)
        self.branch_pool = ConvBN(cin, w(192), 1)
        self.out_channels = 4 * w(192)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = conv(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], dim=1)


class BlockD(nn.Module):
    """17 -> 8 reduction: 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 -> 3x3/2 | max-pool 3x3/2."""

    def __init__(self, cin: int, w=int):
        super().__init__()
        self.branch3x3_1 = ConvBN(cin, w(192), 1)
        self.branch3x3_2 = ConvBN(w(192), w(320), 3, stride=2)
        self.branch7x7x3_1 = ConvBN(cin, w(192), 1)
        self.branch7x7x3_2 = _row(w(192), w(192), 7)
        self.branch7x7x3_3 = _col(w(192), w(192), 7)
        self.branch7x7x3_4 = ConvBN(w(192), w(192), 3, stride=2)
        self.out_channels = w(320) + w(192) + cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], dim=1)


class BlockE(nn.Module):
    """8x8 with the 3x3s split into parallel 1x3 and 3x1 outputs; 2048 wide."""

    def __init__(self, cin: int, w=int):
        super().__init__()
        self.branch1x1 = ConvBN(cin, w(320), 1)
        self.branch3x3_1 = ConvBN(cin, w(384), 1)
        self.branch3x3_2a = _row(w(384), w(384), 3)
        self.branch3x3_2b = _col(w(384), w(384), 3)
        self.branch3x3dbl_1 = ConvBN(cin, w(448), 1)
        self.branch3x3dbl_2 = ConvBN(w(448), w(384), 3, padding=1)
        self.branch3x3dbl_3a = _row(w(384), w(384), 3)
        self.branch3x3dbl_3b = _col(w(384), w(384), 3)
        self.branch_pool = ConvBN(cin, w(192), 1)
        self.out_channels = w(320) + 4 * w(384) + w(192)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(s), self.branch3x3_2b(s),
            self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d),
            self.branch_pool(_avg3(x)),
        ], dim=1)


class AuxClassifier(nn.Module):
    """The training-time auxiliary head on Mixed_6e (768 x 17 x 17)."""

    def __init__(self, cin: int, num_classes: int, w=int):
        super().__init__()
        self.conv0 = ConvBN(cin, w(128), 1)
        self.conv1 = ConvBN(w(128), w(768), 5)
        self.fc = nn.Linear(w(768), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.conv0(F.avg_pool2d(x, 5, stride=3)))
        return self.fc(x.mean(dim=(2, 3)))

# Mixed blocks tapped: first and last of the 35x35 group, the 17x17 group's
# first (the grid reduction), middle and last, and 7b; Mixed_7c pooled is the
# final features.
_TAPS = ("Mixed_5b", "Mixed_5d", "Mixed_6a", "Mixed_6c", "Mixed_6e", "Mixed_7b")


class InceptionV3(nn.Module):
    """Inception v3. ``forward`` gives ImageNet logits when the model has its
    classifier (``num_classes > 0``), else the pooled 2048-d features.
    ``width`` scales every convolution's filters (the blocks get it as
    ``w``, channels -> scaled channels): smaller only in the tiny test
    configuration."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5, width: float = 1.0):
        super().__init__()

        def w(channels: int) -> int:
            return max(1, round(channels * width))

        self.Conv2d_1a_3x3 = ConvBN(3, w(32), 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(w(32), w(32), 3)
        self.Conv2d_2b_3x3 = ConvBN(w(32), w(64), 3, padding=1)
        self.maxpool1 = nn.MaxPool2d(3, stride=2)
        self.Conv2d_3b_1x1 = ConvBN(w(64), w(80), 1)
        self.Conv2d_4a_3x3 = ConvBN(w(80), w(192), 3)
        self.maxpool2 = nn.MaxPool2d(3, stride=2)
        self.Mixed_5b = BlockA(w(192), pool_features=32, w=w)
        self.Mixed_5c = BlockA(self.Mixed_5b.out_channels, pool_features=64, w=w)
        self.Mixed_5d = BlockA(self.Mixed_5c.out_channels, pool_features=64, w=w)
        self.Mixed_6a = BlockB(self.Mixed_5d.out_channels, w=w)
        self.Mixed_6b = BlockC(self.Mixed_6a.out_channels, c7=128, w=w)
        self.Mixed_6c = BlockC(self.Mixed_6b.out_channels, c7=160, w=w)
        self.Mixed_6d = BlockC(self.Mixed_6c.out_channels, c7=160, w=w)
        self.Mixed_6e = BlockC(self.Mixed_6d.out_channels, c7=192, w=w)
        # checkpoint compatibility only; never run
        self.AuxLogits = AuxClassifier(self.Mixed_6e.out_channels, 1000, w=w)
        self.Mixed_7a = BlockD(self.Mixed_6e.out_channels, w=w)
        self.Mixed_7b = BlockE(self.Mixed_7a.out_channels, w=w)
        self.Mixed_7c = BlockE(self.Mixed_7b.out_channels, w=w)
        self.num_features = self.Mixed_7c.out_channels
        self.num_classes = num_classes
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else None
        init_weights(self)

    def reset_classifier(self, num_classes: int = 0) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else None

    def tap_points(self) -> list[tuple[str, str]]:
        return [(name, name) for name in _TAPS]

    def stage_groups(self) -> list[nn.Module]:
        """``[]``: not built of stages of blocks (``last-K`` does not apply)."""
        return []

    def forward_feature_map(self, x: torch.Tensor) -> torch.Tensor:
        for stem in (self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3, self.maxpool1,
                     self.Conv2d_3b_1x1, self.Conv2d_4a_3x3, self.maxpool2):
            x = stem(x)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features, shape (N, 2048)."""
        return self.forward_feature_map(x).mean(dim=(2, 3))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        if self.fc is None:
            return features
        return self.fc(self.dropout(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
