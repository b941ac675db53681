"""One-channel input for any backbone, exactly.

A grey image repeated on three channels and normalised per channel is
``x_c = a_c * x + b_c`` of the one-channel normalised image ``x`` (with
``a_c = s / s_c`` and ``b_c = (m - m_c) / s_c``). The first convolution is
linear, so folding its RGB weights gives the same output from one channel:
``conv(W, [x_c]) = conv(sum_c a_c W_c, x) + conv(sum_c b_c W_c, 1)``. The second
term does not depend on the image: it is computed once per input size (a
constant map that zero padding makes differ at the borders) and added, so the
first layer does a third of the work. For backbones normalised the same on
every channel (EfficientNet-Lite) ``b_c = 0`` and the map vanishes.

The torch module, ``GrayStem``, is in ``_grayscale_stem`` (imported by
``fold_to_grayscale``): ``gray_input_spec`` imports no torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..data.input_spec import InputSpec

if TYPE_CHECKING:
    from torch import nn


def gray_input_spec(rgb: InputSpec) -> InputSpec:
    """The one-channel spec: mean and std averaged over the RGB channels."""
    mean = sum(rgb.mean) / len(rgb.mean)
    std = sum(rgb.std) / len(rgb.std)
    return rgb.replace(channels="L", mean=(mean,), std=(std,))


def fold_to_grayscale(model: nn.Module, stem_conv: str, rgb: InputSpec, gray: InputSpec) -> nn.Module:
    """Replace ``model``'s first convolution (module path ``stem_conv``) in
    place so the model takes ``gray``-normalised one-channel input and
    computes exactly what it computes on the grey image repeated as RGB."""
    import torch
    from torch import nn

    from ._grayscale_stem import GrayStem

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


def __getattr__(name: str):
    """``GrayStem`` lives in ``_grayscale_stem`` (torch); importing it from here still works (PEP 562)."""
    if name == "GrayStem":
        from ._grayscale_stem import GrayStem

        return GrayStem
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
