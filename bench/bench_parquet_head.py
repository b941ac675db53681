"""The head trained from Parquet features streamed from disk vs in memory (issue 16).

Two parts, each training run in its own child process (peak RSS is the
child's ``ru_maxrss``; the numbers are comparable within one run):

1. **Size: 1,000,000 x 1,280 synthetic features** (10 classes, rows one
   class after another as a folder's extraction writes them; Gaussian class
   means under a ReLU, so features look like pooled activations), written
   as Parquet in row groups of 8,192 rows, once as float32 and once as
   float16 (write time and file size reported). Then the same softmax head
   (``SoftmaxHead`` hyper-parameters, a fixed number of epochs, no early
   stop) is trained three ways:
   * **in memory**: the features read into one float32 array, the head
     fitted as ``edgetl train`` does on a folder (``SoftmaxHead.fit`` on the
     train split, validated on the rest);
   * **streamed, float32** and **streamed, float16**: ``heads.streaming.fit_streamed``
     reading ``features.parquet.FeatureFile`` row groups (what ``edgetl
     train FEATURES`` runs).
2. **Accuracy on real features**: Fashion-MNIST training images (IDX files
   from ``apt-get install dataset-fashion-mnist``) written as PNG, extracted
   by ``edgetl extract DATA --out F --image-size 64 --tap final --search
   off``; the same three trainings on them, early-stopped as a run is, and
   their validation accuracy.

    python bench/bench_parquet_head.py [--rows 1000000] [--real 20000] [--epochs 5] [--json OUT]

Everything lives under a temporary folder in /tmp, removed at the end."""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench_foundation import cpu_model, read_idx  # bench/ is the script's folder: on sys.path

ROW_GROUP = 8192
DIM = 1280
CLASSES = 10
DATASET = "/usr/share/datasets/fashion-mnist"


def write_synthetic(folder: str, rows: int, dtype: str, seed: int = 0) -> dict:
    """features-224px.parquet + manifest.json, as 'edgetl extract' lays them out."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((CLASSES, DIM)).astype(np.float32) * np.float32(0.04) + np.float32(0.3)
    noise = np.random.default_rng(seed + 1)
    value_type = pa.float16() if dtype == "float16" else pa.float32()
    schema = pa.schema([("key", pa.string()), ("path", pa.string()), ("label", pa.string()),
                        ("features", pa.list_(value_type, DIM))],
                       metadata={"edgetl": json.dumps({"taps": {"final": [0, DIM]}, "backbone": "synthetic"})})
    t = time.perf_counter()
    path = os.path.join(folder, "features-224px.parquet")
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, ROW_GROUP):
            n = min(ROW_GROUP, rows - start)
            y = (np.arange(start, start + n) * CLASSES) // rows
            X = np.maximum(means[y] + noise.standard_normal((n, DIM), dtype=np.float32) * np.float32(0.5), 0)
            flat = pa.array(X.astype(dtype).reshape(-1), value_type)
            writer.write_table(pa.table({
                "key": pa.array([f"{i:064x}" for i in range(start, start + n)]),
                "path": pa.array([f"c{c}/{i}.png" for c, i in zip(y, range(start, start + n))]),
                "label": pa.array([f"c{c}" for c in y]),
                "features": pa.FixedSizeListArray.from_arrays(flat, DIM)}, schema=schema), row_group_size=ROW_GROUP)
    seconds = time.perf_counter() - t
    with open(os.path.join(folder, "manifest.json"), "w") as fh:
        json.dump({"files": [{"file": "features-224px.parquet", "image_size": 224}],
                   "classes": [f"c{c}" for c in range(CLASSES)], "num_images": rows}, fh)
    return {"write_s": round(seconds, 1), "mb": round(os.path.getsize(path) / 1e6)}


# ---- the child: one training ----------------------------------------------------------------------

def child(mode: str, folder: str, epochs: int, early_stop: bool) -> dict:
    from edgetl.data.folder import stratified_split
    from edgetl.features.parquet import FeatureFile
    from edgetl.heads.softmax import SoftmaxHead
    from edgetl.heads.streaming import fit_streamed

    src = FeatureFile(folder)
    y = src.labels()
    train, val = stratified_split(y, 0.2, 0)
    params = dict(epochs=epochs, learning_rate=1e-3, l2=10.0 / len(y), patience=10 if early_stop else epochs + 1,
                  seed=0)
    t = time.perf_counter()
    if mode == "memory":
        X = np.empty((src.num_rows, src.tap_slice("final").stop), np.float32)
        for start, feats in src.groups("final"):
            X[start : start + len(feats)] = feats
        load = time.perf_counter() - t
        t = time.perf_counter()
        head = SoftmaxHead(**params).fit(X[train], y[train], X[val], y[val])
    else:
        load = 0.0
        split = np.full(len(y), -1, np.int8)
        split[train], split[val] = 0, 1
        dtype = np.float16 if mode == "float16" else np.float32
        blocks = (lambda: ((s, f.astype(np.float16)) for s, f in src.groups("final"))) if dtype != src.dtype \
            else (lambda: src.groups("final"))
        head = fit_streamed(blocks, y, split, dtype=dtype, workdir=os.path.dirname(folder), **params)
    fit = time.perf_counter() - t
    right = n = 0
    for start, feats in src.groups("final"):
        rows = val[(val >= start) & (val < start + len(feats))]
        right += int((head.predict(feats[rows - start].astype(np.float32)) == y[rows]).sum())
        n += len(rows)
    stream = getattr(head, "streaming_", None)  # the one-time shuffle to disk apart from the epochs
    return {"mode": mode, "load_s": round(load, 1), "fit_s": round(fit, 1), "epochs": head.n_epochs_,
            "shuffle_s": round(stream["shuffle_s"], 1) if stream else None,
            "s_per_epoch": round((stream["epochs_s"] if stream else fit) / head.n_epochs_, 2),
            "val_accuracy": round(right / n, 4),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def run_child(mode: str, folder: str, epochs: int, early_stop: bool) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, folder, str(epochs), str(int(early_stop))],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- the real part -------------------------------------------------------------------------------

def extract_real(tmp: str, n: int) -> str:
    from PIL import Image

    images = read_idx(os.path.join(DATASET, "train-images-idx3-ubyte.gz"))[:n]
    labels = read_idx(os.path.join(DATASET, "train-labels-idx1-ubyte.gz"))[:n]
    data = os.path.join(tmp, "fashion")
    for i, (img, label) in enumerate(zip(images, labels)):
        os.makedirs(os.path.join(data, str(label)), exist_ok=True)
        Image.fromarray(img).save(os.path.join(data, str(label), f"{i:05d}.png"))
    out = os.path.join(tmp, "fashion-features")
    subprocess.run([shutil.which("edgetl") or "edgetl", "extract", data, "--out", out, "--image-size", "64", "--tap",
                    "final", "--search", "off"], check=True, capture_output=True, env=dict(os.environ,
                   EDGETL_CACHE_DIR=os.path.join(tmp, "cache")))
    # The 64-px file only: FeatureFile takes the largest size unless told, so the baseline's 224 px goes.
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    manifest["files"] = [f for f in manifest["files"] if f["image_size"] == 64]
    json.dump(manifest, open(os.path.join(out, "manifest.json"), "w"))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--real", type=int, default=20_000, help="Fashion-MNIST images for the accuracy part (0: skip)")
    p.add_argument("--epochs", type=int, default=5, help="epochs of the size part (fixed, no early stop)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-parquet-head-")
    result = {"cpu": cpu_model(), "rows": args.rows, "dim": DIM, "classes": CLASSES, "epochs": args.epochs}
    try:
        if args.rows:
            for dtype in ("float32", "float16"):
                result[f"write_{dtype}"] = write_synthetic(os.path.join(tmp, dtype), args.rows, dtype)
                print(dtype, result[f"write_{dtype}"], flush=True)
            result["size"] = [run_child(mode, os.path.join(tmp, "float16" if mode == "float16" else "float32"),
                                        args.epochs, False) for mode in ("float16", "float32", "memory")]
            for r in result["size"]:
                print(r, flush=True)
            shutil.rmtree(os.path.join(tmp, "float32"))
            shutil.rmtree(os.path.join(tmp, "float16"))
        if args.real:
            folder = extract_real(tmp, args.real)
            result["real"] = [run_child(mode, folder, 100, True) for mode in ("memory", "float32", "float16")]
            for r in result["real"]:
                print(r, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3], int(sys.argv[4]), bool(int(sys.argv[5])))))
    else:
        main()
