"""VGG (Simonyan & Zisserman 2014): stacks of 3x3 convolutions (padding 1)
separated by 2x2 max-pooling, then three fully-connected layers.

Configurations A, B, D and E of the article are VGG-11, -13, -16 and -19; the
``_bn`` variants put a BatchNorm after every convolution. Module names and
indices (``features.N``, ``avgpool``, ``classifier.0/3/6``) match
torchvision's published ImageNet checkpoints, which load strictly.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.input_spec import InputSpec
from ._layers import kaiming_normal_, normal_
from .registry import BackboneSpec, RemoteWeights, register_backbone

# Output channels of each 3x3 convolution, "M" a 2x2/2 max-pool (article, table 1).
_CONFIGS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}

# name: (depth, batch norm, torchvision weights file, published params, published ImageNet top-1)
_MODELS = {
    "vgg11": (11, False, "vgg11-8a719046.pth", 132_863_336, 69.020),
    "vgg13": (13, False, "vgg13-19584684.pth", 133_047_848, 69.928),
    "vgg16": (16, False, "vgg16-397923af.pth", 138_357_544, 71.592),
    "vgg19": (19, False, "vgg19-dcbb9e9d.pth", 143_667_240, 72.376),
    "vgg11_bn": (11, True, "vgg11_bn-6002323d.pth", 132_868_840, 70.370),
    "vgg13_bn": (13, True, "vgg13_bn-abd245e5.pth", 133_053_736, 71.586),
    "vgg16_bn": (16, True, "vgg16_bn-6c64b313.pth", 138_365_992, 73.360),
    "vgg19_bn": (19, True, "vgg19_bn-c79401a0.pth", 143_678_248, 74.218),
}

_HIDDEN = 4096


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


def _make_builder(depth: int, batch_norm: bool):
    def build(num_classes: int = 1000, width: float = 1.0, hidden: int = _HIDDEN) -> VGG:
        return VGG(_CONFIGS[depth], batch_norm, num_classes, width=width, hidden=hidden)

    return build


# The published files' sizes in MiB (torchvision's _file_size): 'weights fetch' stops just above.
_FILE_MB = {"vgg11-8a719046.pth": 506.84, "vgg13-19584684.pth": 507.545, "vgg16-397923af.pth": 527.796,
            "vgg19-dcbb9e9d.pth": 548.051, "vgg11_bn-6002323d.pth": 506.881, "vgg13_bn-abd245e5.pth": 507.59,
            "vgg16_bn-6c64b313.pth": 527.866, "vgg19_bn-c79401a0.pth": 548.143}

for _name, (_depth, _bn, _file, _params, _top1) in _MODELS.items():
    register_backbone(
        BackboneSpec(
            name=_name,
            family="vgg",
            builder=_make_builder(_depth, _bn),
            input_spec=InputSpec(image_size=224, crop_fraction=0.875, mean=(123.675, 116.28, 103.53),
                                 std=(58.395, 57.12, 57.375)),
            num_features=_HIDDEN,
            num_params=_params,
            default_weights=RemoteWeights(url=f"https://download.pytorch.org/models/{_file}", filename=_file,
                                          sha256=_file.rsplit("-", 1)[1].split(".")[0], size_mb=_FILE_MB[_file]),
            description=(f"VGG-{_depth}{' with batch norm' if _bn else ''}: 3x3 convolutions, three "
                         "fully-connected layers; fc7 features; large (mostly in fc6)"),
            head_prefix="classifier.6.",
            stem_conv="features.0",
            top1=_top1,
            min_image_size=32,
            tiny={"width": 1 / 16, "hidden": 64},
        )
    )
