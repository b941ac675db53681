"""A new class learned on the device from a few photos, as a new user would do it.

Issue item: "On-device learning that works from 5 photos". Goal: a class the
bundle never saw, learned from 5 photos with ``edgetl.runtime.Personalizer``
(``add_examples`` then the default ``fit()``), reaches >= 85 % recall on
held-out photos of it while the old classes lose <= 2 points, on digits and on
real photos alike.

For each data kind:

1. Host: ``edgetl.train(folder_of_old_classes, run, progress=False)`` with the
   DEFAULT settings (the search picks tap, input size and head; nothing pinned).
2. Device, for each new class (never seen by the bundle), for k in 1, 5, 20
   photos, for each of ``--seeds`` random draws of which photos:
   ``Personalizer(run, state_dir)`` (fresh, nothing saved), ``add_examples(k
   photos, label)`` -> measure (the imprinted class, no training) -> ``fit()``
   with its defaults -> measure. Measured: recall of the new class on its other
   photos (every photo of the class not among the k; argmax over every class,
   old and new), and top-1 accuracy of the old classes on their held-out photos
   (argmax over every class: an old photo called the new class is an error),
   against the bundle's own accuracy on the same photos.

The held-out photos are embedded once per bundle (``Personalizer.embed``) and
classified with the personalised head's weights, which is what
``Personalizer.predict`` computes (checked on a few photos per bundle).

Data kinds:

* ``digits``: scikit-learn's 1,797 handwritten digit scans
  (``edgetl.demo.write_digits_folder``). The bundle learns 0-4 from half of
  their scans (the other half is the old classes' test set); new classes 5-9.
* ``fashion``: Fashion-MNIST (``/usr/share/datasets/fashion-mnist``, Debian
  ``dataset-fashion-mnist``; skipped if absent). Old: the first five labels
  (t-shirt, trouser, pullover, dress, coat), ``--fashion-train`` train images
  each, 100 test images each for the old-class accuracy; new: sandal, shirt,
  sneaker, bag, ankle boot, 150 test images each.
* ``gcompris_photos``, ``qabcs_photos``, ``tuxpaint_stamps`` (cut-out
  photos), ``emoji_icons`` (colour icons): from Debian packages
  (``bench/photo_sets.py``; 15-39 per class). Leave one class out:
  one bundle per class, trained on the train half of the others (their test
  half is the old-class test set); the left-out class's every photo is its
  pool (k = 20 becomes N - 5 when the class has fewer than 25 photos, so that
  at least 5 remain to measure).

Run from the repository root (about 5 minutes on 2 cores)::

    python bench/bench_new_class.py --out-json /tmp/benchlogs/new_class.json

``--bundle-cache DIR`` keeps the trained bundles in DIR and reuses them on the
next run, to compare on-device methods on the same bundles (delete DIR when
``edgetl train`` changes).

Uses the default edgetl cache ($EDGETL_CACHE_DIR or ~/.cache/edgetl) for the
exported backbone and the feature cache; the images, bundles and states go to
a temporary folder, deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import zlib

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

KS = (1, 5, 20)
GOAL_RECALL = 0.85
GOAL_OLD_DROP = 0.02
MIN_QUERY = 5


# --------------------------------------------------------------------------- data


def _copy(files, dst: str) -> None:
    os.makedirs(dst, exist_ok=True)
    for f in files:
        shutil.copy(f, dst)


def digits_tasks(root: str) -> list[dict]:
    """One bundle (digits 0-4), new classes 5-9."""
    from edgetl.demo import write_digits_folder

    every = os.path.join(root, "all")
    write_digits_folder(every)
    old, new = list("01234"), list("56789")
    train_dir = os.path.join(root, "train")
    old_test = []
    for d in old:
        files = [os.path.join(every, d, f) for f in sorted(os.listdir(os.path.join(every, d)))]
        files = [files[i] for i in np.random.default_rng(zlib.crc32(d.encode())).permutation(len(files))]
        half = len(files) // 2
        _copy(files[:half], os.path.join(train_dir, d))
        old_test += [(f, d) for f in files[half:]]
    pools = {d: [os.path.join(every, d, f) for f in sorted(os.listdir(os.path.join(every, d)))] for d in new}
    return [{"name": "digits 0-4", "train_dir": train_dir, "old_test": old_test, "new": pools}]


def fashion_tasks(root: str, per_class: int) -> list[dict]:
    from bench_foundation import FASHION_CLASSES, _idx_path, read_idx

    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte"]
    paths = [_idx_path(n) for n in names]
    if not all(paths):
        print("fashion: Fashion-MNIST not found (apt-get install dataset-fashion-mnist): skipped", file=sys.stderr)
        return []
    tr_x, tr_y, te_x, te_y = (read_idx(p) for p in paths)
    old, new = FASHION_CLASSES[:5], FASHION_CLASSES[5:]

    def write(images, folder):
        os.makedirs(folder, exist_ok=True)
        out = []
        for i, im in enumerate(images):
            path = os.path.join(folder, f"{i:05d}.png")
            Image.fromarray(im, "L").save(path)
            out.append(path)
        return out

    train_dir = os.path.join(root, "train")
    old_test, pools = [], {}
    for c, name in enumerate(FASHION_CLASSES):
        tr, te = np.flatnonzero(tr_y == c), np.flatnonzero(te_y == c)
        if name in old:
            write(tr_x[tr[:per_class]], os.path.join(train_dir, name))
            old_test += [(p, name) for p in write(te_x[te[:100]], os.path.join(root, "old_test", name))]
        else:
            pools[name] = write(te_x[te[:150]], os.path.join(root, "new", name))
    return [{"name": "fashion 5 old", "train_dir": train_dir, "old_test": old_test, "new": pools}]


def photo_tasks(root: str, set_name: str) -> list[dict]:
    """Leave one class out: one bundle per class of the set."""
    import photo_sets

    try:
        tr, te = photo_sets.build(set_name, os.path.join(root, "src"))
    except RuntimeError as exc:
        print(f"{set_name}: {exc}: skipped", file=sys.stderr)
        return []
    classes = sorted(os.listdir(tr))

    def files(folder, c):
        return [os.path.join(folder, c, f) for f in sorted(os.listdir(os.path.join(folder, c)))]

    tasks = []
    for left_out in classes:
        train_dir = os.path.join(root, f"without-{left_out}")
        for c in classes:
            if c != left_out:
                _copy(files(tr, c), os.path.join(train_dir, c))
        old_test = [(f, c) for c in classes if c != left_out for f in files(te, c)]
        tasks.append({"name": f"without {left_out}", "train_dir": train_dir, "old_test": old_test,
                      "new": {left_out: files(tr, left_out) + files(te, left_out)}})
    return tasks


# --------------------------------------------------------------------------- measuring


def _predict(p, features: np.ndarray) -> np.ndarray:
    """What Personalizer.predict answers (argmax of the head on standardised features), by label index."""
    return np.argmax(p._standardise(features) @ p.weight.T + p.bias, axis=1)


def train_bundle(task: dict, root: str, cached: str | None = None) -> tuple[str, float]:
    """The task's bundle: trained into ``root/run``, or reused from ``cached``
    (``--bundle-cache``: a bundle trained there by an earlier run on the same
    data, kept; the data are built the same way every run)."""
    import edgetl

    run = cached or os.path.join(root, "run")
    if cached and os.path.isfile(os.path.join(cached, "metrics.json")):
        return run, 0.0
    t0 = time.perf_counter()
    edgetl.train(task["train_dir"], run, progress=False)
    return run, time.perf_counter() - t0


def run_task(task: dict, root: str, seeds: int, log, cached: str | None = None) -> dict:
    from edgetl.runtime import Personalizer

    run, train_s = train_bundle(task, root, cached)
    with open(os.path.join(run, "metrics.json")) as fh:
        chosen = json.load(fh)["chosen"]
    base = Personalizer(run, os.path.join(root, "unused"))
    old_labels = list(base.labels)
    old_paths = [f for f, _ in task["old_test"]]
    old_truth = np.array([old_labels.index(c) for _, c in task["old_test"]])
    old_feats = base.embed(old_paths)
    acc_before = float((_predict(base, old_feats) == old_truth).mean())
    # The shortcut is what predict() computes:
    check = [p.label for p in base.predict(old_paths[:8])]
    assert check == [old_labels[i] for i in _predict(base, old_feats[:8])], check
    new_feats = {c: base.embed(paths) for c, paths in task["new"].items()}
    trials = []
    t_dev = time.perf_counter()
    for new_class, paths in task["new"].items():
        feats = new_feats[new_class]
        for seed in range(seeds):
            order = np.random.default_rng([seed, zlib.crc32(new_class.encode())]).permutation(len(paths))
            for k in KS:
                k_used = min(k, len(paths) - MIN_QUERY)
                support, query = order[:k_used], order[k_used:]
                p = Personalizer(run, os.path.join(root, "state"))
                p.add_examples([paths[i] for i in support], new_class)
                new_index = p.labels.index(new_class)
                row = {"new_class": new_class, "seed": seed, "k": k, "k_used": int(k_used), "query": int(len(query))}
                for stage in ("imprint", "fit"):
                    if stage == "fit":
                        t = time.perf_counter()
                        p.fit()
                        row["fit_s"] = time.perf_counter() - t
                    row[f"recall_{stage}"] = float((_predict(p, feats[query]) == new_index).mean())
                    row[f"old_acc_{stage}"] = float((_predict(p, old_feats) == old_truth).mean())
                trials.append(row)
    device_s = time.perf_counter() - t_dev
    log(f"  {task['name']}: {chosen['tap']} at {chosen['image_size']} px ({chosen['dim']}-d), old accuracy "
        f"{acc_before:.3f}; train {train_s:.0f} s, device {device_s:.0f} s")
    if not cached:
        shutil.rmtree(run)
    return {"task": task["name"], "chosen": chosen, "old_classes": old_labels, "old_test_images": len(old_paths),
            "old_acc_before": acc_before, "train_s": train_s, "device_s": device_s, "trials": trials}


def summarise(results: list[dict]) -> dict:
    """Per k: means over every (new class, seed), old-class change against each trial's own bundle."""
    out = {}
    for k in KS:
        rows = [(r, t) for r in results for t in r["trials"] if t["k"] == k]
        if not rows:
            continue
        s = {"trials": len(rows), "k_used_min": min(t["k_used"] for _, t in rows)}
        for stage in ("imprint", "fit"):
            s[f"recall_{stage}"] = float(np.mean([t[f"recall_{stage}"] for _, t in rows]))
            s[f"recall_{stage}_min_class"] = float(min(
                np.mean([t[f"recall_{stage}"] for r, t in rows if t["new_class"] == c and r["task"] == task])
                for task, c in {(r["task"], t["new_class"]) for r, t in rows}))
            s[f"old_change_{stage}"] = float(np.mean([t[f"old_acc_{stage}"] - r["old_acc_before"] for r, t in rows]))
        out[str(k)] = s
    out["old_acc_before"] = float(np.mean([r["old_acc_before"] for r in results]))
    five = out.get("5")
    out["goal_met"] = bool(five and five["recall_fit"] >= GOAL_RECALL and five["old_change_fit"] >= -GOAL_OLD_DROP)
    return out


def print_table(summary: dict, log) -> None:
    log("| data | photos | new-class recall, imprint | after fit() | worst class after fit | "
        "old classes, imprint | after fit() |")
    log("|---|---|---|---|---|---|---|")
    for kind, s in summary.items():
        for k in KS:
            if str(k) not in s:
                continue
            r = s[str(k)]
            shown = f"{k}" if r["k_used_min"] == k else f"{k} (>= {r['k_used_min']})"
            log(f"| {kind} | {shown} | {100 * r['recall_imprint']:.1f} % | **{100 * r['recall_fit']:.1f} %** | "
                f"{100 * r['recall_fit_min_class']:.1f} % | {100 * r['old_change_imprint']:+.1f} | "
                f"**{100 * r['old_change_fit']:+.1f}** |")
    log("")
    for kind, s in summary.items():
        log(f"{kind}: old classes {100 * s['old_acc_before']:.1f} % before; goal (5 photos, after fit: recall >= "
            f"{100 * GOAL_RECALL:.0f} %, old classes >= -{100 * GOAL_OLD_DROP:.0f} points): "
            f"{'met' if s['goal_met'] else 'NOT met'}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", default=["digits", "gcompris_photos", "qabcs_photos", "fashion"],
                        choices=["digits", "fashion", "gcompris_photos", "qabcs_photos", "tuxpaint_stamps",
                                 "emoji_icons"])
    parser.add_argument("--seeds", type=int, default=5, help="random draws of the k photos per new class")
    parser.add_argument("--fashion-train", type=int, default=100, help="train images per old Fashion-MNIST class")
    parser.add_argument("--out-json")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--bundle-cache", help="keep the trained bundles in this folder and reuse them on the next "
                        "run (to compare on-device methods on the same bundles; delete it when edgetl train changes)")
    args = parser.parse_args(argv)

    from bench_foundation import git_state, machine_info

    started = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="edgetl-new-class-")
    results, summary = {}, {}
    try:
        for kind in args.data:
            root = os.path.join(tmp, kind)
            if kind == "digits":
                tasks = digits_tasks(root)
            elif kind == "fashion":
                tasks = fashion_tasks(root, args.fashion_train)
            else:
                tasks = photo_tasks(root, kind)
            if not tasks:
                continue
            print(f"{kind}:", flush=True)
            results[kind] = [run_task(t, os.path.join(root, f"task{i}"), args.seeds, lambda m: print(m, flush=True),
                                      os.path.join(os.path.abspath(args.bundle_cache), kind, f"task{i}")
                                      if args.bundle_cache else None) for i, t in enumerate(tasks)]
            summary[kind] = summarise(results[kind])
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print_table(summary, print)
    total = time.perf_counter() - started
    machine = machine_info()
    print(f"\n{machine['cpu_model']}, {machine['nproc']} cores; {total:.0f} s in all")
    if args.out_json:
        os.makedirs(os.path.dirname(os.path.abspath(args.out_json)), exist_ok=True)
        with open(args.out_json, "w") as fh:
            json.dump({"started": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine, "git": git_state(),
                       "args": vars(args), "seconds": total, "goal": {"recall": GOAL_RECALL,
                       "old_drop": GOAL_OLD_DROP, "photos": 5}, "summary": summary, "results": results},
                      fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
