"""Is the search worth its cost? (issue 17, goal 4)

For each data set, the images of its train and test folders are pooled and
split 50/50 (stratified) ``--repeats`` times. On each split the search runs
exactly as ``edgetl train`` runs it (``Search.score``: the closed-form proxy,
k-fold on the training half, the reference and the choice rule) and the
chosen candidate's softmax head (fitted as the run fits it: holdout, then
refitted on every training image) is scored on the test half, beside

* ``naive``: the same head on the final layer at 224 px (the article's
  recipe, the "linear probe" features);
* ``all@224``: the same head on every tap joined, at 224 px (the default
  the search must beat);
* ``best-scored``: the rule before issue 17 (the best selection score,
  ties within half a point to the cheaper candidate).

It prints, per set, the mean test accuracy of each policy and how often the
chosen candidate beats / ties (within ``--tie`` points) / loses to the naive
head. Features come from the cache (one extraction per image), so the
repeats cost only head fits.

Sets: ``digits`` (scikit-learn), ``fashion-1000`` (Fashion-MNIST: 100 per
class from the training set + 100 per class from the test set), and every
set of ``photo_sets.py`` whose Debian package is installed.

    python bench/bench_selection.py --repeats 8 --out-json /tmp/selection.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

BACKBONE = "efficientnet_lite0"


def _digits(root: str) -> str:
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.clip(d.images * 255 / 16 + 0.5, 0, 255).astype(np.uint8)
    for i, (image, label) in enumerate(zip(images, d.target)):
        os.makedirs(os.path.join(root, str(label)), exist_ok=True)
        Image.fromarray(image).save(os.path.join(root, str(label), f"{i:04d}.png"))
    return root


def _fashion(root: str) -> str:
    from bench_foundation import load_dataset, write_image_folder

    trx, try_, tex, tey, classes, _ = load_dataset()
    rng = np.random.default_rng(0)
    for name, (x, y) in (("a", (trx, try_)), ("b", (tex, tey))):
        idx = np.concatenate([rng.choice(np.flatnonzero(y == c), 100, replace=False) for c in range(10)])
        write_image_folder(root, x[idx], y[idx], classes, name)
    return root


def _photo_set(name: str, root: str) -> str:
    import shutil

    import photo_sets

    train, test = photo_sets.build(name, os.path.join(root, "split"))
    pooled = os.path.join(root, "pooled")
    for part in (train, test):
        for cls in os.listdir(part):
            os.makedirs(os.path.join(pooled, cls), exist_ok=True)
            for f in os.listdir(os.path.join(part, cls)):
                shutil.copy(os.path.join(part, cls, f), os.path.join(pooled, cls, f"{os.path.basename(part)}-{f}"))
    return pooled


def make_sets(work: str, wanted: list[str] | None) -> dict[str, str]:
    import photo_sets

    makers = {"digits": _digits, "fashion-1000": _fashion}
    for name in photo_sets.AVAILABLE:
        makers[name] = lambda root, n=name: _photo_set(n, root)
    out = {}
    for name, make in makers.items():
        if wanted and name not in wanted:
            continue
        try:
            out[name] = make(os.path.join(work, name))
        except Exception as exc:  # a missing package: say so, go on
            print(f"skipping {name}: {str(exc).splitlines()[0]}", file=sys.stderr)
    return out


def _split(y: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(1000 + seed)
    train = np.zeros(len(y), bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        train[idx[: len(idx) // 2]] = True
    return train


def run_set(folder: str, repeats: int, tie: float) -> dict:
    from edgetl.data.folder import scan_folder, stratified_split
    from edgetl.search import Search, choose, holdout_and_refit, search_sizes, single_thread
    from edgetl.training.config import HEAD_L2_PER_IMAGE
    from edgetl.training.inputs import base_input_spec
    from edgetl.zoo import ALL_TAPS, FINAL_TAP, get_spec

    spec = get_spec(BACKBONE)
    data = scan_folder(folder)
    base = base_input_spec(spec, data.paths)
    searcher = Search(BACKBONE, "default", base, search_sizes(224), len(data.classes), heads=("softmax",),
                      baseline_size=224)
    searcher.extract(data.paths, progress=False)
    full = dict(searcher.features)
    y_all = data.targets[full[224].ok]
    rows = []
    for rep in range(repeats):
        train = _split(y_all, rep)
        ytr, yte = y_all[train], y_all[~train]
        searcher.features = {s: dataclasses.replace(e, features=e.features[train]) for s, e in full.items()}
        tr_idx, va_idx = stratified_split(ytr, 0.2, 0)
        params = {"epochs": 100, "patience": 10, "learning_rate": 1e-3, "l2": HEAD_L2_PER_IMAGE / len(ytr), "seed": 0}
        chosen = searcher.score(ytr, tr_idx, va_idx, seed=0, head_params=params)
        best_scored = choose(searcher.candidates)

        def test_acc(size: int, tap: str) -> float:
            X = full[size].tap(tap)
            with single_thread():
                _, head = holdout_and_refit("softmax", params, X[train], ytr, tr_idx, va_idx, len(data.classes))
            return float((head.predict(X[~train]) == yte).mean())

        row = {"chosen": chosen.name, "chosen_macs": int(chosen.macs), "best_scored": best_scored.name,
               "test": {"chosen": test_acc(chosen.image_size, chosen.tap), "naive": test_acc(224, FINAL_TAP),
                        "all@224": test_acc(224, ALL_TAPS),
                        "best-scored": test_acc(best_scored.image_size, best_scored.tap)}}
        rows.append(row)
        print(f"  split {rep}: {row['chosen']:<22} " + "  ".join(f"{k} {v:.1%}" for k, v in row["test"].items()),
              flush=True)
    diffs = np.array([(r["test"]["chosen"] - r["test"]["naive"]) * 100 for r in rows])
    return {"images": int(len(y_all)), "classes": len(data.classes), "splits": rows,
            "mean": {k: float(np.mean([r["test"][k] for r in rows])) for k in rows[0]["test"]},
            "vs_naive": {"wins": int((diffs > tie).sum()), "ties": int((np.abs(diffs) <= tie).sum()),
                         "losses": int((diffs < -tie).sum())}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", help="comma list (default: all available)")
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--tie", type=float, default=0.5, help="points within which two accuracies tie")
    p.add_argument("--work", help="keep the folders here (default: a temporary folder)")
    p.add_argument("--out-json")
    args = p.parse_args(argv)
    work = args.work or tempfile.mkdtemp(prefix="edgetl-selection-")
    sets = make_sets(work, args.sets.split(",") if args.sets else None)
    results = {}
    for name, folder in sets.items():
        print(f"{name}:", flush=True)
        results[name] = run_set(folder, args.repeats, args.tie)
    print(f"\n| set | images | chosen (mean test) | naive final@224 | all@224 | best-scored (old rule) | "
          f"chosen vs naive: wins / ties / losses |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        m, v = r["mean"], r["vs_naive"]
        print(f"| {name} | {r['images']} | {m['chosen']:.1%} | {m['naive']:.1%} | {m['all@224']:.1%} | "
              f"{m['best-scored']:.1%} | {v['wins']} / {v['ties']} / {v['losses']} |")
    if args.out_json:
        with open(args.out_json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
