"""Budget-aware transfer search benchmark (issue 4).

For each dataset, ``edgetl.training.train`` runs as ``edgetl train`` does
(search on, EfficientNet-Lite0, packaged ImageNet weights) on a training
folder; a separate test folder, never seen by training or the search, gives
the test accuracy of

* the chosen model, through the device runtime (``Predictor``, model.onnx);
* the naive transfer recipe (softmax head on the final layer at 224 px);
* the raw-pixel logistic-regression baseline;

both baselines fitted on the same training images as the shipped model
(``TrainResult.baseline_models``). Datasets:

* ``digits``: scikit-learn's 1,797 8x8 scans, stratified 50/50 train/test;
* ``fashion-5000``: Fashion-MNIST, 500 per class from the training set,
  ``--test-images`` from the official test set;
* ``fashion-100``: Fashion-MNIST, 100 per class; the same test images;
* ``fashion-100-budget``: the same, with ``--max-macs`` = 1/10 of the naive
  model's MACs (the full backbone at its default size).

Search cost: on ``--cost-images`` Fashion-MNIST images with empty caches,
the time to extract every tap at every size of the ladder (one decode per
image) against one extraction of the taps graph at the largest size alone.

Fashion-MNIST: ``apt-get install dataset-fashion-mnist``.

Run from the repository root::

    python bench/bench_search.py --out-json /tmp/benchlogs/search.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_foundation import (FASHION_CLASSES, _proc_stat, git_state, load_dataset, machine_info,  # noqa: E402
                              write_image_folder)

BACKBONE = "efficientnet_lite0"


def per_class(x: np.ndarray, y: np.ndarray, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:n] for c in np.unique(y)])
    return x[rows], y[rows]


def run_case(name: str, train_dir: str, test_dir: str, tmp: str, cache_dir: str, **kwargs) -> dict:
    from edgetl.demo import labeled_paths
    from edgetl.runtime import Predictor
    from edgetl.search import search_summary
    from edgetl.training import train

    print(f"\n== {name} ==", flush=True)
    busy0, _ = _proc_stat()
    t = time.perf_counter()
    result = train(train_dir, os.path.join(tmp, "runs", name), cache_dir=cache_dir, progress=False, overwrite=True, **kwargs)
    wall = time.perf_counter() - t
    busy1, _ = _proc_stat()
    m = result.metrics
    for line in search_summary(m, result.searcher, limit=8):
        print(line)
    test_paths, y_test = labeled_paths(test_dir, m["labels"])
    chosen_pred = Predictor(result.run_dir).predict_proba(test_paths).argmax(axis=1)
    test = {
        "chosen": float((chosen_pred == y_test).mean()),
        "naive_final_layer": result.baseline_models["final_layer"].score(test_paths, y_test),
        "raw_pixels": result.baseline_models["raw_pixels"].score(test_paths, y_test),
    }
    print(f"TEST ({len(test_paths)} images): chosen {test['chosen']:.2%}, naive final layer "
          f"{test['naive_final_layer']:.2%}, raw pixels {test['raw_pixels']:.2%}", flush=True)
    scored = [c for c in m["search"]["candidates"] if c["val_accuracy"] is not None]
    return {
        "train_images": m["counts"]["images_used"],
        "test_images": len(test_paths),
        "chosen": m["chosen"],
        "baselines_val": {"raw_pixels": m["baselines"]["raw_pixels"]["val_accuracy"],
                          "final_layer": m["baselines"]["final_layer"]["val_accuracy"]},
        "naive_macs": m["baselines"]["final_layer"]["macs"],
        "test_accuracy": test,
        "chosen_minus_naive_points": 100 * (test["chosen"] - test["naive_final_layer"]),
        "chosen_minus_raw_points": 100 * (test["chosen"] - test["raw_pixels"]),
        "protocol": m["search"]["protocol"],
        "num_candidates": len(m["search"]["candidates"]),
        "num_scored": len(scored),
        "budget": m["search"]["budget"],
        "search_timings_s": m["search"]["timings_s"],
        "train_timings_s": m["timings_s"],
        "train_wall_s": wall,
        "plot": os.path.join(result.run_dir, "search.png"),
        "cpu_busy_s_during": busy1 - busy0,
    }


def bench_cost(paths: list[str], tmp: str) -> dict:
    """Every size of the ladder (one decode per image) vs the largest alone, empty caches."""
    from edgetl.export.backbone_onnx import export_backbone
    from edgetl.features.extract import FeatureExtractor
    from edgetl.features.multi import extract_many
    from edgetl.search import search_sizes
    from edgetl.zoo import get_spec
    from edgetl.zoo.grayscale import gray_input_spec

    spec = gray_input_spec(get_spec(BACKBONE).input_spec)
    sizes = search_sizes(spec.image_size)
    models = os.path.join(tmp, "cost-models")
    graphs = [export_backbone(BACKBONE, input_spec=spec.replace(image_size=s), cache_dir=models, taps=True)
              for s in sizes]
    out = {"images": len(paths), "sizes": sizes, "runs": []}
    for repeat in range(2):
        t = time.perf_counter()
        FeatureExtractor(graphs[0], cache_dir=os.path.join(tmp, f"cost-one-{repeat}")).extract(paths, progress=False)
        one = time.perf_counter() - t
        t = time.perf_counter()
        extract_many(graphs, paths, cache_dir=os.path.join(tmp, f"cost-all-{repeat}"), progress=False)
        ladder = time.perf_counter() - t
        out["runs"].append({"largest_only_s": one, "all_sizes_s": ladder, "ratio": ladder / one})
        print(f"cost: {len(paths)} images, {sizes[0]} px alone {one:.1f} s; all of {sizes} {ladder:.1f} s "
              f"-> {ladder / one:.2f}x", flush=True)
    out["ratio_median"] = float(np.median([r["ratio"] for r in out["runs"]]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--test-images", type=int, default=3000, help="Fashion-MNIST test images (from the 10,000)")
    ap.add_argument("--cost-images", type=int, default=2000)
    ap.add_argument("--cases", default="digits,fashion-5000,fashion-100,fashion-100-budget,cost")
    ap.add_argument("--out-json", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (run folders, plots)")
    args = ap.parse_args(argv)
    cases = args.cases.split(",")
    res = {"machine": machine_info(), "git": git_state(), "cases": {}, "argv": sys.argv[1:]}
    tmp = tempfile.mkdtemp(prefix="edgetl-bench-search-")
    cache_dir = os.path.join(tmp, "cache")
    try:
        if "digits" in cases:
            from edgetl.demo import split_folder, write_digits_folder

            write_digits_folder(os.path.join(tmp, "digits-all"))
            tr, te = split_folder(os.path.join(tmp, "digits-all"), os.path.join(tmp, "digits"), 0.5, seed=0)
            res["cases"]["digits"] = run_case("digits", tr, te, tmp, cache_dir, crop_fraction=1.0)
        fashion = [c for c in cases if c.startswith("fashion") or c == "cost"]
        if fashion:
            train_x, train_y, test_x, test_y, classes, desc = load_dataset()
            if classes != FASHION_CLASSES:
                raise SystemExit("Fashion-MNIST is needed: apt-get install dataset-fashion-mnist")
            res["fashion_source"] = desc
            tx, ty = per_class(test_x, test_y, args.test_images // 10, seed=1)
            test_dir = os.path.join(tmp, "fashion-test")
            write_image_folder(test_dir, tx, ty, classes, "test")
            for case, n in (("fashion-5000", 500), ("fashion-100", 100), ("fashion-100-budget", 100)):
                if case not in cases:
                    continue
                folder = os.path.join(tmp, f"fashion-train-{n}")
                if not os.path.isdir(folder):
                    x, y = per_class(train_x, train_y, n, seed=0)
                    write_image_folder(folder, x, y, classes, "train")
                kwargs = {}
                if case.endswith("budget"):
                    full = res["cases"].get("fashion-100", {}).get("naive_macs")
                    if full is None:
                        from edgetl.zoo.profile import tap_macs

                        full = tap_macs(BACKBONE, 224, channels=1)["final"]
                    kwargs["max_macs"] = full / 10
                res["cases"][case] = run_case(case, folder, test_dir, tmp, cache_dir, **kwargs)
            if "fashion-100-budget" in res["cases"] and "fashion-100" in res["cases"]:
                a = res["cases"]["fashion-100"]["test_accuracy"]["chosen"]
                b = res["cases"]["fashion-100-budget"]["test_accuracy"]["chosen"]
                res["budget_gap_points"] = 100 * (a - b)
            if "cost" in cases:
                x, y = per_class(train_x, train_y, args.cost_images // 10, seed=2)
                paths, _ = write_image_folder(os.path.join(tmp, "cost-images"), x, y, classes, "cost")
                res["cost"] = bench_cost(paths, tmp)
    finally:
        if args.out_json:
            os.makedirs(os.path.dirname(os.path.abspath(args.out_json)), exist_ok=True)
            with open(args.out_json, "w") as fh:
                json.dump(res, fh, indent=2, default=str)
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")

    print("\n| data | train images | chosen (tap, size, head) | MACs chosen / naive | test: chosen | naive final "
          "layer | raw pixels |")
    print("|---|---|---|---|---|---|---|")
    for name, c in res["cases"].items():
        ch, t = c["chosen"], c["test_accuracy"]
        print(f"| {name} | {c['train_images']} | {ch['tap']}, {ch['image_size']} px, {ch['head']} | "
              f"{ch['macs'] / 1e6:.1f}M / {c['naive_macs'] / 1e6:.1f}M | {t['chosen']:.2%} | "
              f"{t['naive_final_layer']:.2%} | {t['raw_pixels']:.2%} |")
    if "budget_gap_points" in res:
        print(f"budget 1/10 of the naive MACs, fashion-100: {res['budget_gap_points']:+.2f} points vs unconstrained")
    if "cost" in res:
        print(f"search extraction cost: {res['cost']['ratio_median']:.2f}x one extraction at the largest size")
    return 0


if __name__ == "__main__":
    sys.exit(main())
