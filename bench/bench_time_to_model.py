"""Time to model (issue 17): ``edgetl train`` with default settings against the
linear-probe recipe, side by side on the same images, as whole processes.

What is measured, for every benchmark set and split seed:

* **edgetl**: ``python -m edgetl.cli train TRAIN_DIR --out RUN`` (default
  settings: search, int8, agreement, report) in a child process, with
  ``EDGETL_CACHE_DIR`` pointing at a benchmark cache. Wall time from spawn to
  exit, peak resident memory of the child (``ru_maxrss`` from ``os.wait4``),
  the CPU other processes used meanwhile, metrics.json's ``timings_s``,
  ``chosen`` candidate, ``baselines.final_layer`` (val accuracy) and feature
  cache counts; then the TEST accuracy of RUN through the device runtime
  (``edgetl.runtime.Predictor``), ``model.onnx`` (fp32) and
  ``model.int8.onnx`` (int8), on a test folder training never saw.
* **linear probe** ("the data scientist's 15 lines"), in a child process of
  this script (``--probe`` sub-mode): eager PyTorch features from the same
  packaged weights (``edgetl.zoo.create_backbone("efficientnet_lite0")``,
  ``forward_features``: final layer, global-average pooled), images resized
  and centre-cropped to 224 px with the backbone's own ``InputSpec``
  (mean/std), ``StandardScaler`` then
  ``LogisticRegression(C=0.1, max_iter=1000)``; test accuracy on the same test
  folder. Its "wall" is time to model: from spawn (imports and model creation
  included) to the fitted classifier; test-feature extraction comes after and
  is reported separately (``probe.total_wall_s``). Its peak RSS covers the
  whole process.
* The probe is also the naive final-layer head (goal 4): "diff" is edgetl's
  chosen candidate minus the probe, on the test split, in points.

Machine state ("warm machine" = backbone graphs cached, features not):

1. Warm-up 1: ``edgetl train`` on 1,000 Fashion-MNIST images (100 per class,
   from official training images 50,000-59,999, which no measured set uses)
   with an EMPTY cache: this is also the **fresh cache** (first run ever)
   measurement. It is tested on the Fashion-MNIST test folder like the others.
2. Warm-up 2 (only when a colour photo set is selected): ``edgetl train`` on
   50 synthetic colour JPEGs (tinted, upscaled Fashion images, 256 px), so
   the RGB graphs are cached too (grey folders use one-channel graphs).
3. The cache after the warm-ups is the template. Every measured run gets its
   own copy of it (copied outside the timers): graphs cached, no feature of
   the measured images cached (checked: metrics.json
   ``features.from_cache`` is reported). Seeds of one set therefore never
   share cached features.

Sets (``--sets``, comma list; default every available one):

* ``fashion-10pc``: Fashion-MNIST, 10 per class (100 images) from official
  training images 0-49,999, drawn with the split seed; test: 1,000 images
  (100 per class) from the official test split, drawn once with seed 0.
* ``fashion-100pc``: the same with 100 per class (1,000 images); the goal's
  1,000-image case. Seeds ``--large-seeds`` (default 0).
* ``digits``: scikit-learn's 1,797 8x8 scans written as PNG (dark ink on
  white), stratified 50/50 train/test with the split seed.
* every set of ``bench/photo_sets.py`` (``AVAILABLE``; real colour photos,
  ``build(name, root, test_fraction=0.5, seed)``). If the module or a set's
  data is missing, the set is skipped with a message.

Small sets (all but fashion-100pc) run with every seed of ``--seeds``
(default 0,1,2); the summary gives per set the mean test accuracies and how
many seeds edgetl beats / ties / loses to the probe (tie: within
``--tie-points``, default 0.5 point).

``--scale`` (off by default: slow) adds the memory-scaling case: peak RSS of
``edgetl train`` (warm graphs, no cached features) on 1,000 and 50,000
Fashion-MNIST images (``--scale-sizes``); goal: ratio <= 1.2.

Prerequisites::

    apt-get update && apt-get install -y dataset-fashion-mnist
    # the colour sets of bench/photo_sets.py (photo_sets.install_commands()):
    apt-get install -y --no-install-recommends gcompris-qt-data tuxpaint-stamps-default \\
        qabcs-data fonts-noto-color-emoji

Commands (from the repository root)::

    python bench/bench_time_to_model.py --out-json /tmp/ttm/ttm.json            # everything but --scale
    python bench/bench_time_to_model.py --scale --out-json /tmp/ttm/scale.json  # + 1,000 vs 50,000 images
    python bench/bench_time_to_model.py --quick --sets fashion-10pc,digits      # smoke run, a few minutes
    python bench/bench_time_to_model.py --out-json /tmp/ttm/ttm.json --write-benchmarks   # + BENCHMARKS.md

``--quick``: the first seed only, a 200-image warm-up that is not reported as
the fresh-cache case. ``--work DIR`` keeps the folders, runs and logs
(default: a temporary folder, deleted at the end); each child's stdout and
stderr are in ``WORK/logs/``. A failed ``edgetl train`` is recorded with its
last error line and the benchmark carries on.

The machine is 2 cores, shared: run on a quiet machine (the script records
the 1-minute load average and the CPU share other processes used during each
child) and do not compare figures from runs with ``other_cpu`` above ~5 %.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BACKBONE = "efficientnet_lite0"
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
FASHION_SETS = ("fashion-10pc", "fashion-100pc")
BUILTIN_SETS = ("fashion-10pc", "fashion-100pc", "digits")
LARGE_SETS = ("fashion-100pc",)
FASHION_MEASURED = 50_000  # measured sets draw from official train images [0, 50,000); warm-ups from the rest

# Goals of issue 17.
GOAL_WARM_1000_S = 15.0
GOAL_FRESH_1000_S = 30.0
GOAL_PHOTOS_S = 8.0
GOAL_RATIO = 0.5
GOAL_PEAK_MB = 600.0
GOAL_FLAT = 1.2
GOAL_MIN_DIFF = -0.5
GOAL_MEAN_DIFF = 1.0

SECTION_START = "<!-- bench_time_to_model: start -->"
SECTION_END = "<!-- bench_time_to_model: end -->"


# --------------------------------------------------------------------------- folders


def scan(folder: str) -> tuple[list[str], list[str], list[int]]:
    """(classes sorted by name, image paths, label indices) of folder/<class>/<image>."""
    classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    paths, labels = [], []
    for i, cls in enumerate(classes):
        for name in sorted(os.listdir(os.path.join(folder, cls))):
            if name.lower().endswith(IMAGE_EXTS):
                paths.append(os.path.join(folder, cls, name))
                labels.append(i)
    return classes, paths, labels


# --------------------------------------------------------------------------- the linear probe (--probe sub-mode)


def probe_main(train_dir: str, test_dir: str, out_json: str) -> int:
    """The linear-probe recipe, timed from the spawn time the parent passes in
    BENCH_T0 (so imports and model creation count)."""
    t0 = float(os.environ.get("BENCH_T0", time.time()))
    import numpy as np
    import torch
    from PIL import Image, ImageOps
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from edgetl.zoo import create_backbone, get_spec

    spec = get_spec(BACKBONE).input_spec  # 224 px, the backbone's own mean/std and centre crop
    model = create_backbone(BACKBONE).eval()  # packaged ImageNet weights
    t_model = time.time() - t0

    def load(path):
        image = ImageOps.exif_transpose(Image.open(path))
        return image if image.mode in ("L", "RGB") else image.convert("RGB")  # spec converts L -> RGB

    def features(paths):
        out = []
        with torch.inference_mode():
            for i in range(0, len(paths), 32):
                batch = np.stack([spec.to_array(load(p)) for p in paths[i : i + 32]])
                out.append(model.forward_features(torch.from_numpy(batch)).numpy())
        return np.concatenate(out)

    classes, paths, y = scan(train_dir)
    x = features(paths)
    t_features = time.time() - t0
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=0.1, max_iter=1000).fit(scaler.transform(x), y)
    fitted_at = time.time() - t0

    test_classes, test_paths, test_y = scan(test_dir)
    index = {c: i for i, c in enumerate(classes)}
    y_test = np.array([index.get(test_classes[t], -1) for t in test_y])
    pred = clf.predict(scaler.transform(features(test_paths)))
    result = {
        "time_to_model_s": round(fitted_at, 3),
        "imports_and_model_s": round(t_model, 3),
        "train_features_s": round(t_features - t_model, 3),
        "fit_s": round(fitted_at - t_features, 3),
        "test_accuracy": float((pred == y_test).mean()),
        "num_train": len(paths),
        "num_test": len(test_paths),
        "feature_dim": int(x.shape[1]),
        "torch_threads": torch.get_num_threads(),
        "done_at_s": round(time.time() - t0, 3),
    }
    with open(out_json, "w") as fh:
        json.dump(result, fh)
    return 0


# --------------------------------------------------------------------------- child processes


def _busy_seconds() -> float:
    from bench_foundation import _proc_stat

    return _proc_stat()[0]


def run_measured(cmd: list[str], env: dict, log_prefix: str, timeout: float) -> dict:
    """Run ``cmd``; wall time, peak RSS (os.wait4), CPU, exit code, the last stderr line."""
    busy0 = _busy_seconds()
    load1 = os.getloadavg()[0]
    env = dict(env, BENCH_T0=repr(time.time()))
    killed = []
    with open(log_prefix + ".out", "w") as out, open(log_prefix + ".err", "w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=ROOT)

        def kill():
            killed.append(True)
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    busy = _busy_seconds() - busy0
    child_cpu = usage.ru_utime + usage.ru_stime
    ncpu = os.cpu_count() or 1
    error = None
    if proc.returncode != 0:
        with open(log_prefix + ".err", errors="replace") as fh:
            lines = [line.strip() for line in fh if line.strip()]
        error = ("killed after timeout: " if killed else "") + (lines[-1] if lines else f"exit code {proc.returncode}")
    return {
        "wall_s": round(wall, 3),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "cpu_s": round(child_cpu, 2),
        "other_cpu": round(max(0.0, busy - child_cpu) / (wall * ncpu), 3),
        "load1_before": round(load1, 2),
        "exit_code": proc.returncode,
        "error": error,
        "log": log_prefix,
    }


def edgetl_train(train_dir: str, run_dir: str, cache_dir: str, log_prefix: str, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "edgetl.cli", "train", train_dir, "--out", run_dir]
    env = dict(os.environ, EDGETL_CACHE_DIR=cache_dir)
    res = run_measured(cmd, env, log_prefix, timeout)
    res["command"] = " ".join(["edgetl", "train", train_dir, "--out", run_dir])
    if res["error"]:
        print(f"  edgetl train FAILED: {res['error']}", flush=True)
        return res
    try:
        with open(os.path.join(run_dir, "metrics.json")) as fh:
            m = json.load(fh)
        ch = m.get("chosen", {})
        res["chosen"] = {k: ch.get(k) for k in ("tap", "image_size", "head", "macs", "latency_ms", "val_accuracy")}
        res["naive_val_accuracy"] = (m.get("baselines", {}).get("final_layer") or {}).get("val_accuracy")
        res["raw_pixels_val_accuracy"] = (m.get("baselines", {}).get("raw_pixels") or {}).get("val_accuracy")
        res["timings_s"] = m.get("timings_s")
        res["features"] = m.get("features")
        res["num_candidates"] = len((m.get("search") or {}).get("candidates") or [])
        res["protocol"] = (m.get("search") or {}).get("protocol")
    except (OSError, ValueError, AttributeError) as exc:
        res["metrics_error"] = f"{type(exc).__name__}: {exc}"
    return res


def predictor_accuracy(run_dir: str, test_dir: str) -> dict:
    """Test accuracy of the bundle through the device runtime, fp32 and int8."""
    from edgetl.runtime import Predictor

    classes, paths, labels = scan(test_dir)
    out = {"num_test": len(paths)}
    for key, int8 in (("fp32", False), ("int8", True)):
        try:
            predictor = Predictor(run_dir, int8=int8)
            truth = [classes[t] for t in labels]
            hits = sum(p.label == t for p, t in zip(predictor.iter_predict(paths), truth))
            out[key] = hits / len(paths)
        except Exception as exc:  # noqa: BLE001 - record and carry on
            out[key] = None
            out[key + "_error"] = f"{type(exc).__name__}: {exc}"
    return out


def run_probe(train_dir: str, test_dir: str, log_prefix: str, timeout: float) -> dict:
    out_json = log_prefix + ".json"
    cmd = [sys.executable, os.path.abspath(__file__), "--probe", train_dir, test_dir, "--probe-out", out_json]
    res = run_measured(cmd, dict(os.environ), log_prefix, timeout)
    res["total_wall_s"] = res.pop("wall_s")
    if res["error"]:
        print(f"  probe FAILED: {res['error']}", flush=True)
        return res
    with open(out_json) as fh:
        res.update(json.load(fh))
    res["wall_s"] = res["time_to_model_s"]
    return res


# --------------------------------------------------------------------------- data sets


def per_class(x, y, n: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:n] for c in np.unique(y)])
    return x[rows], y[rows]


class Data:
    """Builds the train/test folders of every set under ``work/data``."""

    def __init__(self, work: str):
        self.root = os.path.join(work, "data")
        os.makedirs(self.root, exist_ok=True)
        self._fashion = None
        self._fashion_test = None
        self._photo = None

    def fashion(self):
        if self._fashion is None:
            from bench_foundation import load_dataset

            self._fashion = load_dataset()
            if "FALLBACK" in self._fashion[5]:
                raise RuntimeError("Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist")
        return self._fashion

    def fashion_folder(self, name: str, n_per_class: int, seed: int, pool: str = "measured") -> str:
        from bench_foundation import write_image_folder

        train_x, train_y, _, _, classes, _ = self.fashion()
        part = slice(0, FASHION_MEASURED) if pool == "measured" else slice(FASHION_MEASURED, None)
        folder = os.path.join(self.root, name)
        if not os.path.isdir(folder):
            if n_per_class is None:
                x, y = train_x[part], train_y[part]
            else:
                x, y = per_class(train_x[part], train_y[part], n_per_class, seed)
            write_image_folder(folder, x, y, classes, name)
        return folder

    def fashion_test(self) -> str:
        from bench_foundation import write_image_folder

        if self._fashion_test is None:
            _, _, test_x, test_y, classes, _ = self.fashion()
            folder = os.path.join(self.root, "fashion-test-1000")
            if not os.path.isdir(folder):
                x, y = per_class(test_x, test_y, 100, 0)
                write_image_folder(folder, x, y, classes, "test")
            self._fashion_test = folder
        return self._fashion_test

    def digits(self, seed: int) -> tuple[str, str]:
        import numpy as np
        from PIL import Image
        from sklearn.datasets import load_digits

        dst = os.path.join(self.root, f"digits-s{seed}")
        train_dir, test_dir = os.path.join(dst, "train"), os.path.join(dst, "test")
        if os.path.isdir(dst):
            return train_dir, test_dir
        digits = load_digits()
        pixels = (255 - digits.images * 255 / 16).round().astype(np.uint8)  # dark ink on white, as edgetl demo
        rng = np.random.default_rng(seed)
        for c in range(10):
            rows = rng.permutation(np.flatnonzero(digits.target == c))
            cut = int(round(len(rows) * 0.5))
            for folder, part in ((train_dir, rows[:cut]), (test_dir, rows[cut:])):
                os.makedirs(os.path.join(folder, str(c)), exist_ok=True)
                for i in part:
                    Image.fromarray(pixels[i], "L").save(os.path.join(folder, str(c), f"{i:04d}.png"))
        return train_dir, test_dir

    def photo_sets(self):
        """The bench/photo_sets module, or None (with the reason printed once)."""
        if self._photo is None:
            try:
                import photo_sets

                self._photo = photo_sets
            except ImportError as exc:
                print(f"NOTE: bench/photo_sets.py is not available ({exc}); colour photo sets skipped", flush=True)
                self._photo = False
        return self._photo or None

    def photos(self, name: str, seed: int) -> tuple[str, str]:
        module = self.photo_sets()
        return module.build(name, os.path.join(self.root, f"{name}-s{seed}"), test_fraction=0.5, seed=seed)

    def colour_warmup(self) -> str:
        """50 colour JPEGs, 5 classes x 10, 256 px: tinted, upscaled Fashion images."""
        import numpy as np
        from PIL import Image

        folder = os.path.join(self.root, "warmup-colour")
        if os.path.isdir(folder):
            return folder
        train_x, train_y, *_ = self.fashion()
        x, y = per_class(train_x[FASHION_MEASURED:], train_y[FASHION_MEASURED:], 10, 1)
        rng = np.random.default_rng(1)
        for i, (image, label) in enumerate(zip(x, y)):
            if label >= 5:
                continue
            tint = rng.uniform(0.3, 1.0, 3)
            rgb = (image[:, :, None] * tint[None, None, :]).astype(np.uint8)
            os.makedirs(os.path.join(folder, f"c{label}"), exist_ok=True)
            Image.fromarray(rgb, "RGB").resize((256, 256), Image.Resampling.BILINEAR).save(
                os.path.join(folder, f"c{label}", f"w{i:04d}.jpg"), quality=90)
        return folder


# --------------------------------------------------------------------------- benchmark


def copy_cache(template: str, dst: str) -> str:
    if os.path.isdir(dst):
        shutil.rmtree(dst)
    shutil.copytree(template, dst)
    return dst


def measure(case: dict, train_dir: str, test_dir: str, cache_dir: str, work: str, timeout: float,
            with_probe: bool = True) -> dict:
    tag = case["id"]
    run_dir = os.path.join(work, "runs", tag)
    if os.path.isdir(run_dir):
        shutil.rmtree(run_dir)
    logs = os.path.join(work, "logs")
    _, train_paths, _ = scan(train_dir)
    classes, test_paths, _ = scan(test_dir)
    case.update(train_dir=train_dir, test_dir=test_dir, n_train=len(train_paths), n_test=len(test_paths),
                classes=len(classes))
    print(f"\n== {tag}: {len(train_paths)} train / {len(test_paths)} test images, {len(classes)} classes ==",
          flush=True)
    e = edgetl_train(train_dir, run_dir, cache_dir, os.path.join(logs, tag + ".edgetl"), timeout)
    if not e["error"]:
        e["test"] = predictor_accuracy(run_dir, test_dir)
        t = e.get("timings_s") or {}
        print(f"  edgetl: {e['wall_s']:.1f} s wall, peak {e['peak_rss_mb']:.0f} MB, test fp32 "
              f"{_pct(e['test'].get('fp32'))} int8 {_pct(e['test'].get('int8'))}, chosen {_chosen(e)}, "
              f"features extracted/cached {(e.get('features') or {}).get('extracted')}/"
              f"{(e.get('features') or {}).get('from_cache')}, other CPU {e['other_cpu']:.0%}", flush=True)
        if t:
            print("  timings_s: " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()), flush=True)
    case["edgetl"] = e
    if with_probe:
        p = run_probe(train_dir, test_dir, os.path.join(logs, tag + ".probe"), timeout)
        if not p["error"]:
            print(f"  probe: {p['wall_s']:.1f} s to model ({p['total_wall_s']:.1f} s with the test set), peak "
                  f"{p['peak_rss_mb']:.0f} MB, test {_pct(p['test_accuracy'])}, other CPU {p['other_cpu']:.0%}",
                  flush=True)
        case["probe"] = p
    return case


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def _chosen(e: dict) -> str:
    ch = e.get("chosen")
    if not ch:
        return "-"
    return f"{ch.get('tap')}@{ch.get('image_size')} {ch.get('head')}"


def edgetl_acc(case: dict):
    e = case.get("edgetl") or {}
    return (e.get("test") or {}).get("fp32")


def probe_acc(case: dict):
    p = case.get("probe") or {}
    return None if p.get("error") else p.get("test_accuracy")


def diff_points(case: dict):
    a, b = edgetl_acc(case), probe_acc(case)
    return None if a is None or b is None else round(100 * (a - b), 2)


def ratio(case: dict):
    e, p = case.get("edgetl") or {}, case.get("probe") or {}
    if e.get("error") or p.get("error") or not p.get("wall_s"):
        return None
    return round(e["wall_s"] / p["wall_s"], 3)


# --------------------------------------------------------------------------- report


def _f(v, fmt="{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def case_table(cases: list[dict]) -> list[str]:
    rows = ["| set | seed | cache | n train | classes | edgetl wall s | probe wall s | ratio | edgetl peak MB | "
            "probe peak MB | edgetl test (fp32 / int8) | probe test | diff points | chosen | other CPU |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cases:
        e, p = c.get("edgetl") or {}, c.get("probe") or {}
        t = e.get("test") or {}
        err = e.get("error")
        rows.append("| " + " | ".join([
            c["set"], str(c.get("seed", "")), c.get("cache", ""), str(c.get("n_train", "")), str(c.get("classes", "")),
            "FAILED" if err else _f(e.get("wall_s")),
            (p.get("error") and "FAILED") or _f(p.get("wall_s")) if p else "-",
            _f(ratio(c), "{:.2f}"),
            "-" if err else _f(e.get("peak_rss_mb"), "{:.0f}"),
            _f(p.get("peak_rss_mb"), "{:.0f}") if p else "-",
            "-" if err else f"{_pct(t.get('fp32'))} / {_pct(t.get('int8'))}",
            _pct(probe_acc(c)),
            _f(diff_points(c), "{:+.1f}"),
            (err[:60] if err else _chosen(e)),
            f"{max(e.get('other_cpu', 0), p.get('other_cpu', 0) if p else 0):.0%}",
        ]) + " |")
    return rows


def summarize(cases: list[dict], tie: float) -> dict:
    by_set: dict[str, list[dict]] = {}
    for c in cases:
        if c.get("cache") == "warm" and c.get("kind") == "set":
            by_set.setdefault(c["set"], []).append(c)
    out = {}
    for name, group in by_set.items():
        done = [c for c in group if edgetl_acc(c) is not None and probe_acc(c) is not None]
        diffs = [diff_points(c) for c in done]
        out[name] = {
            "seeds": [c.get("seed") for c in group],
            "completed": len(done),
            "edgetl_test_mean": _mean([edgetl_acc(c) for c in done]),
            "probe_test_mean": _mean([probe_acc(c) for c in done]),
            "diff_points_mean": _mean(diffs),
            "beats": sum(d > tie for d in diffs),
            "ties": sum(-tie <= d <= tie for d in diffs),
            "loses": sum(d < -tie for d in diffs),
            "edgetl_wall_mean_s": _mean([c["edgetl"]["wall_s"] for c in group if not c["edgetl"].get("error")]),
            "probe_wall_mean_s": _mean([c["probe"]["wall_s"] for c in group if not c["probe"].get("error")]),
            "ratio_mean": _mean([ratio(c) for c in group if ratio(c) is not None]),
            "edgetl_peak_mb_max": max((c["edgetl"]["peak_rss_mb"] for c in group if not c["edgetl"].get("error")),
                                      default=None),
            "chosen_beats_naive_val": [_beats_val(c) for c in group],
        }
    return out


def _beats_val(c: dict):
    e = c.get("edgetl") or {}
    ch, naive = (e.get("chosen") or {}).get("val_accuracy"), e.get("naive_val_accuracy")
    return None if ch is None or naive is None else bool(ch > naive)


def _mean(values):
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 4) if values else None


def summary_table(summary: dict) -> list[str]:
    rows = ["| set | seeds done | edgetl test mean | probe test mean | diff mean (points) | beats / ties / loses probe "
            "| edgetl wall mean s | probe wall mean s | ratio mean |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        rows.append(f"| {name} | {s['completed']}/{len(s['seeds'])} | {_pct(s['edgetl_test_mean'])} | "
                    f"{_pct(s['probe_test_mean'])} | {_f(s['diff_points_mean'], '{:+.2f}')} | "
                    f"{s['beats']} / {s['ties']} / {s['loses']} | {_f(s['edgetl_wall_mean_s'])} | "
                    f"{_f(s['probe_wall_mean_s'])} | {_f(s['ratio_mean'], '{:.2f}')} |")
    return rows


def goals(res: dict) -> list[dict]:
    cases, summary = res["cases"], res["summary"]
    out = []

    def add(name, value, target, ok, note=""):
        out.append({"goal": name, "value": round(value, 2), "target": target, "met": bool(ok), "note": note})

    warm1000 = [c for c in cases if c["set"] == "fashion-100pc" and c.get("cache") == "warm"
                and not c["edgetl"].get("error")]
    if warm1000:
        v = max(c["edgetl"]["wall_s"] for c in warm1000)
        add("1,000 images, warm machine, wall s", v, f"<= {GOAL_WARM_1000_S:.0f}", v <= GOAL_WARM_1000_S)
        r = [ratio(c) for c in warm1000 if ratio(c) is not None]
        if r:
            add("edgetl / probe wall, 1,000 images", max(r), f"<= {GOAL_RATIO}", max(r) <= GOAL_RATIO)
    fresh = [c for c in cases if c.get("cache") == "fresh" and c.get("counts_as_fresh")
             and not c["edgetl"].get("error")]
    if fresh:
        v = fresh[0]["edgetl"]["wall_s"]
        add("1,000 images, fresh cache, wall s", v, f"<= {GOAL_FRESH_1000_S:.0f}", v <= GOAL_FRESH_1000_S,
            "the warm-up run: 1,000 other Fashion-MNIST images, empty cache")
    photos = [c for c in cases if c.get("photo") and c.get("cache") == "warm" and not c["edgetl"].get("error")]
    if photos:
        v = max(c["edgetl"]["wall_s"] for c in photos)
        add("colour photo sets, warm machine, wall s (max)", v, f"<= {GOAL_PHOTOS_S:.0f}", v <= GOAL_PHOTOS_S,
            "sets of about 100 photos")
    ratios = [ratio(c) for c in cases if c.get("cache") == "warm" and ratio(c) is not None]
    if ratios:
        add("edgetl / probe wall, every warm case (max)", max(ratios), f"<= {GOAL_RATIO}", max(ratios) <= GOAL_RATIO)
    peaks = [c["edgetl"]["peak_rss_mb"] for c in warm1000]
    if peaks:
        add("peak RSS, 1,000 images, MB", max(peaks), f"<= {GOAL_PEAK_MB:.0f}", max(peaks) <= GOAL_PEAK_MB)
    scale = res.get("scale") or {}
    if scale.get("ratio") is not None:
        add("peak RSS ratio, largest / 1,000 images", scale["ratio"], f"<= {GOAL_FLAT}", scale["ratio"] <= GOAL_FLAT)
    diffs = {k: s["diff_points_mean"] for k, s in summary.items() if s["diff_points_mean"] is not None}
    if diffs:
        worst = min(diffs, key=diffs.get)
        add("test accuracy vs probe, worst set (mean over seeds), points", diffs[worst], f">= {GOAL_MIN_DIFF}",
            diffs[worst] >= GOAL_MIN_DIFF, worst)
        mean = round(sum(diffs.values()) / len(diffs), 2)
        add("test accuracy vs probe, mean over sets, points", mean, f">= +{GOAL_MEAN_DIFF}", mean >= GOAL_MEAN_DIFF,
            f"{len(diffs)} sets")
    return out


def render(res: dict) -> list[str]:
    lines = ["### Every run", ""] + case_table(res["cases"])
    if res["summary"]:
        lines += ["", "### Per set (warm machine; the probe is also the naive final-layer head)", ""]
        lines += summary_table(res["summary"])
    scale = res.get("scale")
    if scale:
        lines += ["", "### Memory scaling (warm graphs, no cached features)", "",
                  "| images | edgetl wall s | peak MB | test fp32 |", "|---|---|---|---|"]
        for c in scale["cases"]:
            e = c["edgetl"]
            lines.append(f"| {c['n_train']:,} | {'FAILED' if e.get('error') else _f(e['wall_s'])} | "
                         f"{_f(e.get('peak_rss_mb'), '{:.0f}')} | {_pct((e.get('test') or {}).get('fp32'))} |")
        lines.append(f"\nratio of peak RSS: {_f(scale.get('ratio'), '{:.2f}')} (goal <= {GOAL_FLAT})")
    if res["goals"]:
        lines += ["", "### Goals (issue 17)", "", "| goal | value | target | met |", "|---|---|---|---|"]
        for g in res["goals"]:
            note = f" ({g['note']})" if g["note"] else ""
            lines.append(f"| {g['goal']}{note} | {g['value']} | {g['target']} | {'yes' if g['met'] else '**no**'} |")
    noisy = [c["id"] for c in res["cases"] + (res.get("scale") or {}).get("cases", [])
             if max((c.get(k) or {}).get("other_cpu") or 0 for k in ("edgetl", "probe")) > 0.05]
    if noisy:
        lines += ["", f"WARNING: other processes used more than 5 % of the CPU during {len(noisy)} of the runs "
                      f"({', '.join(noisy)}): their times are not comparable; run again on a quiet machine."]
    if res.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(res["skipped"])]
    return lines


def write_benchmarks(res: dict, argv: list[str]) -> None:
    path = os.path.join(ROOT, "BENCHMARKS.md")
    m, g = res["machine"], res["git"]
    dirty = g.get("src_uncommitted_files") or []
    body = [SECTION_START, "## Time to model (issue 17)", "",
            "```bash", "python bench/bench_time_to_model.py " + " ".join(argv), "```", "",
            f"Commit `{g.get('commit')}`{' with uncommitted src/ changes' if dirty else ''}, "
            f"{res['started']}; {m.get('cpu_model')}, {m.get('nproc')} cores; Python {m.get('python')}, "
            f"onnxruntime {m.get('onnxruntime')}, torch {m.get('torch')}. Wall times are whole processes "
            f"(the probe's: to the fitted classifier); peak RSS is the child's `ru_maxrss`. See the script's "
            f"docstring for what \"warm\" and \"fresh\" mean.", ""]
    body += render(res) + ["", SECTION_END]
    text = open(path, encoding="utf-8").read() if os.path.isfile(path) else ""
    if SECTION_START in text and SECTION_END in text:
        head, rest = text.split(SECTION_START, 1)
        tail = rest.split(SECTION_END, 1)[1]
        text = head + "\n".join(body) + tail
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(body) + "\n"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(f"wrote the section to {path}")


# --------------------------------------------------------------------------- main


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sets", default=None,
                   help="comma list: fashion-10pc, fashion-100pc, digits, photo-set names (default: all available)")
    p.add_argument("--seeds", default="0,1,2", help="split seeds of the small sets (default 0,1,2)")
    p.add_argument("--large-seeds", default="0", help="split seeds of fashion-100pc (default 0)")
    p.add_argument("--work", default=None, help="keep folders, runs and logs here (default: a temporary folder)")
    p.add_argument("--out-json", default=None, help="write every figure as JSON here")
    p.add_argument("--quick", action="store_true", help="first seed only; small warm-up, no fresh-cache case")
    p.add_argument("--scale", action="store_true", help="also peak RSS at --scale-sizes images (slow)")
    p.add_argument("--scale-sizes", default="1000,50000", help="Fashion-MNIST images for --scale")
    p.add_argument("--tie-points", type=float, default=0.5, help="|diff| up to this many points is a tie")
    p.add_argument("--timeout", type=float, default=3600, help="seconds before a child process is killed")
    p.add_argument("--write-benchmarks", action="store_true", help="replace/append the section in BENCHMARKS.md")
    p.add_argument("--probe", nargs=2, metavar=("TRAIN_DIR", "TEST_DIR"), help=argparse.SUPPRESS)
    p.add_argument("--probe-out", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.probe:
        return probe_main(args.probe[0], args.probe[1], args.probe_out)

    sys.path.insert(0, HERE)
    from bench_foundation import git_state, machine_info

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    large_seeds = [int(s) for s in args.large_seeds.split(",") if s.strip()]
    if args.quick:
        seeds, large_seeds = seeds[:1], large_seeds[:1]
    work = args.work or tempfile.mkdtemp(prefix="edgetl-ttm-")
    os.makedirs(os.path.join(work, "logs"), exist_ok=True)
    data = Data(work)

    photo = data.photo_sets()
    photo_names = list(photo.AVAILABLE) if photo else []
    wanted = [s.strip() for s in args.sets.split(",")] if args.sets else list(BUILTIN_SETS) + photo_names
    skipped = []
    sets = []
    for name in wanted:
        if name in BUILTIN_SETS or name in photo_names:
            sets.append(name)
        else:
            msg = (f"{name}: not a built-in set and bench/photo_sets.py "
                   f"{'does not list it' if photo else 'is not available yet'}")
            print("SKIP " + msg, flush=True)
            skipped.append(msg)
    if not sets:
        print("nothing to run", file=sys.stderr)
        return 2

    res = {"started": time.strftime("%Y-%m-%d %H:%M"), "argv": argv, "git": git_state(), "machine": machine_info(),
           "work": work, "sets": sets, "seeds": seeds, "large_seeds": large_seeds, "quick": args.quick,
           "cases": [], "skipped": skipped}
    print(f"work folder {work}; machine {res['machine']['cpu_model']} x{res['machine']['nproc']}; "
          f"commit {res['git'].get('commit')} "
          f"(uncommitted src files: {len(res['git'].get('src_uncommitted_files', []))})",
          flush=True)
    t_start = time.perf_counter()
    try:
        # Warm-up 1 (= the fresh-cache measurement): empty cache, 1,000 other Fashion-MNIST images.
        template = os.path.join(work, "cache-template")
        if os.path.isdir(template):
            shutil.rmtree(template)
        os.makedirs(template)
        n_warm = 20 if args.quick else 100
        warm_dir = data.fashion_folder(f"warmup-fashion-{n_warm}pc", n_warm, 0, pool="warmup")
        fresh = {"id": "fresh-fashion-100pc" if not args.quick else "warmup-fashion",
                 "set": "fashion-100pc (other images)" if not args.quick else "warm-up", "seed": 0, "cache": "fresh",
                 "kind": "warmup", "counts_as_fresh": not args.quick}
        res["cases"].append(measure(fresh, warm_dir, data.fashion_test(), template, work, args.timeout,
                                    with_probe=False))
        if fresh["edgetl"].get("error"):
            print("WARNING: the warm-up run failed; the measured runs below may include graph export", flush=True)
        # Warm-up 2: the RGB graphs, when a colour set is measured.
        if any(s in photo_names for s in sets):
            print("\n== warm-up: colour graphs ==", flush=True)
            w2 = edgetl_train(data.colour_warmup(), os.path.join(work, "runs", "warmup-colour"), template,
                              os.path.join(work, "logs", "warmup-colour.edgetl"), args.timeout)
            res["warmup_colour"] = w2
            print(f"  {w2['wall_s']:.1f} s" + (f" FAILED: {w2['error']}" if w2["error"] else ""), flush=True)

        for name in sets:
            for seed in (large_seeds if name in LARGE_SETS else seeds):
                case = {"id": f"{name}-s{seed}", "set": name, "seed": seed, "cache": "warm", "kind": "set",
                        "photo": name in photo_names}
                try:
                    if name == "fashion-10pc":
                        train_dir = data.fashion_folder(f"fashion-10pc-s{seed}", 10, seed)
                        test_dir = data.fashion_test()
                    elif name == "fashion-100pc":
                        train_dir = data.fashion_folder(f"fashion-100pc-s{seed}", 100, seed)
                        test_dir = data.fashion_test()
                    elif name == "digits":
                        train_dir, test_dir = data.digits(seed)
                    else:
                        train_dir, test_dir = data.photos(name, seed)
                except Exception as exc:  # noqa: BLE001 - a set that cannot be built is skipped, not fatal
                    msg = f"{name} seed {seed}: cannot build the data ({type(exc).__name__}: {exc})"
                    if name in photo_names and hasattr(photo, "install_commands"):
                        cmds = photo.install_commands()
                        cmds = " && ".join(cmds) if isinstance(cmds, (list, tuple)) else str(cmds)
                        msg += "; install with: " + cmds
                    print("SKIP " + msg, flush=True)
                    skipped.append(msg)
                    continue
                cache = copy_cache(template, os.path.join(work, "cache-run"))
                res["cases"].append(measure(case, train_dir, test_dir, cache, work, args.timeout))
                shutil.rmtree(cache, ignore_errors=True)

        if args.scale:
            scale_cases = []
            for n in [int(s) for s in args.scale_sizes.split(",")]:
                folder = data.fashion_folder(f"scale-{n}", None if n >= FASHION_MEASURED else n // 10, 0)
                case = {"id": f"scale-{n}", "set": f"scale-{n}", "seed": 0, "cache": "warm", "kind": "scale"}
                cache = copy_cache(template, os.path.join(work, "cache-run"))
                scale_cases.append(measure(case, folder, data.fashion_test(), cache, work, args.timeout,
                                           with_probe=False))
                shutil.rmtree(cache, ignore_errors=True)
            peaks = [c["edgetl"].get("peak_rss_mb") for c in scale_cases if not c["edgetl"].get("error")]
            res["scale"] = {"cases": scale_cases,
                            "ratio": round(peaks[-1] / peaks[0], 3) if len(peaks) == len(scale_cases) >= 2 else None}
    finally:
        res["elapsed_s"] = round(time.perf_counter() - t_start, 1)
        res["summary"] = summarize(res["cases"], args.tie_points)
        res["goals"] = goals(res)
        if args.out_json:
            os.makedirs(os.path.dirname(os.path.abspath(args.out_json)), exist_ok=True)
            with open(args.out_json, "w") as fh:
                json.dump(res, fh, indent=1)
        print("\n" + "\n".join(render(res)))
        print(f"\nbenchmark took {res['elapsed_s']:.0f} s" + (f"; JSON in {args.out_json}" if args.out_json else ""))
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    if args.write_benchmarks:
        write_benchmarks(res, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
