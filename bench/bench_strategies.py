"""Transfer vs fine-tuning vs training from scratch (issue 5): the article's claim, measured.

Fashion-MNIST (``apt-get install dataset-fashion-mnist``), EfficientNet-Lite0
with its packaged ImageNet weights, first convolution folded to one grey
channel (what ``edgetl train`` does for an all-grey folder), all strategies
at the same input size and batch size. For k = 10, 100, 1,000 training
images per class and for the full 60,000: each strategy trains with
``edgetl.finetune`` (the engine behind ``edgetl train --strategy``),
early-stopped on a stratified 10 % of its training images, and is tested on
the official 10,000 test images (never seen). ``head`` fits the standardised
softmax head of ``edgetl.heads`` on the cached features with ``edgetl
train``'s defaults (100 epochs, patience 10), the head path's own trainer;
the others train with AdamW, learning rate 3e-3 (a tenth for pretrained
weights). Every (k, strategy) runs in a
fresh process, which reports

* test accuracy;
* training CPU time (user + system, both cores; the caching pass of a
  frozen prefix included) and wall time;
* peak training memory: the process's peak resident memory (``VmHWM``, reset
  after a warm-up step) above its idle footprint (Python + torch + the data
  set, reported as ``idle_mb``), and the planner's estimate for the same
  run (``estimated_mb``; the ratio checks it within +-25 %).

Run from the repository root (about an hour on 2 cores)::

    python bench/bench_strategies.py --out-json /tmp/benchlogs/strategies.json

``--table-only`` re-prints the table and redraws the plot from the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_foundation import git_state, load_dataset, machine_info  # noqa: E402

BACKBONE = "efficientnet_lite0"
STRATEGIES = ("head", "bias", "last-3", "full", "scratch")
# (k per class or 0 = all, strategies, max epochs, patience, batch size)
RUNS = (
    (10, STRATEGIES, 30, 5, 16),
    (100, STRATEGIES, 20, 4, 32),
    (0, ("head", "last-3", "full"), 3, 2, 64),
    (1000, STRATEGIES, 6, 2, 64),
)
LEARNING_RATE = 3e-3  # the new head and biases; pretrained weights that train: a tenth of it


def _status(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1000.0
    raise RuntimeError(field)


def _fill(store, images: np.ndarray, spec) -> None:
    from PIL import Image

    w = store.writer()
    buf = np.empty((256,) + store.shape, np.float32)
    for start in range(0, len(images), 256):
        chunk = images[start:start + 256]
        for i, img in enumerate(chunk):
            spec.to_array(Image.fromarray(img, "L"), out=buf[i])
        w.write(buf[: len(chunk)])
    w.finish()


def child(k: int, strategy: str, image_size: int, batch_size: int, epochs: int, patience: int,
          out_json: str) -> dict:
    import torch

    from edgetl.data.folder import stratified_split
    from edgetl.finetune.engine import cache_prefix, evaluate, finetune
    from edgetl.finetune.net import build_net
    from edgetl.finetune.planner import estimate, profile_strategy, warm_up
    from edgetl.finetune.store import RowStore
    from edgetl.zoo import get_spec
    from edgetl.zoo.grayscale import gray_input_spec

    xtr, ytr, xte, yte, classes, _ = load_dataset()
    if k:
        rng = np.random.default_rng(0)
        rows = np.sort(np.concatenate([rng.permutation(np.flatnonzero(ytr == c))[:k] for c in range(10)]))
        xtr, ytr = xtr[rows], ytr[rows]
    y = ytr.astype(np.int64)
    train_idx, val_idx = stratified_split(y, 0.1, 0)
    spec = gray_input_spec(get_spec(BACKBONE).input_spec.replace(image_size=image_size))
    stores = os.path.join(os.path.dirname(os.path.abspath(out_json)), "stores")
    os.makedirs(stores, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # The decoded images are shared by every strategy (built once).
        store = RowStore(os.path.join(stores, f"train-k{k}-{image_size}.f32"), (1, image_size, image_size), len(xtr))
        if not store.complete:
            _fill(store, xtr, spec)
        test = RowStore(os.path.join(stores, f"test-{image_size}.f32"), (1, image_size, image_size), len(xte))
        if not test.complete:
            _fill(test, xte, spec)
        warm_up()
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        idle = _status("VmRSS")
        cpu0, wall0 = time.process_time(), time.perf_counter()
        net = build_net(BACKBONE, "default", strategy, 10, spec)
        cached = cache_prefix(net, store, tmp)
        cache_cpu = time.process_time() - cpu0
        if strategy == "head":
            # What 'edgetl train --strategy head' fits on the cached features:
            # the standardised softmax head (heads.softmax), train's defaults.
            from edgetl.heads.softmax import SoftmaxHead

            feats = cached.read(np.arange(cached.rows))
            head = SoftmaxHead(epochs=100, patience=10, learning_rate=1e-3, l2=1e-4, seed=0)
            head.fit(feats[train_idx], y[train_idx], feats[val_idx], y[val_idx], num_classes=10)
            result = type("R", (), {"epochs_run": head.n_epochs_, "best_epoch": head.best_epoch_,
                                    "val_accuracy": float((head.predict(feats[val_idx]) == y[val_idx]).mean())})
        else:
            result = finetune(net, cached, y, train_idx, val_idx, epochs=epochs, batch_size=batch_size,
                              learning_rate=LEARNING_RATE, patience=patience, seed=0, state_dir=tmp,
                              config={"k": k, "strategy": strategy})
        train_cpu, train_wall = time.process_time() - cpu0, time.perf_counter() - wall0
        peak = _status("VmHWM") - idle
        test_dir = os.path.join(tmp, "test")
        os.makedirs(test_dir)
        test_cached = cache_prefix(net, test, test_dir)
        if strategy == "head":
            acc = float((head.predict(test_cached.read(np.arange(len(xte)))) == yte).mean())
        else:
            acc, _, _ = evaluate(net, test_cached, np.arange(len(xte)), yte.astype(np.int64), 256)
    plan = estimate(profile_strategy(BACKBONE, strategy, 10, spec), batch_size, len(train_idx), len(val_idx),
                    len(y))
    macs = plan.macs_per_epoch * result.epochs_run + plan.cache_macs
    return {"k": k or "all", "n_train": len(y), "strategy": strategy, "image_size": image_size,
            "batch_size": batch_size, "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
            "val_accuracy": result.val_accuracy, "test_accuracy": acc, "train_cpu_s": round(train_cpu, 1),
            "cache_cpu_s": round(cache_cpu, 1), "train_wall_s": round(train_wall, 1),
            "peak_mb": round(peak, 1), "estimated_mb": round(plan.estimated_mb, 1),
            "estimate_ratio": round(plan.estimated_mb / peak, 3), "idle_mb": round(idle, 1),
            "trainable_params": plan.trainable_params, "train_macs": macs, "threads": torch.get_num_threads()}


def table(rows: list[dict]) -> str:
    head = ("| k/class | strategy | px | test acc | epochs (best) | train CPU s | wall s | peak MB | planner MB (ratio) "
            "| trainable params | training MACs |")
    out = [head, "|---" * (head.count("|") - 1) + "|"]
    for r in rows:
        out.append(f"| {r['k']} | {r['strategy']} | {r['image_size']} | {r['test_accuracy']:.2%} | {r['epochs_run']} ({r['best_epoch']}) "
                   f"| {r['train_cpu_s']:.0f} | {r['train_wall_s']:.0f} | {r['peak_mb']:.0f} "
                   f"| {r['estimated_mb']:.0f} ({r['estimate_ratio']:.2f}) | {r['trainable_params']:,} "
                   f"| {r['train_macs'] / 1e12:.2f} T |")
    return "\n".join(out)


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for s in STRATEGIES:
        pts = sorted(((r["n_train"], r) for r in rows if r["strategy"] == s and r["image_size"] == 32),
                     key=lambda p: p[0])
        if not pts:
            continue
        n = [p[0] for p in pts]
        axes[0].plot(n, [p[1]["test_accuracy"] * 100 for p in pts], marker="o", label=s)
        axes[1].plot(n, [p[1]["train_cpu_s"] for p in pts], marker="o", label=s)
        axes[2].plot(n, [p[1]["peak_mb"] for p in pts], marker="o", label=s)
    for size in sorted({r["image_size"] for r in rows} - {32}):
        for s in STRATEGIES:
            pts = sorted(((r["n_train"], r) for r in rows if r["strategy"] == s and r["image_size"] == size),
                         key=lambda p: p[0])
            if pts:
                for ax, key in zip(axes, ("test_accuracy", "train_cpu_s", "peak_mb")):
                    scale = 100 if key == "test_accuracy" else 1
                    ax.plot([p[0] for p in pts], [p[1][key] * scale for p in pts], marker="*", ls=":",
                            markersize=10, label=f"{s} @ {size} px")
    for ax, title in zip(axes, ("test accuracy (%)", "training CPU time (s)", "peak training memory (MB)")):
        ax.set_xscale("log")
        ax.set_xlabel("training images")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[1].set_yscale("log")
    axes[2].set_yscale("log")
    axes[0].legend()
    fig.suptitle("Fashion-MNIST, EfficientNet-Lite0 (ImageNet weights), 32 px unless marked: strategies vs data")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-json", default="/tmp/benchlogs/strategies.json")
    ap.add_argument("--plot", default="docs/bench-strategies.png")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--only-k", type=int, nargs="*", help="run only these k (0 = the full set)")
    ap.add_argument("--only", nargs="*", metavar="STRATEGY", help="run only these strategies")
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--child", nargs=5, metavar=("K", "STRATEGY", "SIZE", "EPOCHS", "PATIENCE"))
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args(argv)
    if a.child:
        k, s, size, epochs, patience = a.child
        print(json.dumps(child(int(k), s, int(size), a.batch, int(epochs), int(patience), a.out_json)))
        return 0
    os.makedirs(os.path.dirname(os.path.abspath(a.out_json)), exist_ok=True)
    doc = {"rows": []}
    if os.path.exists(a.out_json):
        with open(a.out_json) as fh:
            doc = json.load(fh)
    if not a.table_only:
        doc.update(git=git_state(), machine=machine_info(), learning_rate=LEARNING_RATE)
        done = {(str(r["k"]), r["strategy"], r["image_size"]) for r in doc["rows"]}
        for k, strategies, epochs, patience, batch in RUNS:
            if a.only_k is not None and k not in a.only_k:
                continue
            for s in strategies:
                if (str(k or "all"), s, a.image_size) in done or (a.only and s not in a.only):
                    continue
                t = time.perf_counter()
                out = subprocess.run([sys.executable, __file__, "--child", str(k), s, str(a.image_size), str(epochs),
                                      str(patience), "--batch", str(batch), "--out-json", a.out_json],
                                     capture_output=True, text=True)
                if out.returncode != 0:
                    print(f"k={k} {s}: FAILED\n{out.stderr[-2000:]}", file=sys.stderr)
                    continue
                row = json.loads(out.stdout.strip().splitlines()[-1])
                doc["rows"].append(row)
                print(f"k={row['k']} {s}: test {row['test_accuracy']:.2%}, {row['train_cpu_s']:.0f} s CPU, "
                      f"{row['train_wall_s']:.0f} s wall, peak {row['peak_mb']:.0f} MB (planner "
                      f"{row['estimated_mb']:.0f}), {time.perf_counter() - t:.0f} s", flush=True)
                tmp = a.out_json + ".tmp"
                with open(tmp, "w") as fh:
                    json.dump(doc, fh, indent=2)
                os.replace(tmp, a.out_json)
    rows = sorted(doc["rows"], key=lambda r: (r["n_train"], r["image_size"] != 32, STRATEGIES.index(r["strategy"])
                                               if r["strategy"] in STRATEGIES else 9))
    print(table(rows))
    plot(rows, a.plot)
    print(f"plot: {a.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
