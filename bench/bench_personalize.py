"""On-device personalization benchmark (issue 6): peak memory, time and accuracy.

Goal of the issue: "personalising 10 classes x 50 images peaks at <= 200 MB
resident (measured with /usr/bin/time -v), and the process never loads torch".

1. Host side (torch allowed, not measured): ``edgetl.training.train`` builds a
   bundle from scikit-learn's handwritten digits (``edgetl.demo.
   write_digits_folder``, 1,797 8x8 scans, labels "0".."9") at
   ``--image-size`` px. The personalization data is a different domain:
   Fashion-MNIST product photos, so every personalised label is a new class and
   the model ends with 10 digit classes + ``--classes`` new ones.
2. Device side, every process run under ``/usr/bin/time -v`` (peak RSS from
   "Maximum resident set size", wall time from "Elapsed (wall clock) time"):

   a. one Python process (``edgetl.runtime.Personalizer`` only): ``add_examples``
      for each class (``--per-class`` Fashion-MNIST train images, given as PNG
      paths), ``fit(epochs=--epochs)``, ``save()``, then ``predict`` on
      ``--test-images`` Fashion-MNIST test images of those classes; prints the
      accuracy and asserts ``'torch' not in sys.modules`` at the end. It also
      records its own peak RSS after each phase (``getrusage``), to show which
      phase sets the peak.
   b. the CLI: ``edgetl device add`` once per class, ``edgetl device fit``,
      ``edgetl device predict --json`` on ``--cli-predict-images`` test images,
      each a separate process (the console script itself, no shim). The max
      peak RSS over those processes and their wall times are reported. These
      processes run with a stand-in ``torch`` package first on PYTHONPATH that
      records any import attempt and raises, so "never loads torch" is checked
      for the CLI too without changing what is measured.
   c. the floor: ``python -c "import onnxruntime, numpy, PIL"``, and, for
      reference, ``python -c "import edgetl.runtime"`` (adds onnx, safetensors).

3. A markdown table on stdout and, with ``--out-json``, every figure (peak RSS
   in MB = 10^6 bytes, from /usr/bin/time's kbytes x 1024; wall seconds;
   accuracy; machine; commit; the other processes' CPU share during each
   device process, from /proc/stat, so a noisy run can be recognised).

Accuracy is top-1 over every label the personalised model has (the 10 digit
classes included: a Fashion-MNIST photo called "7" counts as wrong); the
accuracy restricted to the new classes' columns is reported alongside.

Everything is written to a temporary folder (deleted unless ``--keep``); the
dataset folder is only read. Fashion-MNIST: ``apt-get install
dataset-fashion-mnist``; without it bench_foundation's loader falls back to
scikit-learn digits (then the domains are the same; the script says so).

Run from the repository root::

    python bench/bench_personalize.py --out-json /tmp/benchlogs/personalize.json
    python bench/bench_personalize.py --int8 --out-json /tmp/benchlogs/personalize-int8.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

GOAL_MB = 200.0
NOTABLE_MODULES = ("torch", "onnx", "safetensors", "sklearn", "scipy", "onnxruntime", "PIL", "numpy")

# --------------------------------------------------------------------------- device side (child process)


def _rss_mb() -> float:
    """This process's peak RSS so far, MB (Linux reports kbytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def device_api(manifest_path: str) -> int:
    """Step 2a, run as its own process: only edgetl.runtime (numpy, onnxruntime, Pillow)."""
    phases = {"start": _rss_mb()}
    with open(manifest_path) as fh:
        job = json.load(fh)
    t0 = time.perf_counter()
    import numpy as np

    from edgetl.runtime import Personalizer

    phases["imports"] = _rss_mb()
    seconds = {"imports": time.perf_counter() - t0}

    t = time.perf_counter()
    p = Personalizer(job["run_dir"], job["state_dir"], int8=job["int8"])
    seconds["open"] = time.perf_counter() - t
    phases["open (2 ORT sessions)"] = _rss_mb()
    bundle_labels = list(p.labels)

    t = time.perf_counter()
    for cls in job["classes"]:
        p.add_examples(cls["paths"], cls["label"])
    seconds["add"] = time.perf_counter() - t
    phases["add_examples"] = _rss_mb()

    t = time.perf_counter()
    history = p.fit(epochs=job["epochs"])
    seconds["fit"] = time.perf_counter() - t
    phases["fit"] = _rss_mb()

    t = time.perf_counter()
    state_file = p.save()
    seconds["save"] = time.perf_counter() - t
    phases["save"] = _rss_mb()

    t = time.perf_counter()
    proba = p.predict_proba(job["test"]["paths"])
    seconds["predict"] = time.perf_counter() - t
    phases["predict"] = _rss_mb()

    label_index = {name: i for i, name in enumerate(p.labels)}
    truth = np.array([label_index[name] for name in job["test"]["labels"]])
    new_cols = np.array([label_index[cls["label"]] for cls in job["classes"]])
    acc_all = float((proba.argmax(1) == truth).mean())
    acc_new = float((new_cols[proba[:, new_cols].argmax(1)] == truth).mean())
    loaded = sorted(m for m in NOTABLE_MODULES if m in sys.modules)
    assert "torch" not in sys.modules, "the device process imported torch"
    out = {
        "bundle_labels": bundle_labels, "labels": p.labels, "stored_examples": int(len(p.stored_labels)),
        "stored_features_shape": list(p.stored_features.shape), "feature_dim": int(p.stored_features.shape[1]),
        "loss_first_last": [history[0]["loss"], history[-1]["loss"]], "state_file_mb": os.path.getsize(state_file) / 1e6,
        "test_images": int(len(truth)), "accuracy": acc_all, "accuracy_new_classes_only": acc_new,
        "seconds": seconds, "peak_rss_mb_after": phases, "modules_loaded": loaded, "torch_loaded": False,
    }
    with open(job["result"], "w") as fh:
        json.dump(out, fh, indent=2)
    print(f"device API: {len(truth)} test images, accuracy {acc_all:.4f} "
          f"(new classes only {acc_new:.4f}); 'torch' in sys.modules: False")
    return 0


# --------------------------------------------------------------------------- measuring a process


def _parse_elapsed(text: str) -> float:
    parts = [float(x) for x in text.strip().split(":")]
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + part
    return seconds


def timed(cmd: list[str], tmp: str, env: dict | None = None, name: str = "") -> dict:
    """Run ``cmd`` under /usr/bin/time -v; its peak RSS, wall and CPU time, stdout."""
    from bench_foundation import _proc_stat

    report = os.path.join(tmp, "time-v.txt")
    busy0, _ = _proc_stat()
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", "-o", report, *cmd], capture_output=True, text=True, env=env)
    wall_outside = time.perf_counter() - t0
    busy1, _ = _proc_stat()
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"{name or cmd[0]} failed with exit code {proc.returncode}")
    fields = {}
    with open(report) as fh:
        for line in fh:
            key, _, value = line.strip().rpartition(": ")
            fields[key] = value
    wall = _parse_elapsed(fields["Elapsed (wall clock) time (h:mm:ss or m:ss)"])
    cpu = float(fields["User time (seconds)"]) + float(fields["System time (seconds)"])
    capacity = wall_outside * (os.cpu_count() or 1)
    return {
        "name": name,
        "peak_rss_kbytes": int(fields["Maximum resident set size (kbytes)"]),
        "peak_rss_mb": int(fields["Maximum resident set size (kbytes)"]) * 1024 / 1e6,
        "wall_s": wall,
        "cpu_s": cpu,
        "other_cpu": round(max(0.0, (busy1 - busy0) - cpu) / capacity, 3) if capacity > 0 else 0.0,
        "stdout": proc.stdout,
    }


def torch_tripwire(tmp: str) -> tuple[str, str]:
    """A stand-in ``torch`` package: any import attempt is written to a file and fails."""
    root = os.path.join(tmp, "tripwire")
    os.makedirs(os.path.join(root, "torch"))
    marker = os.path.join(tmp, "torch-imported.txt")
    with open(os.path.join(root, "torch", "__init__.py"), "w") as fh:
        fh.write("import traceback\n"
                 f"with open({marker!r}, 'a') as fh:\n"
                 "    fh.write(''.join(traceback.format_stack()) + '\\n')\n"
                 "raise ImportError('edgetl bench: a device process imported torch')\n")
    return root, marker


# --------------------------------------------------------------------------- host side


def build_bundle(tmp: str, image_size: int, search: str = "off") -> tuple[str, dict]:
    """Step 1: a bundle trained on scikit-learn digits (torch allowed, not measured)."""
    from edgetl.demo import write_digits_folder
    from edgetl.training import train

    digits = os.path.join(tmp, "digits")
    write_digits_folder(digits)
    run_dir = os.path.join(tmp, "bundle")
    t0 = time.perf_counter()
    # search off by default: the final layer's features, the most general ones, for classes from
    # another domain (a digits-only search would pick an early tap tuned to digits).
    train(digits, run_dir, image_size=image_size, search=search, progress=False)
    seconds = time.perf_counter() - t0
    with open(os.path.join(run_dir, "metrics.json")) as fh:
        metrics = json.load(fh)
    sizes = {name: round(os.path.getsize(os.path.join(run_dir, name)) / 1e6, 3) for name in sorted(os.listdir(run_dir))
             if os.path.isfile(os.path.join(run_dir, name))}
    return run_dir, {"data": "scikit-learn load_digits (1,797 8x8 scans, 10 classes), written by "
                             "edgetl.demo.write_digits_folder", "image_size": image_size,
                     "search": search, "train_s": round(seconds, 1), "file_mb": sizes,
                     "val_accuracy": metrics.get("val_accuracy", metrics.get("accuracy"))}


def write_personal_data(tmp: str, num_classes: int, per_class: int, num_test: int, bundle_labels: list[str]):
    """Fashion-MNIST PNGs for the device: ``per_class`` train images of each of the
    first ``num_classes`` classes, and the first ``num_test`` test images of those classes."""
    import numpy as np

    from bench_foundation import load_dataset, write_image_folder

    train_x, train_y, test_x, test_y, classes, source = load_dataset()
    if num_classes > len(classes):
        raise SystemExit(f"--classes {num_classes}: the dataset has {len(classes)}")
    # Every personalised label must be new to the bundle (the fallback data is digits "0".."9").
    labels = [c if c not in bundle_labels else f"new-{c}" for c in classes]
    picked = np.concatenate([np.flatnonzero(train_y == c)[:per_class] for c in range(num_classes)])
    if len(picked) < num_classes * per_class:
        raise SystemExit(f"--per-class {per_class}: not enough training images in {source}")
    paths, targets = write_image_folder(os.path.join(tmp, "personal"), train_x[picked], train_y[picked], labels,
                                        "train")
    groups = [{"label": labels[c], "paths": [p for p, t in zip(paths, targets) if t == c]} for c in range(num_classes)]
    keep = np.flatnonzero(test_y < num_classes)[:num_test]
    test_paths, test_targets = write_image_folder(os.path.join(tmp, "test"), test_x[keep], test_y[keep], labels, "test")
    test = {"paths": test_paths, "labels": [labels[t] for t in test_targets]}
    return groups, test, source


def machine() -> dict:
    from bench_foundation import git_state, machine_info

    info = machine_info()
    info.update({"platform": platform.platform(), "machine": platform.machine(), "os_cpu_count": os.cpu_count()})
    return {"machine": info, "git": git_state()}


# --------------------------------------------------------------------------- report


def print_table(res: dict) -> None:
    api, cli, floor = res["api"], res["cli"], res["floor"]
    p = res["params"]
    goal = res["goal_mb"]

    def status(mb):
        return "met" if mb <= goal else "NOT MET"

    rows = [
        (f"(a) Python API, one process: add {p['classes']} x {p['per_class']}, fit {p['epochs']} epochs, save, "
         f"predict {api['result']['test_images']}", f"{api['peak_rss_mb']:.1f} MB", f"<= {goal:.0f} MB",
         status(api["peak_rss_mb"])),
        ("    wall (whole process) / add / fit / save / predict",
         f"{api['wall_s']:.2f} / {api['result']['seconds']['add']:.2f} / {api['result']['seconds']['fit']:.2f} / "
         f"{api['result']['seconds']['save']:.2f} / {api['result']['seconds']['predict']:.2f} s", "", ""),
        (f"    accuracy on {api['result']['test_images']} Fashion-MNIST test images (all "
         f"{len(api['result']['labels'])} labels / new classes only)",
         f"{api['result']['accuracy']:.1%} / {api['result']['accuracy_new_classes_only']:.1%}", "", ""),
        ("    torch in sys.modules", str(api["result"]["torch_loaded"]), "False",
         "met" if not api["result"]["torch_loaded"] else "NOT MET"),
        (f"(b) CLI, max over {len(cli['processes'])} processes", f"{cli['peak_rss_mb']:.1f} MB", f"<= {goal:.0f} MB",
         status(cli["peak_rss_mb"])),
        (f"    device add x {p['classes']}: max RSS / total wall (mean per process)",
         f"{cli['add_peak_rss_mb']:.1f} MB / {cli['add_wall_s']:.2f} s ({cli['add_wall_s'] / p['classes']:.2f})", "", ""),
        (f"    device fit --epochs {p['epochs']}: RSS / wall", f"{cli['fit_peak_rss_mb']:.1f} MB / {cli['fit_wall_s']:.2f} s",
         "", ""),
        (f"    device predict {cli['predict_images']} images: RSS / wall",
         f"{cli['predict_peak_rss_mb']:.1f} MB / {cli['predict_wall_s']:.2f} s", "", ""),
        ("    total wall (all CLI processes)", f"{cli['total_wall_s']:.2f} s", "", ""),
        (f"    accuracy of device predict ({cli['predict_images']} images)", f"{cli['accuracy']:.1%}", "", ""),
        ("    torch import attempted", str(cli["torch_import_attempted"]), "False",
         "met" if not cli["torch_import_attempted"] else "NOT MET"),
        ("floor: python -c 'import onnxruntime, numpy, PIL'", f"{floor['ort_numpy_pil']['peak_rss_mb']:.1f} MB", "", ""),
        ("floor: python -c 'import edgetl.runtime'", f"{floor['edgetl_runtime']['peak_rss_mb']:.1f} MB", "", ""),
    ]
    print("| measurement | value | goal | status |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print()
    print("(a) peak RSS after each phase (MB): " + ", ".join(
        f"{k} {v:.1f}" for k, v in api["result"]["peak_rss_mb_after"].items()))


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image-size", type=int, default=96, help="bundle input size in pixels (default 96)")
    ap.add_argument("--per-class", type=int, default=50, help="training images per personalised class (default 50)")
    ap.add_argument("--classes", type=int, default=10, help="Fashion-MNIST classes to personalise (default 10)")
    ap.add_argument("--epochs", type=int, default=20, help="epochs of Personalizer.fit / 'device fit' (default 20)")
    ap.add_argument("--test-images", type=int, default=1000, help="test images for the API process (default 1000)")
    ap.add_argument("--cli-predict-images", type=int, default=100,
                    help="test images for 'edgetl device predict' (default 100)")
    ap.add_argument("--int8", action="store_true", help="embed with features.int8.onnx")
    ap.add_argument("--search", choices=("on", "off"), default="off",
                    help="the bundle's transfer search (default off: final-layer features for the new domain)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    ap.add_argument("--out-json", default=None, help="write every figure here")
    ap.add_argument("--device-api", default=None, metavar="MANIFEST", help=argparse.SUPPRESS)  # step 2a's child
    args = ap.parse_args(argv)
    if args.device_api:
        return device_api(args.device_api)

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench_foundation's helpers
    tmp = tempfile.mkdtemp(prefix="edgetl-bench-personal-")
    os.environ["EDGETL_CACHE_DIR"] = os.path.join(tmp, "cache")  # never the user's cache
    edgetl_cli = os.path.join(os.path.dirname(sys.executable), "edgetl")
    if not os.path.isfile(edgetl_cli):
        edgetl_cli = shutil.which("edgetl") or "edgetl"
    res: dict = {"command": " ".join([os.path.basename(sys.executable)] + sys.argv), "params": vars(args),
                 "goal_mb": GOAL_MB, "started": time.strftime("%Y-%m-%d %H:%M:%S"), **machine(),
                 "loadavg_start": os.getloadavg()}
    del res["params"]["device_api"]
    try:
        print(f"[1] host: training the bundle on scikit-learn digits at {args.image_size} px", flush=True)
        run_dir, res["bundle"] = build_bundle(tmp, args.image_size, args.search)
        print(f"    {res['bundle']['train_s']} s; files (MB): {res['bundle']['file_mb']}", flush=True)
        with open(os.path.join(run_dir, "labels.txt")) as fh:
            bundle_labels = [line.strip() for line in fh if line.strip()]
        groups, test, source = write_personal_data(tmp, args.classes, args.per_class,
                                                   max(args.test_images, args.cli_predict_images), bundle_labels)
        res["dataset"] = source
        if source.startswith("FALLBACK"):
            print("WARNING: personalising on digits, the bundle's own domain", file=sys.stderr)

        print("[2c] floor", flush=True)
        res["floor"] = {
            "ort_numpy_pil": timed([sys.executable, "-c", "import onnxruntime, numpy, PIL"], tmp, name="floor"),
            "edgetl_runtime": timed([sys.executable, "-c", "import edgetl.runtime"], tmp, name="edgetl.runtime"),
        }

        print(f"[2a] device, Python API: {args.classes} classes x {args.per_class}, fit {args.epochs} epochs, "
              f"predict {args.test_images}", flush=True)
        manifest = os.path.join(tmp, "api-job.json")
        result_path = os.path.join(tmp, "api-result.json")
        with open(manifest, "w") as fh:
            json.dump({"run_dir": run_dir, "state_dir": os.path.join(tmp, "state-api"), "int8": args.int8,
                       "epochs": args.epochs, "classes": groups, "result": result_path,
                       "test": {k: v[: args.test_images] for k, v in test.items()}}, fh)
        api = timed([sys.executable, os.path.abspath(__file__), "--device-api", manifest], tmp, name="api")
        with open(result_path) as fh:
            api["result"] = json.load(fh)
        res["api"] = api
        print(f"    {api['stdout'].strip()}\n    peak RSS {api['peak_rss_mb']:.1f} MB, wall {api['wall_s']:.2f} s",
              flush=True)

        print(f"[2b] device, CLI: {args.classes} x 'edgetl device add', 'device fit', "
              f"'device predict' on {args.cli_predict_images}", flush=True)
        tripwire, marker = torch_tripwire(tmp)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [tripwire, os.environ.get("PYTHONPATH")]))}
        state = os.path.join(tmp, "state-cli")
        procs = []
        for g in groups:
            cmd = [edgetl_cli, "device", "add", run_dir, state, "--label", g["label"], *g["paths"]]
            procs.append(timed(cmd + (["--int8"] if args.int8 else []), tmp, env, name=f"add {g['label']}"))
        procs.append(timed([edgetl_cli, "device", "fit", state, "--epochs", str(args.epochs)], tmp, env, name="fit"))
        cli_test = test["paths"][: args.cli_predict_images]
        procs.append(timed([edgetl_cli, "device", "predict", state, *cli_test, "--json"], tmp, env, name="predict"))
        answers = json.loads(procs[-1]["stdout"])
        truth = test["labels"][: args.cli_predict_images]
        adds = procs[:-2]
        res["cli"] = {
            "executable": edgetl_cli,
            "processes": procs,
            "peak_rss_mb": max(p["peak_rss_mb"] for p in procs),
            "add_peak_rss_mb": max(p["peak_rss_mb"] for p in adds),
            "add_wall_s": sum(p["wall_s"] for p in adds),
            "fit_peak_rss_mb": procs[-2]["peak_rss_mb"], "fit_wall_s": procs[-2]["wall_s"],
            "predict_peak_rss_mb": procs[-1]["peak_rss_mb"], "predict_wall_s": procs[-1]["wall_s"],
            "total_wall_s": sum(p["wall_s"] for p in procs),
            "predict_images": len(cli_test),
            "accuracy": sum(a["label"] == t for a, t in zip(answers, truth)) / len(truth),
            "fit_output": procs[-2]["stdout"].strip(),
            "torch_import_attempted": os.path.exists(marker),
        }
        procs[-1]["stdout"] = f"({len(answers)} JSON predictions)"
        if os.path.exists(marker):
            with open(marker) as fh:
                res["cli"]["torch_import_stack"] = fh.read()
        print(f"    max peak RSS {res['cli']['peak_rss_mb']:.1f} MB, total wall {res['cli']['total_wall_s']:.2f} s; "
              f"{res['cli']['fit_output']}", flush=True)
    finally:
        if args.keep:
            print(f"temporary files kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    res["loadavg_end"] = os.getloadavg()
    res["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    busy = [p["name"] for p in [res["api"], *res["cli"]["processes"]] if p["other_cpu"] > 0.05]
    res["noisy_processes"] = busy
    print()
    print_table(res)
    if busy:
        print(f"WARNING: other processes used over 5 % of the CPU during: {', '.join(busy)} "
              f"(wall times pessimistic; RSS unaffected)")
    print(f"commit {res['git'].get('commit')}; uncommitted under src/: {len(res['git'].get('src_uncommitted_files', []))} "
          f"files; machine {res['machine']['os_cpu_count']} CPUs, {res['machine']['cpu_model']}")
    if args.out_json:
        os.makedirs(os.path.dirname(os.path.abspath(args.out_json)), exist_ok=True)
        with open(args.out_json, "w") as fh:
            json.dump(res, fh, indent=2)
        print(f"results written to {args.out_json}")
    ok = (res["api"]["peak_rss_mb"] <= GOAL_MB and res["cli"]["peak_rss_mb"] <= GOAL_MB
          and not res["cli"]["torch_import_attempted"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
