"""The model code of the alexnet family (torch): the layer tables of both
layouts and the ``AlexNet`` class that builds them.

Its backbones are registered, as data, by ``zoo/alexnet.py``, which imports
this module only when a model is built: reading a spec (``get_spec``,
``list_backbones``, ``resolve_weights``) must not import torch, which a
warm ``edgetl train`` (cached ONNX graphs, numpy heads) never needs."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from ._layers import normal_


@dataclass(frozen=True)
class Conv:
    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 0


@dataclass(frozen=True)
class Pool:  # overlapping max-pooling, 3x3 window, stride 2
    kernel: int = 3
    stride: int = 2


@dataclass(frozen=True)
class LRN:  # local response normalisation across channels
    size: int
    alpha: float  # PyTorch/ONNX convention: the sum of squares is scaled by alpha / size
    beta: float
    k: float


@dataclass(frozen=True)
class AlexNetLayout:
    layers: tuple  # Conv / LRN / Pool entries; every Conv is followed by a ReLU
    pooled: int  # side of the pooled map the classifier sees (6 -> 256 x 6 x 6)
    hidden: int  # width of the two hidden fully-connected layers
    dropout_first: bool  # dropout before each hidden Linear (torchvision) or after its ReLU (2012 article)
    paper_init: bool  # the article's initialisation (N(0, 0.01), some biases 1) instead of PyTorch's default


# torchvision's AlexNet (the single-tower variant of Krizhevsky 2014).
_TORCHVISION = AlexNetLayout(
    layers=(
        Conv(64, 11, 4, 2), Pool(),
        Conv(192, 5, 1, 2), Pool(),
        Conv(384, 3, 1, 1), Conv(256, 3, 1, 1), Conv(256, 3, 1, 1), Pool(),
    ),
    pooled=6, hidden=4096, dropout_first=True, paper_init=False,
)

# The 2012 article, section 3.3: k=2, n=5, alpha=1e-4, beta=0.75 with the
# sum of squares scaled by alpha itself; PyTorch's LocalResponseNorm scales it
# by alpha / n, hence alpha = 5 * 1e-4 here. ReLU, then normalisation, then
# pooling (sections 3.1, 3.3, 3.5).
_PAPER_LRN = LRN(size=5, alpha=5e-4, beta=0.75, k=2.0)
_ARTICLE_2012 = AlexNetLayout(
    layers=(
        Conv(96, 11, 4, 0), _PAPER_LRN, Pool(),
        Conv(256, 5, 1, 2), _PAPER_LRN, Pool(),
        Conv(384, 3, 1, 1), Conv(384, 3, 1, 1), Conv(256, 3, 1, 1), Pool(),
    ),
    pooled=6, hidden=4096, dropout_first=False, paper_init=True,
)


class AlexNet(nn.Module):
    """``features`` (convolutions), ``avgpool`` (adaptive, to the pooled side;
    an identity at the nominal input size), ``classifier`` whose last entry,
    ``classifier.6``, is the final Linear. ``forward_features`` gives the
    4096-wide fc7 activations (after ReLU)."""

    def __init__(self, layout: AlexNetLayout, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        self.layout = layout
        layers: list[nn.Module] = []
        channels = 3
        for entry in layout.layers:
            if isinstance(entry, Conv):
                layers.append(nn.Conv2d(channels, entry.out_channels, entry.kernel, entry.stride, entry.padding))
                layers.append(nn.ReLU(inplace=True))
                channels = entry.out_channels
            elif isinstance(entry, LRN):
                layers.append(nn.LocalResponseNorm(entry.size, alpha=entry.alpha, beta=entry.beta, k=entry.k))
            else:
                layers.append(nn.MaxPool2d(entry.kernel, entry.stride))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((layout.pooled, layout.pooled))
        flat, hidden = channels * layout.pooled * layout.pooled, layout.hidden
        if layout.dropout_first:  # Dropout, fc6, ReLU, Dropout, fc7, ReLU, fc8
            head = [nn.Dropout(dropout), nn.Linear(flat, hidden), nn.ReLU(inplace=True),
                    nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(inplace=True)]
        else:  # fc6, ReLU, Dropout, fc7, ReLU, Dropout, fc8
            head = [nn.Linear(flat, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                    nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        self.num_features = hidden
        self.num_classes = num_classes
        self.classifier = nn.Sequential(*head, self._final_layer(num_classes))
        if layout.paper_init:
            self._init_as_in_article()

    def _final_layer(self, num_classes: int) -> nn.Module:
        if not num_classes:
            return nn.Identity()
        layer = nn.Linear(self.num_features, num_classes)
        if self.layout.paper_init:
            normal_(layer.weight, 0.0, 0.01)
            nn.init.zeros_(layer.bias)
        return layer

    def _init_as_in_article(self) -> None:
        """Section 5: weights N(0, 0.01); biases 1 in the second, fourth and
        fifth convolutions and the hidden fully-connected layers, else 0."""
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        linears = [m for m in self.classifier if isinstance(m, nn.Linear)]
        ones = {id(convs[i]) for i in (1, 3, 4) if i < len(convs)} | {id(m) for m in linears[:2]}
        for module in convs + linears:
            normal_(module.weight, 0.0, 0.01)
            nn.init.constant_(module.bias, 1.0 if id(module) in ones else 0.0)

    def reset_classifier(self, num_classes: int = 0) -> None:
        self.num_classes = num_classes
        self.classifier[6] = self._final_layer(num_classes)

    def tap_points(self) -> list[tuple[str, str]]:
        """After each max-pool (``pool2``, ``pool5``: named after the
        convolution they follow) and after the ReLU of each convolution fed
        straight into another (``conv3``, ``conv4``), so this short network
        has a few taps; ``pool1`` follows the stem convolution only."""
        taps, convs, layers = [], 0, list(self.features)
        for i, m in enumerate(layers):
            if isinstance(m, nn.Conv2d):
                convs += 1
            elif isinstance(m, nn.MaxPool2d):
                taps.append((f"pool{convs}", f"features.{i}"))
            elif isinstance(m, nn.ReLU) and i + 1 < len(layers) and isinstance(layers[i + 1], nn.Conv2d):
                taps.append((f"conv{convs}", f"features.{i}"))
        return taps[1:]

    def stage_groups(self) -> list[nn.Module]:
        """``[]``: not built of stages of blocks (``last-K`` does not apply)."""
        return []

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """fc7 activations, shape (N, num_features)."""
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        for layer in self.classifier[:6]:
            x = layer(x)
        return x

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier[6](features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def scaled(layout: AlexNetLayout, width: float, hidden: int) -> AlexNetLayout:
    """``layout`` with ``width`` times the filters and ``hidden`` fully-connected units."""
    if width == 1.0 and hidden == layout.hidden:
        return layout
    layers = tuple(replace(e, out_channels=max(1, round(e.out_channels * width))) if isinstance(e, Conv) else e
                   for e in layout.layers)
    return replace(layout, layers=layers, hidden=hidden)


# The layouts the family file's specs name.
LAYOUTS = {"torchvision": _TORCHVISION, "article_2012": _ARTICLE_2012}
