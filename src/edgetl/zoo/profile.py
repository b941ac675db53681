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


def _mac_hooks(model, totals: dict) -> list:
    """Forward hooks adding each convolution's and fully-connected layer's
    MACs (batch 1) to ``totals["conv"]`` / ``totals["fc"]``; returns the handles."""
    from torch import nn

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
    return handles


def count_macs(model, input_size: int, in_channels: int = 3) -> tuple[int, int]:
    """(conv MACs, fully-connected MACs) of one forward pass at batch 1.

    ``model`` may live on the meta device."""
    import torch

    totals = {"conv": 0, "fc": 0}
    handles = _mac_hooks(model, totals)
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


@dataclass(frozen=True)
class TapProfile:
    """One tap point of a backbone (``"final"`` is ``forward_features``)."""

    name: str
    module: str  # module path; "" for "final"
    dim: int  # width of the pooled features
    map_size: tuple[int, int]  # (H, W) of the map pooled; (1, 1) for "final"
    macs: int  # conv + fully-connected MACs of everything up to and including the tap, batch 1


def profile_taps(name: str, input_size: int | None = None, channels: int = 3) -> list[TapProfile]:
    """Every tap of backbone ``name``, earliest first, ``"final"`` last, with
    the MACs spent to reach it (the running total when the tap module's
    forward hook fires, on the meta device: nothing is computed).
    ``channels=1`` counts the grey-folded stem (a third of its RGB work)."""
    import torch

    from ._taps import FINAL, capture, tap_points
    from .registry import get_spec

    spec = get_spec(name)
    size = input_size or spec.input_spec.image_size
    with torch.device("meta"):
        model = spec.builder(num_classes=0)
        if channels != 3:
            stem = model.get_submodule(spec.stem_conv)
            stem.in_channels = channels
            stem.weight = torch.nn.Parameter(
                torch.empty(stem.out_channels, channels // stem.groups, *stem.kernel_size))
    model.eval()
    points = tap_points(model)
    paths = dict(points)
    totals = {"conv": 0, "fc": 0}
    seen: dict[str, tuple[int, tuple[int, int]]] = {}

    def on_tap(tap, output):
        seen[tap] = (totals["conv"] + totals["fc"], tuple(int(s) for s in output.shape[2:4]) or (1, 1))

    handles = _mac_hooks(model, totals)  # registered before the tap hooks: they fire first
    try:
        with torch.no_grad(), capture(model, points, on_tap) as pooled:
            final = model.forward_features(torch.zeros(1, channels, size, size, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    out = [TapProfile(t, paths[t], int(pooled[t].shape[1]), seen[t][1], seen[t][0]) for t, _ in points]
    out.append(TapProfile(FINAL, "", int(final.shape[1]), (1, 1), totals["conv"] + totals["fc"]))
    return out


def tap_macs(name: str, input_size: int | None = None, channels: int = 3) -> dict[str, int]:
    """``{tap: MACs}`` (conv + linear, batch 1) of everything computed up to
    and including each tap, earliest first; ``"final"``: all of
    ``forward_features`` (no classifier)."""
    return {t.name: t.macs for t in profile_taps(name, input_size, channels)}


def tap_dims(name: str, input_size: int | None = None) -> dict[str, int]:
    """``{tap: width of its pooled features}``, earliest first, ``"final"`` last."""
    return {t.name: t.dim for t in profile_taps(name, input_size)}
