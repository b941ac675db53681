"""The 2012 article's AlexNet (one tower): its profile reproduces the figures
the article's network is known by: about 62.3 M parameters and 1.1 G
multiply-accumulates at 227 px; the convolutions hold about 6 % of the
parameters and do about 95 % of the work."""

from __future__ import annotations

import pytest
import torch

import edgetl
from edgetl.zoo import get_spec
from edgetl.zoo.profile import profile_backbone


def test_profile_matches_the_article():
    prof = profile_backbone("alexnet_2012")
    assert prof.input_size == 227
    assert prof.params == pytest.approx(62.3e6, rel=0.01)
    assert prof.macs == pytest.approx(1.1e9, rel=0.10)
    assert 0.05 <= prof.conv_param_share <= 0.07
    assert prof.conv_mac_share >= 0.9


def test_layout():
    spec = get_spec("alexnet_2012")
    assert spec.default_weights is None
    assert spec.input_spec.image_size == 227 and spec.input_spec.crop_fraction == pytest.approx(227 / 256)
    model = edgetl.create_backbone("alexnet_2012", weights=None)
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256]
    assert all(c.groups == 1 for c in convs)  # single tower: no two-GPU split
    assert sum(isinstance(m, torch.nn.LocalResponseNorm) for m in model.features) == 2
    with torch.no_grad():
        pool5 = model.features(torch.zeros(1, 3, 227, 227))
    assert pool5.shape == (1, 256, 6, 6)  # 9216 inputs to fc6, no resampling at 227 px
