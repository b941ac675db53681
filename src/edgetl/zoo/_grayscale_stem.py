"""The torch module of ``zoo.grayscale``: ``GrayStem``, the folded first
convolution. Kept apart so ``gray_input_spec`` (read by a warm ``edgetl
train``, which needs no torch) imports no torch."""

from __future__ import annotations

import copy

import torch
from torch import nn


class GrayStem(nn.Module):
    def __init__(self, conv: nn.Conv2d, scale: torch.Tensor, offset: torch.Tensor):
        super().__init__()
        with torch.no_grad():
            self.conv = copy.deepcopy(conv)
            self.conv.in_channels = 1
            self.conv.weight = nn.Parameter((conv.weight * scale[None, :, None, None]).sum(1, keepdim=True))
            self.offset = None
            if bool((offset != 0).any()):
                self.offset = copy.deepcopy(conv)
                self.offset.in_channels = 1
                self.offset.bias = None
                self.offset.weight = nn.Parameter(
                    (conv.weight * offset[None, :, None, None]).sum(1, keepdim=True), requires_grad=False
                )
        self._maps: dict[tuple[int, int], torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.offset is None:
            return y
        key = (int(x.shape[-2]), int(x.shape[-1]))
        offset_map = self._maps.get(key)
        if offset_map is None:
            with torch.no_grad():
                ones = torch.ones(1, 1, *key, dtype=x.dtype, device=x.device)
                # .forward, not __call__: a constant, not part of the per-image work
                offset_map = self.offset.forward(ones)
            self._maps[key] = offset_map
        return y + offset_map
