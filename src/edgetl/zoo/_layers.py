"""Building blocks shared by several family files (not a family itself)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ConvBN(nn.Module):
    """Conv (no bias) -> BatchNorm(eps=1e-3) -> ReLU: GoogLeNet's and
    Inception v3's unit (module names conv/bn as in their checkpoints)."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def normal_(weight: torch.Tensor, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """``nn.init.normal_``, skipped on the meta device (a model built there
    only to be measured): torch draws meta normals through ``torch._refs``,
    whose first use imports ``torch._dynamo``, about a second per process."""
    return weight if weight.is_meta else nn.init.normal_(weight, mean, std)


def kaiming_normal_(weight: torch.Tensor, **kwargs) -> torch.Tensor:
    """``nn.init.kaiming_normal_``, skipped on the meta device (see :func:`normal_`)."""
    return weight if weight.is_meta else nn.init.kaiming_normal_(weight, **kwargs)


def init_weights(model: nn.Module, uniform_linear_bias: bool = False) -> None:
    """Kaiming-normal convolutions, unit BatchNorm, uniform fully-connected
    weights (bias zero, or uniform like PyTorch's default)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.in_features)
            nn.init.uniform_(m.weight, -bound, bound)
            if uniform_linear_bias:
                nn.init.uniform_(m.bias, -bound, bound)
            else:
                nn.init.zeros_(m.bias)
