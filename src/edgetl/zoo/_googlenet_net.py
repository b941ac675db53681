"""The model code of the googlenet family (torch): inception modules and the
``GoogLeNet`` class.

Its backbones are registered, as data, by ``zoo/googlenet.py``, which imports
this module only when a model is built: reading a spec (``get_spec``,
``list_backbones``, ``resolve_weights``) must not import torch, which a
warm ``edgetl train`` (cached ONNX graphs, numpy heads) never needs."""

from __future__ import annotations

import torch
from torch import nn

from ._layers import ConvBN, init_weights


class InceptionModule(nn.Module):
    """Four branches; output width ``c1 + c3 + c5 + pool``."""

    def __init__(self, cin: int, c1: int, c3_reduce: int, c3: int, c5_reduce: int, c5: int, pool: int):
        super().__init__()
        self.branch1 = ConvBN(cin, c1, 1)
        self.branch2 = nn.Sequential(ConvBN(cin, c3_reduce, 1), ConvBN(c3_reduce, c3, 3, padding=1))
        self.branch3 = nn.Sequential(ConvBN(cin, c5_reduce, 1), ConvBN(c5_reduce, c5, 3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True), ConvBN(cin, pool, 1))
        self.out_channels = c1 + c3 + c5 + pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)


# (module name, in, 1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5", pool projection), in order;
# "pool" marks the ceil-mode max-pools between groups (kernel, stride).
_LAYOUT = (
    ("inception3a", 192, 64, 96, 128, 16, 32, 32),
    ("inception3b", 256, 128, 128, 192, 32, 96, 64),
    ("maxpool3", 3, 2),
    ("inception4a", 480, 192, 96, 208, 16, 48, 64),
    ("inception4b", 512, 160, 112, 224, 24, 64, 64),
    ("inception4c", 512, 128, 128, 256, 24, 64, 64),
    ("inception4d", 512, 112, 144, 288, 32, 64, 64),
    ("inception4e", 528, 256, 160, 320, 32, 128, 128),
    ("maxpool4", 2, 2),
    ("inception5a", 832, 256, 160, 320, 32, 128, 128),
    ("inception5b", 832, 384, 192, 384, 48, 128, 128),
)

# Inception modules tapped: both of group 3, every other one of group 4 (its
# end, 4e, included), 5a; 5b pooled is the final features.
_TAPS = ("inception3a", "inception3b", "inception4a", "inception4c", "inception4e", "inception5a")


class GoogLeNet(nn.Module):
    """GoogLeNet without auxiliary heads. ``forward`` gives ImageNet logits
    when the model has its classifier (``num_classes > 0``), else the pooled
    1024-d features. ``width`` scales every convolution's filters (smaller
    only in the tiny test configuration)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2, width: float = 1.0):
        super().__init__()

        def w(channels: int) -> int:
            return max(1, round(channels * width))

        self.conv1 = ConvBN(3, w(64), 7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = ConvBN(w(64), w(64), 1)
        self.conv3 = ConvBN(w(64), w(192), 3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self._body: list[str] = []
        channels = w(192)
        for entry in _LAYOUT:
            if entry[0].startswith("maxpool"):
                name, kernel, stride = entry
                setattr(self, name, nn.MaxPool2d(kernel, stride=stride, ceil_mode=True))
            else:
                name, _, *widths = entry  # the table's input width is the previous module's output
                module = InceptionModule(channels, *map(w, widths))
                setattr(self, name, module)
                channels = module.out_channels
            self._body.append(name)
        self.num_features = channels
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
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        for name in self._body:
            x = getattr(self, name)(x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features, shape (N, 1024)."""
        return self.forward_feature_map(x).mean(dim=(2, 3))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        if self.fc is None:
            return features
        return self.fc(self.dropout(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
