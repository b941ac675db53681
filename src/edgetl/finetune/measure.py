"""Measure one strategy's training peak memory, to check the planner.

``python -m edgetl.finetune.measure --strategy full --image-size 64 ...``
trains for one epoch on random images (memory does not depend on pixel
values) and prints JSON: the planner's estimate and the measured peak — the
process's peak resident memory (Linux ``VmHWM``, reset just before the
model is built) minus its resident memory at that moment (the idle
footprint of Python + torch, reported separately as ``idle_mb``)."""

from __future__ import annotations

import argparse
import json
import os
import tempfile


def _status(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1000.0  # kB -> MB (1e6 bytes)
    raise RuntimeError(field)


def measure(backbone: str, strategy: str, image_size: int, batch_size: int, images: int, classes: int,
            channels: int = 3, epochs: int = 1) -> dict:
    import numpy as np

    from ..zoo import get_spec
    from .engine import cache_prefix, finetune
    from .net import build_net
    from .planner import estimate, profile_strategy, warm_up
    from .store import RowStore

    spec = get_spec(backbone).input_spec.replace(image_size=image_size)
    if channels == 1:
        from ..zoo.grayscale import gray_input_spec

        spec = gray_input_spec(spec)
    n_val = max(1, images // 5)
    rng = np.random.default_rng(0)
    y = rng.integers(0, classes, images).astype(np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        store = RowStore(os.path.join(tmp, "images.f32"), (spec.num_channels, image_size, image_size), images)
        w = store.writer()
        for start in range(0, images, 64):
            w.write(rng.standard_normal((min(64, images - start),) + store.shape, dtype=np.float32))
        w.finish()
        warm_up()
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM to the current RSS
        idle = _status("VmRSS")
        net = build_net(backbone, "default", strategy, classes, spec)
        cached = cache_prefix(net, store, tmp)
        cache_peak = _status("VmHWM") - idle
        result = finetune(net, cached, y, np.arange(n_val, images), np.arange(n_val), epochs=epochs,
                          batch_size=batch_size, learning_rate=1e-3, patience=epochs, seed=0, state_dir=tmp,
                          config={"measure": True})
        peak = _status("VmHWM") - idle
    # The estimate after the measurement: memory the probe frees stays in the
    # allocator's heap and would hide part of the training's peak.
    plan = estimate(profile_strategy(backbone, strategy, classes, spec), batch_size, images - n_val, n_val, images)
    return {"backbone": backbone, "strategy": strategy, "image_size": image_size, "batch_size": batch_size,
            "images": images, "estimated_mb": round(plan.estimated_mb, 1), "measured_mb": round(peak, 1),
            "caching_pass_measured_mb": round(cache_peak, 1), "idle_mb": round(idle, 1),
            "ratio": round(plan.estimated_mb / peak, 3) if peak > 0 else None,
            "parts_mb": plan.to_dict()["parts_mb"], "train_cpu_s": round(result.timings["train_cpu_s"], 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--strategy", required=True)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--channels", type=int, default=3, choices=[1, 3])
    a = ap.parse_args(argv)
    print(json.dumps(measure(a.backbone, a.strategy, a.image_size, a.batch_size, a.images, a.classes,
                             a.channels)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
