"""Peak training memory of each strategy, predicted before anything runs.

The prediction is measured, not tabulated: the model is built for the
strategy and one image (or one cached prefix row) goes forward and backward
exactly as in training (under ``LeanMode``), counting

- the tensors autograd keeps for the backward pass (per image; times the
  batch size),
- the largest tensor any op produces (the backward holds about two such at
  once: the gradient arriving and the one it passes on),
- the floating-point work of the forward and backward passes.

The peak is then: weights (the whole model stays resident) + gradients,
AdamW's two moments and the early-stopping copy of what trains + the batch +
activations + transient workspace; the caching pass (frozen prefix,
inference only) is a second, usually smaller, peak. Cached outputs live on
disk and are not counted (``cache_disk_mb`` says how much disk they take).
The interpreter's own footprint (Python, torch, numpy: ``idle_mb``) is
reported separately, as the issue asks: it is there whether or not
anything trains."""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field

log = logging.getLogger(__name__)

MB = 1e6
CACHE_BATCH = 8  # images per batch of the caching pass (inference: no need for the training batch)
PROBE_BATCH = 3  # tensors whose first dimension is 3 scale with the batch; the rest do not
# Per-process allocations the counts above cannot see (the autograd graph,
# the allocator's slack, oneDNN's scratch space): measured, see BENCHMARKS.md.
OVERHEAD_MB = 8.0


@dataclass
class Plan:
    strategy: str
    batch_size: int
    estimated_mb: float
    fits: bool | None
    parts_mb: dict = field(default_factory=dict)
    trainable_params: int = 0
    total_params: int = 0
    cache_disk_mb: float = 0.0
    macs_per_epoch: float = 0.0
    cache_macs: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["estimated_mb"] = round(self.estimated_mb, 1)
        d["parts_mb"] = {k: round(v, 2) for k, v in self.parts_mb.items()}
        return d


@dataclass
class Profile:
    """What one sample costs a strategy (batch-independent parts aside)."""
    strategy: str
    weights_bytes: int
    trainable_bytes: int
    buffer_bytes: int
    trainable_params: int
    total_params: int
    saved_bytes: int  # kept for backward, per sample
    saved_fixed_bytes: int  # kept for backward, whatever the batch size (not weights)
    largest_bytes: int  # largest tensor of the training step, per sample
    prefix_largest_bytes: int  # largest tensor of the caching pass, per sample
    input_bytes: int  # one row the suffix reads (image or cached prefix output)
    image_bytes: int
    train_flops: float  # forward + backward of the suffix, per sample
    eval_flops: float
    prefix_flops: float


def profile_strategy(backbone: str, strategy: str, num_classes: int, input_spec) -> Profile:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    from .lean import LeanMode
    from .net import build_net

    n = PROBE_BATCH

    def per_sample(t) -> bool:
        return t.dim() >= 1 and t.shape[0] == n

    class Largest(TorchDispatchMode):
        """The largest per-sample tensor (first dimension = the probe batch) any op makes."""

        def __init__(self):
            super().__init__()
            self.bytes = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor) and per_sample(t):
                    self.bytes = max(self.bytes, t.untyped_storage().nbytes() // n)
            return out

    net = build_net(backbone, None, strategy, num_classes, input_spec)
    model = net.model
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    param_ptrs |= {b.untyped_storage().data_ptr() for b in model.buffers()}
    image = torch.zeros(n, input_spec.num_channels, input_spec.image_size, input_spec.image_size)
    net.set_mode(False)
    big = Largest()
    with FlopCounterMode(display=False) as fc, big:
        z = net.prefix(image)
    prefix_flops, prefix_largest = fc.get_total_flops(), big.bytes if net.cut != 0 else 0
    z = z.detach().clone()
    net.set_mode(False)  # dropout off: the same work, deterministic
    with FlopCounterMode(display=False) as fc:
        with torch.no_grad():
            net(z)
    eval_flops = fc.get_total_flops()
    saved: dict[int, int] = {}
    fixed: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in param_ptrs:
            kept = saved if per_sample(t) else fixed
            kept[ptr] = max(kept.get(ptr, 0), t.untyped_storage().nbytes())
        return t

    big = Largest()
    net.set_mode(True)
    with FlopCounterMode(display=False) as fc, big:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), LeanMode():
            loss = torch.nn.functional.cross_entropy(net(z), torch.zeros(n, dtype=torch.long))
        loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    return Profile(
        strategy=strategy,
        weights_bytes=sum(p.numel() * 4 for p in model.parameters()) + sum(b.nbytes for b in model.buffers()),
        trainable_bytes=sum(p.numel() * 4 for p in trainable),
        buffer_bytes=sum(b.nbytes for b in model.buffers()),
        trainable_params=sum(p.numel() for p in trainable),
        total_params=sum(p.numel() for p in model.parameters()),
        saved_bytes=sum(saved.values()) // n,
        saved_fixed_bytes=sum(fixed.values()),
        largest_bytes=big.bytes,
        prefix_largest_bytes=prefix_largest,
        input_bytes=z.numel() * 4 // n,
        image_bytes=image.numel() * 4 // n,
        train_flops=float(fc.get_total_flops()) / n,
        eval_flops=float(eval_flops) / n,
        prefix_flops=float(prefix_flops) / n,
    )


def estimate(profile: Profile, batch_size: int, num_train: int, num_val: int, num_images: int,
             max_memory_mb: float | None = None) -> Plan:
    b = batch_size
    parts = {
        "weights": profile.weights_bytes / MB,
        # The checkpoint read from disk before it is copied into the model.
        "loading": profile.weights_bytes / MB,
        "gradients": profile.trainable_bytes / MB,
        "optimizer": 2 * profile.trainable_bytes / MB,
        "best_copy": (profile.trainable_bytes + profile.buffer_bytes) / MB,
        "batch": b * profile.input_bytes / MB,
        "activations": (b * profile.saved_bytes + profile.saved_fixed_bytes) / MB,
        "workspace": 2 * b * profile.largest_bytes / MB,
        "overhead": OVERHEAD_MB,
    }
    if profile.strategy == "head":
        # The head path keeps the features in RAM: all of them, the training
        # rows' copy and its shuffled, standardised copy (heads.fitting).
        parts["features"] = 3 * num_images * profile.input_bytes / MB
    # The early-stopping copy is taken between epochs, when no activations are alive.
    train_peak = (parts["weights"] + parts["loading"] + parts["gradients"] + parts["optimizer"] + parts["overhead"]
                  + parts.get("features", 0.0)
                  + max(parts["best_copy"], parts["batch"] + parts["activations"] + parts["workspace"]))
    cb = min(b, CACHE_BATCH)
    cache_peak = (2 * profile.weights_bytes + cb * (profile.image_bytes + profile.input_bytes
                                                 + 3 * profile.prefix_largest_bytes)) / MB + OVERHEAD_MB
    parts["caching_pass"] = cache_peak
    peak = max(train_peak, cache_peak)
    cached = profile.input_bytes != profile.image_bytes or profile.prefix_flops > 0
    return Plan(
        strategy=profile.strategy, batch_size=b, estimated_mb=peak,
        fits=None if max_memory_mb is None else peak <= max_memory_mb,
        parts_mb=parts, trainable_params=profile.trainable_params, total_params=profile.total_params,
        cache_disk_mb=(num_images * profile.input_bytes / MB) if cached else num_images * profile.image_bytes / MB,
        macs_per_epoch=(profile.train_flops * num_train + profile.eval_flops * num_val) / 2,
        cache_macs=profile.prefix_flops * num_images / 2,
    )


def warm_up() -> None:
    """One tiny training step: loads what torch loads on first use (the
    autograd engine and its threads, oneDNN's kernels, the OpenMP pool).
    That is the framework's footprint, there before any model trains, so it
    belongs to ``idle_mb``, not to a strategy's estimate."""
    import torch

    from .lean import LeanMode

    conv = torch.nn.Conv2d(3, 8, 3, groups=1)
    dw = torch.nn.Conv2d(8, 8, 3, groups=8, bias=False)
    dw.weight.requires_grad_(False)
    opt = torch.optim.AdamW(conv.parameters())
    with LeanMode():
        loss = torch.nn.functional.relu6(dw(torch.nn.functional.relu6(conv(torch.randn(2, 3, 16, 16))))).mean()
    loss.backward()
    opt.step()


def idle_mb() -> float:
    """This process's resident memory now (Python + the libraries loaded)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


def plan(backbone: str, num_images: int, num_classes: int, input_spec, batch_size: int,
         strategies=None, max_memory_mb: float | None = None, val_split: float = 0.2) -> list[Plan]:
    """One ``Plan`` per strategy (default: ``CANDIDATES`` + ``scratch``),
    at ``batch_size``; ``fits`` when ``max_memory_mb`` is given."""
    from ..errors import DataError
    from . import CANDIDATES

    asked = strategies
    strategies = strategies or CANDIDATES + ("scratch",)
    num_val = int(round(num_images * val_split))
    out = []
    for s in strategies:
        try:
            prof = profile_strategy(backbone, s, num_classes, input_spec)
        except DataError:
            if asked:  # named by the user: say why not
                raise
            continue  # last-K on a family without stages (VGG, AlexNet, GoogLeNet): not a candidate
        out.append(estimate(prof, batch_size, num_images - num_val, num_val, num_images, max_memory_mb))
    return out


def fit_batch(profile: Profile, batch_size: int, max_memory_mb: float, **counts) -> Plan | None:
    """The largest batch size <= ``batch_size`` (halving, then 1) whose plan
    fits ``max_memory_mb``; None when not even one image fits."""
    b = batch_size
    while True:
        p = estimate(profile, b, max_memory_mb=max_memory_mb, **counts)
        if p.fits:
            return p
        if b == 1:
            return None
        b = max(1, b // 2)


def fine_tune_size(default: int, native: int | None) -> int:
    """Input size when none is given: the smallest of the search ladder
    (default, halved, ... 32) that keeps the images' own resolution; a
    network whose weights learn adapts to the scale, and each halving is a
    quarter of the work."""
    from ..search import search_sizes

    ladder = sorted(search_sizes(default))
    if not native:
        return default
    return next((s for s in ladder if s >= native), default)


def choose(backbone: str, strategy: str, num_images: int, num_classes: int, input_spec, batch_size: int,
           max_memory_mb: float | None, val_split: float):
    """(strategy, plan) to run: ``auto`` resolved; the batch size lowered
    (halving, never below 1) until the plan fits ``max_memory_mb``. Refuses
    with one line naming the strategies that fit when the asked one cannot."""
    from ..errors import DataError
    from . import auto_candidates, parse_strategy

    num_val = max(1, int(round(num_images * val_split)))
    counts = {"num_train": num_images - num_val, "num_val": num_val, "num_images": num_images}
    kind, _ = parse_strategy(strategy)
    order = auto_candidates(num_images / max(1, num_classes)) if kind == "auto" else (strategy,)
    profiles = {}
    for s in order:
        try:
            profiles[s] = profile_strategy(backbone, s, num_classes, input_spec)
        except DataError:
            if kind != "auto":
                raise
            continue  # last-K on a family without stages
        if max_memory_mb is None:
            return s, estimate(profiles[s], batch_size, max_memory_mb=None, **counts)
        plan = fit_batch(profiles[s], batch_size, max_memory_mb, **counts)
        if plan is not None:
            if plan.batch_size < batch_size:
                log.info("--max-memory-mb %g: batch size lowered from %d to %d for %s", max_memory_mb,
                         batch_size, plan.batch_size, s)
            return s, plan
    what = "auto (" + ", ".join(order) + ")" if kind == "auto" else strategy
    need = estimate(profiles[list(profiles)[-1]], 1, **counts).estimated_mb
    raise DataError(
        f"--strategy {what} needs {need:.0f} MB even at batch size 1, over --max-memory-mb {max_memory_mb:g}; "
        + _fitting(backbone, num_classes, input_spec, batch_size, max_memory_mb, profiles, counts))


def _fitting(backbone, num_classes, input_spec, batch_size, max_memory_mb, profiles, counts) -> str:
    """'strategies that fit: ...' for a refusal, or what to change when none does."""
    from ..errors import DataError
    from . import CANDIDATES

    fitting = []
    for s in CANDIDATES + ("scratch",):
        try:
            prof = profiles.get(s) or profile_strategy(backbone, s, num_classes, input_spec)
        except DataError:
            continue
        plan = fit_batch(prof, batch_size, max_memory_mb, **counts)
        if plan is not None:
            fitting.append(f"{s} (batch {plan.batch_size}, {plan.estimated_mb:.0f} MB)")
    return (f"strategies that fit: {', '.join(fitting)}" if fitting else
            "no strategy fits: raise --max-memory-mb or lower --image-size")
