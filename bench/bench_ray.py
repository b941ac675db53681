"""Scaling out on Ray Data (issue 16): throughput, start-up, driver memory.

What it measures, all in one run, on this machine:

1. **Throughput, in-process vs Ray local.** ``--images`` Fashion-MNIST
   training images (IDX files from ``apt-get install dataset-fashion-mnist``)
   are written as PNG into ``/tmp/.../data/<class>/`` and extracted through
   the public path a user takes, one child process each::

       edgetl extract DATA --out FEATURES --image-size 224 --tap final --engine local|ray

   (default backbone efficientnet_lite0, one graph at one size). Each engine
   gets a FRESH feature cache: ``EDGETL_CACHE_DIR`` is a new folder, a copy of
   a cache warmed by one earlier ``edgetl extract`` on other images (20
   Fashion-MNIST test images) WITHOUT its ``features/`` folder: the exported
   ONNX graph (``models/``) and the measured costs are reused, so neither
   export nor the latency measurement is timed, and every image is extracted
   (``from_cache`` 0 is checked). The wall time of the whole command
   (interpreter start, scan, Ray's start-up and shut-down, Parquet) is
   timed; the same command on 20 other images (median of 3 runs) gives
   each engine's fixed cost, so the marginal rate is ``(N - 20) / (wall_N - wall_20)``. Ray's
   start-up is the difference of the two engines' 20-image runs. The
   speed-up ratios are within this one run. Peak RSS of the driver
   (``/usr/bin/time -v``; Ray's worker processes are not in it).

2. **Driver memory for a listing of 100,000 and 1,000,000 files.** That many
   tiny files (distinct 1x1 PNGs, 70 bytes, 100 class folders) under
   ``/tmp``; one child process per size, under ``/usr/bin/time -v``, does
   what the driver does before any image is decoded, with the project's
   functions: ``scan_folder(root)`` (the listing, and its cross-class
   duplicate check: every file here has the same size, so every file is
   hashed there too: the worst case), then the hashing pass of
   ``extract_all`` (``_hash_listing``: ``_read_and_hash`` over a 2-thread
   pool, a window at a time; ``_Pass``, ``_misses`` against an empty
   FeatureCache) and the Ray engine's chunks (``ray_engine._pass_plan``:
   what the engine puts in Ray's object store, once per pass, and its
   pickle as ``ray.put`` serialises it: protocol 5, numpy arrays out of
   band; the dataset's rows are only chunk numbers). ``ru_maxrss`` is read
   after each stage (a running peak).
   Not run: the extraction of 1M images itself, nor ``ray.put`` (the plan
   goes to Ray's object store, another process).

3. **Bit-identical.** The two engines' Parquet files from part 1, compared
   row by row by ``key``.

    python bench/bench_ray.py [--images 10000] [--listing 100000 1000000] [--json OUT]

Prints a markdown table; every temporary file (the 1M files too) is under
``/tmp`` and removed at the end."""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np

from bench_foundation import cpu_model, read_idx  # bench/ is the script's folder: on sys.path

DATASET = "/usr/share/datasets/fashion-mnist"
CLASSES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
SMALL = 20  # images of the start-up runs
SMALL_REPEATS = 3  # the start-up runs vary more: the median of 3
FLAGS = ["--image-size", "224", "--tap", "final"]


def write_pngs(root: str, images: np.ndarray, labels: np.ndarray, prefix: str) -> None:
    from PIL import Image

    for c in sorted({CLASSES[int(y)] for y in labels}):  # an empty class folder is an error
        os.makedirs(os.path.join(root, c), exist_ok=True)
    for i, (img, y) in enumerate(zip(images, labels)):
        Image.fromarray(img).save(os.path.join(root, CLASSES[int(y)], f"{prefix}{i:06d}.png"))


def git_commit() -> str:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain"], capture_output=True, text=True).stdout
        return out.stdout.strip() + ("+dirty" if dirty.strip() else "")
    except OSError:
        return "?"


def timed(cmd: list[str], env: dict) -> dict:
    """``cmd`` under ``/usr/bin/time -v``: wall seconds, peak RSS (MB), stdout."""
    t = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return {"wall_s": wall, "peak_rss_mb": int(rss.group(1)) / 1024 if rss else None, "stdout": proc.stdout}


def edgetl_cli() -> str:
    """The ``edgetl`` console script of this interpreter (what a user types)."""
    here = os.path.join(os.path.dirname(sys.executable), "edgetl")
    return here if os.path.exists(here) else (shutil.which("edgetl") or "edgetl")


def extract_cmd(data: str, out: str, engine: str) -> list[str]:
    return [edgetl_cli(), "extract", data, "--out", out, *FLAGS, "--engine", engine]


def fresh_cache(warm: str, dest: str) -> str:
    """A copy of the warm cache without its features: the graph and its costs, no extracted rows."""
    shutil.copytree(warm, dest, ignore=lambda d, names: ["features"] if os.path.samefile(d, warm) else [])
    return dest


def counts(stdout: str) -> tuple[int, int]:
    m = re.search(r"(\d+) extracted, (\d+) from cache", stdout)
    return (int(m.group(1)), int(m.group(2))) if m else (-1, -1)


def bench_throughput(tmp: str, num_images: int) -> dict:
    images, labels = read_idx(f"{DATASET}/train-images-idx3-ubyte.gz"), read_idx(f"{DATASET}/train-labels-idx1-ubyte.gz")
    test_x, test_y = read_idx(f"{DATASET}/t10k-images-idx3-ubyte.gz"), read_idx(f"{DATASET}/t10k-labels-idx1-ubyte.gz")
    data, small, warm_data = (os.path.join(tmp, n) for n in ("data", "small", "warm-data"))
    write_pngs(data, images[:num_images], labels[:num_images], "tr")
    write_pngs(small, images[-SMALL:], labels[-SMALL:], "sm")  # not among the first N
    write_pngs(warm_data, test_x[:SMALL], test_y[:SMALL], "te")
    warm = os.path.join(tmp, "cache-warm")
    env = dict(os.environ, EDGETL_CACHE_DIR=warm)
    print(f"warming the graph cache ({warm})", file=sys.stderr)
    first = timed(extract_cmd(warm_data, os.path.join(tmp, "out-warm"), "local"), env)
    out: dict = {"warm_run_s": first["wall_s"], "num_images": num_images, "engines": {}}
    # Runs: per engine, the small folder then the big one, each in a fresh cache (copy of the warm one).
    for engine in ("local", "ray"):
        res = {}
        for name, folder, n, repeats in (("small", small, SMALL, SMALL_REPEATS), ("big", data, num_images, 1)):
            runs = []
            for k in range(repeats):
                cache = fresh_cache(warm, os.path.join(tmp, f"cache-{engine}-{name}-{k}"))
                dest = os.path.join(tmp, f"out-{engine}-{name}-{k}")
                print(f"{engine}: {n} images", file=sys.stderr)
                r = timed(extract_cmd(folder, dest, engine), dict(os.environ, EDGETL_CACHE_DIR=cache))
                r["extracted"], r["from_cache"] = counts(r["stdout"])
                r["out"] = dest
                if r["extracted"] != n or r["from_cache"] != 0:
                    raise SystemExit(f"{engine} on {n} images: {r['stdout']!r} (expected {n} extracted, 0 cached)")
                runs.append(r)
                shutil.rmtree(cache)
            # The median run (by wall time) stands for the others; every wall time is kept.
            res[name] = dict(sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2],
                             walls_s=[r["wall_s"] for r in runs])
        big, sm = res["big"], res["small"]
        res["images_per_s_wall"] = num_images / big["wall_s"]
        res["images_per_s_marginal"] = (num_images - SMALL) / (big["wall_s"] - sm["wall_s"])
        out["engines"][engine] = res
    loc, ray = out["engines"]["local"], out["engines"]["ray"]
    out["ratio_wall"] = ray["images_per_s_wall"] / loc["images_per_s_wall"]
    out["ratio_marginal"] = ray["images_per_s_marginal"] / loc["images_per_s_marginal"]
    out["ray_startup_s"] = ray["small"]["wall_s"] - loc["small"]["wall_s"]
    out["identical"] = compare_parquet(os.path.join(loc["big"]["out"], "features-224px.parquet"),
                                       os.path.join(ray["big"]["out"], "features-224px.parquet"))
    for e in out["engines"].values():
        for r in (e["small"], e["big"]):
            r.pop("stdout")
            r.pop("out")
    return out


def compare_parquet(a: str, b: str) -> dict:
    import pyarrow.parquet as pq

    ta, tb = pq.read_table(a), pq.read_table(b)

    def rows(t):
        feats = np.asarray(t.column("features").combine_chunks().flatten()).reshape(t.num_rows, -1)
        return dict(zip(t.column("key").to_pylist(), zip(t.column("path").to_pylist(), t.column("label").to_pylist(),
                                                          feats)))

    ra, rb = rows(ta), rows(tb)
    same_keys = ra.keys() == rb.keys()
    differ = sum(1 for k in ra if k in rb and (ra[k][0] != rb[k][0] or ra[k][1] != rb[k][1]
                                               or ra[k][2].tobytes() != rb[k][2].tobytes()))
    return {"rows": [ta.num_rows, tb.num_rows], "same_keys": same_keys, "rows_differing": differ,
            "bit_identical": same_keys and differ == 0 and ta.num_rows == tb.num_rows,
            "same_metadata": ta.schema.metadata == tb.schema.metadata}


# ---- part 2: the driver's listing --------------------------------------------------------------------

def _png_1x1(rgb: bytes) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" + rgb, 9)) + chunk(b"IEND", b""))


def write_tiny_files(root: str, n: int, classes: int = 100) -> None:
    """``n`` distinct 1x1 PNGs in ``classes`` folders (file i: colour i)."""
    for c in range(classes):
        os.makedirs(os.path.join(root, f"c{c:03d}"), exist_ok=True)
    for i in range(n):
        data = _png_1x1(i.to_bytes(3, "big"))
        with open(os.path.join(root, f"c{i % classes:03d}", f"{i:07d}.png"), "wb") as fh:
            fh.write(data)


CHILD = r"""
import json, pickle, resource, shutil, sys, tempfile, time, types
from concurrent.futures import ThreadPoolExecutor
def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out = {}
t = time.perf_counter()
from edgetl.data.folder import scan_folder
from edgetl.data.paths import as_path_list
from edgetl.features.cache import FeatureCache
from edgetl.features.extract import _Pass, _hash_listing, _misses
from edgetl.features.ray_engine import _pass_plan
out["imports"] = {"s": time.perf_counter() - t, "peak_rss_mb": peak()}
t = time.perf_counter()
folder = scan_folder(sys.argv[1])
out["scan_folder"] = {"s": time.perf_counter() - t, "peak_rss_mb": peak(), "files": len(folder.paths),
                      "duplicates": len(folder.duplicates), "listing_mb": folder.paths.nbytes() / 2**20}
t = time.perf_counter()
paths = as_path_list(folder.paths)  # as extract_many (the scan's PathList itself)
with ThreadPoolExecutor(2) as pool:  # extract_all: num_workers (2) threads, hashed a window at a time
    keys, skipped = _hash_listing(pool, paths)
state = _Pass(keys)
cache_dir = tempfile.mkdtemp(prefix="edgetl-bench-cache-", dir="/tmp")
empty = types.SimpleNamespace(cache=FeatureCache(cache_dir), batch_size=32)  # an empty cache: every image a miss
misses = _misses([empty], state)
out["hash_pass"] = {"s": time.perf_counter() - t, "peak_rss_mb": peak(), "misses": len(misses)}
t = time.perf_counter()
plan = _pass_plan([empty], paths, misses, state)  # what the Ray engine puts in the object store, once
buffers = []  # as ray.put serialises it: pickle 5, numpy arrays out of band (not copied into the stream)
blob = len(pickle.dumps(plan, protocol=5, buffer_callback=buffers.append))
out["ray_chunk_rows"] = {"s": time.perf_counter() - t, "peak_rss_mb": peak(), "rows": len(plan),
                         "plan_mb": (blob + sum(b.raw().nbytes for b in buffers)) / 2**20,
                         "plan_in_band_mb": blob / 2**20}
shutil.rmtree(cache_dir)
print(json.dumps(out))
"""


def bench_listing(tmp: str, sizes: list[int]) -> dict:
    out = {}
    for n in sizes:
        root = os.path.join(tmp, f"listing-{n}")
        t = time.perf_counter()
        print(f"writing {n:,} tiny files", file=sys.stderr)
        write_tiny_files(root, n)
        made = time.perf_counter() - t
        print(f"scanning and hashing {n:,} files", file=sys.stderr)
        r = timed([sys.executable, "-c", CHILD, root], dict(os.environ))
        stages = json.loads(r["stdout"])
        out[str(n)] = {"write_files_s": made, "total_s": r["wall_s"], "peak_rss_mb": r["peak_rss_mb"], **stages}
        t = time.perf_counter()
        shutil.rmtree(root)
        out[str(n)]["remove_files_s"] = time.perf_counter() - t
    return out


def table(result: dict) -> str:
    lines = []
    tp = result.get("throughput")
    if tp:
        n = tp["num_images"]
        lines += [f"| engine | wall, {SMALL} images | wall, {n:,} images | images/s (wall) | images/s (marginal) "
                  f"| driver peak RSS |", "|---|---|---|---|---|---|"]
        for name, e in tp["engines"].items():
            label = "in process (`--engine local`)" if name == "local" else "Ray local, 2 CPUs (`--engine ray`)"
            lines.append(f"| {label} | {e['small']['wall_s']:.1f} s | {e['big']['wall_s']:.1f} s | "
                         f"{e['images_per_s_wall']:.1f} | {e['images_per_s_marginal']:.1f} | "
                         f"{e['big']['peak_rss_mb']:.0f} MB |")
        lines.append(f"| **Ray / in process** | +{tp['ray_startup_s']:.1f} s (Ray's start-up) | | "
                     f"**{tp['ratio_wall']:.2f}×** | **{tp['ratio_marginal']:.2f}×** | |")
        ident = tp["identical"]
        lines.append("")
        lines.append(f"Bit-identical Parquet rows by key: {ident['bit_identical']} ({ident['rows'][0]:,} / "
                     f"{ident['rows'][1]:,} rows, {ident['rows_differing']} differing, same schema metadata: "
                     f"{ident['same_metadata']})")
        lines.append("")
    ls = result.get("listing")
    if ls:
        lines += ["| files listed | imports | + `scan_folder` | + hashing pass | + Ray chunk rows | whole child "
                  "(`time -v`) | scan s | hash s |", "|---|---|---|---|---|---|---|---|"]
        for n, r in ls.items():
            lines.append(f"| {int(n):,} | {r['imports']['peak_rss_mb']:.0f} MB | {r['scan_folder']['peak_rss_mb']:.0f} MB"
                         f" | {r['hash_pass']['peak_rss_mb']:.0f} MB | {r['ray_chunk_rows']['peak_rss_mb']:.0f} MB"
                         f" | {r['peak_rss_mb']:.0f} MB | {r['scan_folder']['s']:.1f} | {r['hash_pass']['s']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=10000, help="Fashion-MNIST images for the throughput part (0: skip)")
    p.add_argument("--listing", type=int, nargs="*", default=[100000, 1000000],
                   help="listing sizes for the driver-memory part (none: skip)")
    p.add_argument("--json", default=None, metavar="OUT")
    args = p.parse_args()
    result = {"commit": git_commit(), "cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
              "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        import ray

        result["ray"] = ray.__version__
    except ImportError:
        raise SystemExit("pip install 'edgetl[ray]' first") from None
    tmp = tempfile.mkdtemp(prefix="edgetl-bench-ray-", dir="/tmp")
    try:
        if args.images:
            result["throughput"] = bench_throughput(tmp, args.images)
        if args.listing:
            result["listing"] = bench_listing(tmp, args.listing)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"commit {result['commit']}, CPU {result['cpu']} ({result['cores']} cores), ray {result['ray']}")
    print(table(result))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
