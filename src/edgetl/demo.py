"""``edgetl demo``: the whole path on real data that ships with scikit-learn.

1,797 real handwritten digit scans (8 x 8, 16 grey levels) are written as PNG
files into a temporary ImageFolder, a classifier is transfer-learned from the
packaged EfficientNet-Lite0 weights, compared with a raw-pixel logistic
regression on the same split, exported, and run by the device runtime."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time

import numpy as np

from .errors import RunExistsError

log = logging.getLogger(__name__)


def write_digits_folder(root: str) -> list[str]:
    """Digits as PNGs, dark ink on white paper, ``root/<digit>/<n>.png``."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    paths = []
    for i, (img, target) in enumerate(zip(digits.images, digits.target)):
        folder = os.path.join(root, str(target))
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{i:04d}.png")
        Image.fromarray((255 - img * 255 / 16).round().astype(np.uint8), "L").save(path)
        paths.append(path)
    return paths


def split_folder(src: str, dst: str, test_fraction: float = 0.5, seed: int = 0) -> tuple[str, str]:
    """Copy ``src/<class>/*`` into ``dst/train`` and ``dst/test``, a stratified
    split: the test half is never seen by training or by the search."""

    rng = np.random.default_rng(seed)
    train_dir, test_dir = os.path.join(dst, "train"), os.path.join(dst, "test")
    for cls in sorted(os.listdir(src)):
        files = sorted(os.listdir(os.path.join(src, cls)))
        files = [files[i] for i in rng.permutation(len(files))]
        cut = int(round(len(files) * (1 - test_fraction)))
        for folder, names in ((train_dir, files[:cut]), (test_dir, files[cut:])):
            os.makedirs(os.path.join(folder, cls), exist_ok=True)
            for name in names:
                shutil.copyfile(os.path.join(src, cls, name), os.path.join(folder, cls, name))
    return train_dir, test_dir


def labeled_paths(folder: str, labels: list[str]) -> tuple[list[str], np.ndarray]:
    """Every image of ``folder/<label>/`` in label order, with its label index."""
    paths, y = [], []
    for i, cls in enumerate(labels):
        names = sorted(os.listdir(os.path.join(folder, cls)))
        paths += [os.path.join(folder, cls, n) for n in names]
        y += [i] * len(names)
    return paths, np.asarray(y)


def is_demo_run(folder: str) -> bool:
    """An earlier ``edgetl demo`` run: the run marker says the demo made it
    (or, made before the run marker existed, the demo's own empty marker file
    ``.edgetl-demo``). The demo replaces only these, never another run."""
    from .training.rundir import is_run_folder, read_run_marker

    marker = read_run_marker(folder) or {}
    return marker.get("made_by") == "demo" or (
        is_run_folder(folder) and os.path.isfile(os.path.join(folder, ".edgetl-demo")))


def run_demo(out_dir: str = "edgetl-demo-run", cache_dir: str | None = None, progress: bool | None = None,
             echo=print) -> dict:
    from .runtime import Predictor
    from .search import search_summary
    from .training import train
    from .training.rundir import write_run_marker

    out_dir = os.fspath(out_dir)
    if os.path.lexists(out_dir) and not is_demo_run(out_dir):
        raise RunExistsError(f"'{out_dir}' exists and is not an earlier demo run; pass another --out")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgetl-digits-") as tmp:
        write_digits_folder(os.path.join(tmp, "all"))
        train_dir, test_dir = split_folder(os.path.join(tmp, "all"), tmp, test_fraction=0.5, seed=0)
        echo(f"Wrote scikit-learn's 1,797 handwritten digit scans (8x8 px) as PNG files: half to train on "
             f"({train_dir}), half kept aside as a test set ({test_dir}) that neither training nor the search sees.")
        echo("Transfer learning from EfficientNet-Lite0 (ImageNet weights, frozen): searching the layer, the input "
             "size and the head...")
        result = train(train_dir, out_dir, crop_fraction=1.0, val_split=0.2, seed=0, cache_dir=cache_dir,
                       overwrite=True, progress=progress)
        write_run_marker(out_dir, made_by="demo")  # the next demo may replace it
        m = result.metrics
        echo("")
        for line in search_summary(m, result.searcher, limit=10):
            echo(line)

        test_paths, y_test = labeled_paths(test_dir, m["labels"])
        test = {}
        for name, int8 in (("fp32", False), ("int8", True)):
            pred = Predictor(out_dir, int8=int8).predict_proba(test_paths).argmax(axis=1)
            test[name] = float((pred == y_test).mean())
        test["naive"] = result.baseline_models["final_layer"].score(test_paths, y_test)
        test["raw_pixels"] = result.baseline_models["raw_pixels"].score(test_paths, y_test)
        ch, fl = m["chosen"], m["baselines"]["final_layer"]
        echo("")
        echo(f"TEST accuracy on the {len(test_paths)} digits kept aside (every model fitted on the same "
             f"{m['counts']['images_used']} training scans):")
        echo(f"  edgetl, chosen model, device runtime fp32 ({ch['tap']} at {ch['image_size']} px)   {test['fp32']:.1%}"
             f"   {ch['macs'] / 1e6:.1f}M MACs, model.onnx {m['model_mb']['fp32']:.1f} MB")
        echo(f"  edgetl, chosen model, device runtime int8                       {test['int8']:.1%}"
             f"   model.int8.onnx {m['model_mb']['int8']:.1f} MB")
        echo(f"  naive transfer: softmax on the final layer at {fl['image_size']} px           {test['naive']:.1%}"
             f"   {fl['macs'] / 1e6:.1f}M MACs")
        echo(f"  raw-pixel linear baseline (ridge classifier)                    {test['raw_pixels']:.1%}")
        if test["fp32"] <= test["raw_pixels"]:
            echo("  -> transfer does NOT beat the raw-pixel baseline on the test set.")
        else:
            echo(f"  -> the searched model beats both baselines, at {fl['macs'] / max(ch['macs'], 1):.0f}x less "
                 f"compute than the naive transfer.")

        predictor = Predictor(out_dir, int8=True)
        sample = test_paths[:: max(1, len(test_paths) // 8)][:8]
        echo("device runtime (int8, no torch) on test digits:")
        for path, pred in zip(sample, predictor.predict(sample)):
            truth = os.path.basename(os.path.dirname(path))
            echo(f"  true {truth}  predicted {pred.label}  p={pred.probability:.2f}")
    m["test_accuracy"] = test
    echo(f"done in {time.perf_counter() - t0:.0f} s; the bundle is in {out_dir}/ (search plot: {out_dir}/search.png)")
    return m
