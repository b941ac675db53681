"""One-channel input for any backbone, exactly.

A grey image repeated on three channels and normalised per channel is
``x_c = a_c * x + b_c`` of the one-channel normalised image ``x`` (with
``a_c = s / s_c`` and ``b_c = (m - m_c) / s_c``). The first convolution is
linear, so folding its RGB weights gives the same output from one channel:
``conv(W, [x_c]) = conv(sum_c a_c W_c, x) + conv(sum_c b_c W_c, 1)``. The second
term does not depend on the image: it is computed once per input size (a
constant map that zero padding makes differ at the borders) and added, so the
first layer does a third of the work. For backbones normalised the same on
every channel (EfficientNet-Lite) ``b_c = 0`` and the map vanishes."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..data.input_spec import InputSpec


def gray_input_spec(rgb: InputSpec) -> InputSpec:
    """The one-channel spec: mean and std averaged over the RGB channels."""
    mean = sum(rgb.mean) / len(rgb.mean)
    std = sum(rgb.std) / len(rgb.std)
    return rgb.replace(channels="L", mean=(mean,), std=(std,))


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


def fold_to_grayscale(model: nn.Module, stem_conv: str, rgb: InputSpec, gray: InputSpec) -> nn.Module:
    """Replace ``model``'s first convolution (module path ``stem_conv``) in
    place so the model takes ``gray``-normalised one-channel input and
    computes exactly what it computes on the grey image repeated as RGB."""
    conv = model.get_submodule(stem_conv)
    if not isinstance(conv, nn.Conv2d) or conv.in_channels != 3 or conv.groups != 1:
        raise ValueError(f"{stem_conv} is not a 3-channel convolution; cannot fold it to one channel")
    m_c = torch.tensor(rgb.mean, dtype=torch.float32)
    s_c = torch.tensor(rgb.std, dtype=torch.float32)
    scale = gray.std[0] / s_c
    offset = (gray.mean[0] - m_c) / s_c
    parent_path, _, attr = stem_conv.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attr, GrayStem(conv, scale, offset))
    return model
