"""What a backbone costs: parameters and multiply-accumulates, counted from
the real graph (forward hooks on a model built on PyTorch's ``meta`` device:
shapes flow, nothing is computed, so profiling VGG19 takes milliseconds)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    params: int
    macs: int  # at input_size, batch 1, convolutions + fully-connected layers
    input_size: int
    num_features: int
    conv_params: int
    fc_params: int
    conv_macs: int
    fc_macs: int

    @property
    def conv_param_share(self) -> float:
        return self.conv_params / self.params if self.params else 0.0

    @property
    def fc_param_share(self) -> float:
        return self.fc_params / self.params if self.params else 0.0

    @property
    def conv_mac_share(self) -> float:
        return self.conv_macs / self.macs if self.macs else 0.0

    @property
    def fc_mac_share(self) -> float:
        return self.fc_macs / self.macs if self.macs else 0.0

    def to_dict(self) -> dict:
        out = asdict(self)
        for key in ("conv_param_share", "conv_mac_share", "fc_param_share", "fc_mac_share"):
            out[key] = getattr(self, key)
        return out


def count_macs(model, input_size: int, in_channels: int = 3) -> tuple[int, int]:
    """(conv MACs, fully-connected MACs) of one forward pass at batch 1.

    ``model`` may live on the meta device."""
    import torch
    from torch import nn

    totals = {"conv": 0, "fc": 0}

    def conv_hook(module, inputs, output):
        kh, kw = module.kernel_size
        per_output = (module.in_channels // module.groups) * kh * kw
        totals["conv"] += int(output.numel() // output.shape[0]) * per_output

    def fc_hook(module, inputs, output):
        rows = int(output.numel() // output.shape[-1]) // output.shape[0] if output.dim() > 1 else 1
        totals["fc"] += rows * module.in_features * module.out_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(fc_hook))
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(1, in_channels, input_size, input_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return totals["conv"], totals["fc"]


def profile_backbone(name: str, input_size: int | None = None) -> Profile:
    """Parameters and MACs of backbone ``name`` with its ImageNet classifier."""
    import torch
    from torch import nn

    from .registry import get_spec

    spec = get_spec(name)
    size = input_size or spec.input_spec.image_size
    with torch.device("meta"):
        model = spec.builder(num_classes=spec.num_classes)
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    conv_params = sum(p.numel() for m in model.modules() if isinstance(m, nn.Conv2d) for p in m.parameters(recurse=False))
    fc_params = sum(p.numel() for m in model.modules() if isinstance(m, nn.Linear) for p in m.parameters(recurse=False))
    conv_macs, fc_macs = count_macs(model, size)
    return Profile(name, int(params), conv_macs + fc_macs, size, spec.num_features, int(conv_params), int(fc_params),
                   conv_macs, fc_macs)
