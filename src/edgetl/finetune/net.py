"""A backbone set up for one strategy: which parameters learn, where the
frozen prefix ends (its output is cached), and the forward of the suffix."""

from __future__ import annotations

import torch
from torch import nn

from ..data.input_spec import InputSpec
from . import parse_strategy


def _head_parameters(model: nn.Module) -> set[int]:
    """ids of the parameters ``forward_head`` uses (found by one backward)."""
    was = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(True)
        p.grad = None
    model.forward_head(torch.zeros(1, model.num_features)).sum().backward()
    used = {id(p) for p in model.parameters() if p.grad is not None}
    for p, r in zip(model.parameters(), was):
        p.grad = None
        p.requires_grad_(r)
    return used


class Net(nn.Module):
    """``model`` (a zoo backbone with a ``num_classes`` classifier) trained
    by ``strategy``. ``prefix(x)`` is the frozen part (run once, cached),
    ``forward(z)`` the trainable rest: logits from a cached prefix output."""

    def __init__(self, model: nn.Module, strategy: str, pretrained: bool = True):
        super().__init__()
        self.model = model
        self.strategy = strategy
        kind, k = parse_strategy(strategy)
        self.kind = kind
        head = _head_parameters(model)
        if kind == "last":
            from .stages import feature_stages

            stages = feature_stages(model)
            if k >= len(stages):
                from ..errors import DataError

                raise DataError(f"--strategy {strategy}: {type(model).__name__} has {len(stages)} block groups; "
                                f"use last-1 .. last-{len(stages) - 1}, or full")
            self.stages = nn.ModuleList(stages)
            self.cut = len(stages) - k
        else:
            self.stages = None
            self.cut = {"head": -1}.get(kind, 0)  # -1: the whole base is frozen (features cached)
        trainable = set(head)
        if kind in ("full", "scratch"):
            trainable = {id(p) for p in model.parameters()}
        elif kind == "bias":
            trainable |= {id(p) for n, p in model.named_parameters() if n.endswith("bias")}
        elif kind == "last":
            trainable |= {id(p) for s in self.stages[self.cut:] for p in s.parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) in trainable)
        self.head_ids = head
        self.pretrained = pretrained
        self.train_bn = kind == "scratch"  # random statistics must be learned; pretrained ones stay frozen

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def param_groups(self, lr: float) -> list[dict]:
        """Pretrained weights that train move at a tenth of the rate of the
        new head and of biases (which start from values meant for ImageNet)."""
        slow, fast = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            pretrained_weight = self.pretrained and id(p) not in self.head_ids and not name.endswith("bias")
            (slow if pretrained_weight else fast).append(p)
        return [g for g in ({"params": fast, "lr": lr}, {"params": slow, "lr": lr * 0.1}) if g["params"]]

    def set_mode(self, training: bool) -> "Net":
        """BatchNorm in eval mode unless training from scratch; dropout on in training."""
        self.model.eval()
        for m in self.model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train(training and self.train_bn)
            elif isinstance(m, nn.Dropout):
                m.train(training)
        return self

    @torch.no_grad()
    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen prefix's output for a batch of images (cached)."""
        if self.cut == -1:
            return self.model.forward_features(x)
        for stage in (self.stages[: self.cut] if self.stages is not None else []):
            x = stage(x)
        return x

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.cut == -1:
            return self.model.forward_head(z)
        if self.stages is None:
            return self.model(z)
        for stage in self.stages[self.cut:]:
            z = stage(z)
        return self.model.forward_head(self.model.pool_feature_map(z))

    def prefix_shape_from(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one cached row for images of shape (C, H, W)."""
        if self.cut == 0:
            return tuple(image_shape)
        self.set_mode(False)
        return tuple(self.prefix(torch.zeros(1, *image_shape)).shape[1:])


def build_net(backbone: str, weights, strategy: str, num_classes: int, input_spec: InputSpec) -> Net:
    """The zoo backbone ``backbone`` with a fresh ``num_classes`` classifier,
    folded to one input channel when ``input_spec`` is grey, set up for
    ``strategy`` (``scratch``: random weights, seeded)."""
    from ..zoo import create_backbone, get_spec

    kind, _ = parse_strategy(strategy)
    pretrained = kind != "scratch"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = create_backbone(backbone, weights=weights if pretrained else None, num_classes=num_classes)
    if input_spec.channels == "L":
        from ..zoo.grayscale import fold_to_grayscale

        spec = get_spec(backbone)
        fold_to_grayscale(model, spec.stem_conv, spec.input_spec, input_spec)
    return Net(model, strategy, pretrained)
