"""The model code of the vgg family (torch): the ``VGG`` class, built from a
configuration table.

Its backbones are registered, as data, by ``zoo/vgg.py``, which imports
this module only when a model is built: reading a spec (``get_spec``,
``list_backbones``, ``resolve_weights``) must not import torch, which a
warm ``edgetl train`` (cached ONNX graphs, numpy heads) never needs."""

from __future__ import annotations

import torch
from torch import nn

from ._layers import kaiming_normal_, normal_


_HIDDEN = 4096  # fc6/fc7 width of the published models


class VGG(nn.Module):
    """``features`` (conv stack), ``avgpool`` (adaptive 7x7: an identity at
    224 px), ``classifier`` = fc6, ReLU, Dropout, fc7, ReLU, Dropout, fc8.
    ``forward_features`` gives the 4096-wide fc7 activations (after ReLU).
    ``width`` scales the convolutions' channels and ``hidden`` is the fc6/fc7
    width: smaller only in the tiny test configuration."""

    def __init__(self, config: tuple, batch_norm: bool = False, num_classes: int = 1000, dropout: float = 0.5,
                 width: float = 1.0, hidden: int = _HIDDEN):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for entry in config:
            if entry == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            entry = max(1, round(entry * width))
            layers.append(nn.Conv2d(channels, entry, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(entry))
            layers.append(nn.ReLU(inplace=True))
            channels = entry
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.num_features = hidden
        self.num_classes = num_classes
        self.classifier = nn.Sequential(
            nn.Linear(channels * 7 * 7, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            self._final_layer(num_classes),
        )
        self._init_weights()

    def _final_layer(self, num_classes: int) -> nn.Module:
        if not num_classes:
            return nn.Identity()
        layer = nn.Linear(self.num_features, num_classes)
        normal_(layer.weight, 0.0, 0.01)
        nn.init.zeros_(layer.bias)
        return layer

    def _init_weights(self) -> None:
        """As torchvision trains VGG from scratch: He-normal (fan-out)
        convolutions, N(0, 0.01) fully-connected weights, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def reset_classifier(self, num_classes: int = 0) -> None:
        self.num_classes = num_classes
        self.classifier[6] = self._final_layer(num_classes)

    def tap_points(self) -> list[tuple[str, str]]:
        """After each max-pool, named ``pool1``..``pool5`` by block; ``pool1``
        follows the stem's convolutions only and is skipped."""
        pools = [i for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)]
        return [(f"pool{k + 1}", f"features.{i}") for k, i in enumerate(pools)][1:]

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
