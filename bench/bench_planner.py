"""The memory planner against measured peaks (issue 5), and the training
memory of each strategy at equal batch and input size.

For each (input size, batch size) and strategy, a fresh process
(``python -m edgetl.finetune.measure``) trains EfficientNet-Lite0 for one
epoch on 200 random images (memory does not depend on pixel values) and
reports the planner's estimate and the measured peak: the process's peak
resident memory (VmHWM, reset after a warm-up training step) above its idle
footprint (Python + torch, reported as ``idle_mb``).

Run from the repository root (about 10 minutes on 2 cores)::

    python bench/bench_planner.py --out-json /tmp/benchlogs/planner.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

STRATEGIES = ("head", "bias", "last-1", "last-3", "full", "scratch")
GRID = ((32, 64), (64, 32), (224, 16))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-json", default="/tmp/benchlogs/planner.json")
    ap.add_argument("--images", type=int, default=200)
    a = ap.parse_args(argv)
    rows = []
    for size, batch in GRID:
        for s in STRATEGIES:
            out = subprocess.run([sys.executable, "-m", "edgetl.finetune.measure", "--strategy", s, "--image-size",
                                  str(size), "--batch-size", str(batch), "--images", str(a.images)],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{size} px, batch {batch}, {s}: planner {r['estimated_mb']} MB, measured {r['measured_mb']} MB "
                  f"(ratio {r['ratio']}), idle {r['idle_mb']} MB", flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(a.out_json)), exist_ok=True)
    with open(a.out_json, "w") as fh:
        json.dump(rows, fh, indent=2)
    print("\n| px | batch | strategy | planner MB | measured MB | ratio | vs full (measured) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        full = next(f for f in rows if f["image_size"] == r["image_size"] and f["strategy"] == "full")
        print(f"| {r['image_size']} | {r['batch_size']} | {r['strategy']} | {r['estimated_mb']:.0f} | "
              f"{r['measured_mb']:.0f} | {r['ratio']:.2f} | {full['measured_mb'] / r['measured_mb']:.1f}x less |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
