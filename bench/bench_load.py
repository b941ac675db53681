"""Load benchmark (issue 7): predicting 10,000 images in one call streams them.

    python bench/bench_load.py                       # 1,000 and 10,000 images
    python bench/bench_load.py --counts 1000 10000 --image-size 64 --run RUN_DIR

1. A bundle: ``--run`` if given, else ``edgetl.train`` on the digits folder
   (``edgetl.demo.write_digits_folder``) at ``--image-size`` px, search off.
2. ``max(--counts)`` distinct JPEG photos (``--photo-size`` px, noise + a
   shape, every file different) written once to a temporary folder; the first
   N of them are used for each count.
3. For each count, each way in its own fresh process, its peak resident
   memory ("Maximum resident set size" of ``/usr/bin/time -v``) and its
   wall time:
   - ``api``: ``Predictor(run).predict_proba(paths)``, all N in one call;
   - ``api-iter``: ``for p in Predictor(run).iter_predict(paths)``;
   - ``cli``: ``edgetl predict RUN PATH x N`` (text to /dev/null);
   - ``cli-json``: the same with ``--json``;
   - ``floor``: the same interpreter importing ``edgetl.runtime`` and opening
     the bundle, nothing predicted;
   - ``argv``: ``python -c pass PATH x N``: what the command line alone costs
     (the kernel's copy plus the interpreter's decoded copies of N paths), the
     part of ``cli``'s growth that is not edgetl's.
   Memory that does not grow from 1,000 to 10,000 images means the images are
   streamed in batches (32 at a time), not held.
Prints a markdown table (and ``--json`` for the raw numbers).
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
from PIL import Image

API = """
import sys
from edgetl.runtime import Predictor
paths = open(sys.argv[2]).read().splitlines()
p = Predictor(sys.argv[1])
mode = sys.argv[3]
if mode == "api":
    proba = p.predict_proba(paths)
    assert proba.shape[0] == len(paths)
elif mode == "api-iter":
    n = sum(1 for _ in p.iter_predict(paths))
    assert n == len(paths)
"""


def make_photos(folder: str, count: int, size: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    base = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    paths = []
    for i in range(count):
        img = np.roll(base, i % size, axis=1) // 2 + rng.integers(0, 128, 3, dtype=np.uint8)
        cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < (size // 5) ** 2] = (230, 30, 30)
        path = os.path.join(folder, f"photo-{i:05d}.jpg")
        Image.fromarray(img).save(path, quality=85)
        paths.append(path)
    return paths


def measure(argv: list[str]) -> dict:
    """Run argv to completion under GNU time: its own peak RSS (MB) and wall
    time (s). Not os.wait4's ru_maxrss: Linux carries the parent's high-water
    mark across fork + exec, so a child of a big parent looks big."""
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:4]}... failed ({proc.returncode}): {proc.stderr[-2000:]}")
    line = next(x for x in proc.stderr.splitlines() if "Maximum resident set size" in x)
    return {"peak_rss_mb": round(int(line.rsplit(":", 1)[1]) / 1024, 1), "wall_s": round(wall, 2)}


BUILD = """
import inspect, sys
from edgetl.demo import write_digits_folder
from edgetl.training import train
data, run, size = sys.argv[1:]
write_digits_folder(data)
fast = {"search": False} if "search" in inspect.signature(train).parameters else {}
train(data, run, image_size=int(size), progress=False, **fast)
"""


def build_run(folder: str, image_size: int) -> str:
    """In its own process, so this one stays small (no torch) while measuring."""
    run = os.path.join(folder, "run")
    subprocess.run([sys.executable, "-c", BUILD, os.path.join(folder, "digits"), run, str(image_size)], check=True)
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--image-size", type=int, default=64, help="bundle input size when building one")
    parser.add_argument("--photo-size", type=int, default=160, help="side of the generated JPEG photos")
    parser.add_argument("--run", help="an existing bundle (default: train one on the digits)")
    parser.add_argument("--modes", nargs="+", default=["floor", "api", "api-iter", "argv", "cli", "cli-json"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="edgetl-load-") as tmp:
        run = args.run or build_run(tmp, args.image_size)
        photos = os.path.join(tmp, "photos")
        os.makedirs(photos)
        all_paths = make_photos(photos, max(args.counts), args.photo_size)
        rows = []
        for count in args.counts:
            list_path = os.path.join(tmp, f"paths-{count}.txt")
            with open(list_path, "w") as fh:
                fh.write("\n".join(all_paths[:count]) + "\n")
            for mode in args.modes:
                if mode in ("api", "api-iter", "floor"):
                    argv = [sys.executable, "-c", API, run, list_path, mode]
                elif mode == "argv":
                    argv = [sys.executable, "-c", "pass", *all_paths[:count]]
                else:
                    argv = [sys.executable, "-m", "edgetl.cli", "predict", run, *all_paths[:count]]
                    argv += ["--json"] if mode == "cli-json" else []
                result = measure(argv)
                rows.append({"mode": mode, "images": count, **result,
                             "images_per_s": None if mode in ("floor", "argv") else round(count / result["wall_s"], 1)})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print("| way | images | peak RSS (MB) | wall (s) | images/s |")
        print("|---|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['mode']} | {r['images']:,} | {r['peak_rss_mb']} | {r['wall_s']} | {r['images_per_s'] or '–'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
