"""edgetl studio under a person's load (issue 15's closing figures).

    python bench/bench_studio.py                       # all three parts
    python bench/bench_studio.py --parts time-to-model --photos 1000

Each part starts the real server as a user does (``edgetl studio PROJECT
--no-browser``, a subprocess; the URL with its token read from its first
line) and talks to it over HTTP with httpx, as the page does:

1. ``time-to-model``: an empty project; 10 classes created; ``--photos``
   Fashion-MNIST photos (real grey product photos, 28x28 PNG; scikit-learn's
   digits if the Debian package is absent) uploaded 50 per request as the page
   does; training started with the defaults; the Server-Sent Events followed
   until the run is done. Reports the time of each step and in total, and the
   run's validation accuracy. A fresh feature cache (a new user's first model).
2. ``memory``: a project of ``--big`` images (written straight into its
   data folder, as a user's existing folder would be with ``--from``); the
   server opened, every class listed page by page, 200 thumbnails made, the
   duplicate report computed. Peak resident memory of the server process
   (``VmHWM`` of /proc/PID/status) and the time of each request.
3. ``load``: a project of ``--load-images`` images; a training started; 20
   concurrent clients browse thumbnail pages (a page listing, then its 24
   first thumbnails, over and over) until the training ends. Reports the
   requests, errors, and latency p50/p95/p99 per kind.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from PIL import Image

from bench_foundation import cpu_model, read_idx  # bench/ is the script's folder: on sys.path

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle-boot"]


def photos(n: int, offset: int = 0) -> tuple[list[bytes], list[str]]:
    """``n`` PNG photos and their class names, classes interleaved."""
    path = os.path.join(FASHION_DIR, "train-images-idx3-ubyte.gz")
    if os.path.isfile(path):
        images, labels = read_idx(path), read_idx(os.path.join(FASHION_DIR, "train-labels-idx1-ubyte.gz"))
        names = FASHION_CLASSES
    else:
        from sklearn.datasets import load_digits

        d = load_digits()
        images = np.clip(d.images * 16, 0, 255).astype(np.uint8)
        labels, names = d.target, [str(i) for i in range(10)]
    out, classes = [], []
    for i in range(offset, offset + n):
        j = i % len(images)
        img = images[j]
        if i >= len(images):  # past the data set: the same photo, one pixel changed (a distinct file)
            img = img.copy()
            img.flat[i % img.size] ^= 1 + (i // len(images)) % 255
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "PNG")
        out.append(buf.getvalue())
        classes.append(names[int(labels[j])])
    return out, classes


def write_project(root: str, n: int) -> None:
    data, classes = photos(n)
    for i, (blob, c) in enumerate(zip(data, classes)):
        os.makedirs(os.path.join(root, "data", c), exist_ok=True)
        with open(os.path.join(root, "data", c, f"{i:06d}.png"), "wb") as fh:
            fh.write(blob)


class Studio:
    """``edgetl studio PROJECT --no-browser`` in a subprocess."""

    def __init__(self, project: str, cache_dir: str, *extra: str):
        env = dict(os.environ, EDGETL_CACHE_DIR=cache_dir)
        self.proc = subprocess.Popen([sys.executable, "-m", "edgetl.cli", "studio", project, "--no-browser", *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        deadline = time.monotonic() + 60
        for line in self.proc.stdout:
            m = re.search(r"(http://[^/\s]+)/\?token=(\S+)", line)
            if m:
                self.base, self.token = m.group(1), m.group(2)
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the studio did not print its URL")
        else:
            raise RuntimeError("the studio exited before printing its URL")
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()
        self.headers = {"X-Edgetl-Token": self.token}

    def peak_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as fh:
            return int(re.search(r"VmHWM:\s+(\d+)", fh.read()).group(1)) / 1024

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def follow_training(client, studio: Studio, timeout: float = 3600) -> dict:
    """The SSE stream until its final event; returns that event."""
    last = None
    with client.stream("GET", f"{studio.base}/api/train/events", timeout=timeout) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data:"):
                last = json.loads(line[5:])
                if last["event"] in ("done", "error", "cancelled"):
                    return last
    raise RuntimeError(f"the event stream ended without a final event (last: {last})")


def time_to_model(n: int, work: str) -> dict:
    import httpx

    project, cache = os.path.join(work, "ttm"), os.path.join(work, "ttm-cache")
    data, classes = photos(n)
    studio = Studio(project, cache)
    t = {}
    try:
        with httpx.Client(headers=studio.headers, timeout=600) as client:
            t0 = time.perf_counter()
            for c in sorted(set(classes)):
                client.post(f"{studio.base}/api/classes", json={"name": c}).raise_for_status()
            by_class: dict[str, list[tuple[str, bytes]]] = {}
            for i, (blob, c) in enumerate(zip(data, classes)):
                by_class.setdefault(c, []).append((f"photo-{i:05d}.png", blob))
            for c, files in by_class.items():
                for s in range(0, len(files), 50):
                    part = [("files", (name, blob, "image/png")) for name, blob in files[s : s + 50]]
                    r = client.post(f"{studio.base}/api/images", params={"class": c}, files=part)
                    r.raise_for_status()
                    assert not r.json()["refused"], r.json()["refused"][:3]
            t["upload_s"] = time.perf_counter() - t0
            r = client.post(f"{studio.base}/api/train", json={})
            r.raise_for_status()
            final = follow_training(client, studio)
            t["total_s"] = time.perf_counter() - t0
            t["train_s"] = t["total_s"] - t["upload_s"]
            if final["event"] != "done":
                raise RuntimeError(f"training ended with {final}")
            run = client.get(f"{studio.base}/api/runs/{final['run']}").json()
            t["val_accuracy"] = run["metrics"]["val_accuracy"]
            t["server_peak_mb"] = studio.peak_mb()
    finally:
        studio.close()
    return {"photos": n, **{k: round(v, 3) for k, v in t.items()}}


def memory(n: int, work: str) -> dict:
    import httpx

    project = os.path.join(work, "big")
    t0 = time.perf_counter()
    write_project(project, n)
    written = time.perf_counter() - t0
    studio = Studio(project, os.path.join(work, "big-cache"))
    timings = {}
    try:
        with httpx.Client(headers=studio.headers, timeout=600) as client:
            t0 = time.perf_counter()
            info = client.get(f"{studio.base}/api/project").json()
            timings["project_s"] = time.perf_counter() - t0
            assert info["total"] == n, info["total"]
            t0 = time.perf_counter()
            pages = 0
            for c in info["classes"]:
                for off in range(0, c["count"], 200):
                    client.get(f"{studio.base}/api/images", params={"class": c["name"], "offset": off,
                                                                     "limit": 200}).raise_for_status()
                    pages += 1
            timings["all_pages_s"] = time.perf_counter() - t0
            first = info["classes"][0]["name"]
            page = client.get(f"{studio.base}/api/images", params={"class": first, "limit": 200}).json()
            t0 = time.perf_counter()
            for im in page["images"]:
                client.get(f"{studio.base}/api/image", params={"class": first, "name": im["name"],
                                                                "size": "thumb"}).raise_for_status()
            timings["thumbs_200_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            client.get(f"{studio.base}/api/duplicates").raise_for_status()
            timings["duplicates_s"] = time.perf_counter() - t0
            peak = studio.peak_mb()
    finally:
        studio.close()
    return {"images": n, "pages": pages, "written_s": round(written, 1), "server_peak_mb": round(peak, 1),
            **{k: round(v, 3) for k, v in timings.items()}}


async def _browse(base: str, headers: dict, classes: list[dict], stop: asyncio.Event, lat: dict, errors: list,
                  seed: int) -> None:
    import httpx

    rng = np.random.default_rng(seed)
    async with httpx.AsyncClient(headers=headers, timeout=60) as client:
        while not stop.is_set():
            c = classes[int(rng.integers(len(classes)))]
            off = int(rng.integers(max(1, c["count"] // 100))) * 100
            t0 = time.perf_counter()
            r = await client.get(f"{base}/api/images", params={"class": c["name"], "offset": off, "limit": 100})
            lat["page"].append(time.perf_counter() - t0)
            if r.status_code != 200:
                errors.append(r.status_code)
                continue
            for im in r.json()["images"][:24]:
                t0 = time.perf_counter()
                rt = await client.get(f"{base}/api/image", params={"class": c["name"], "name": im["name"],
                                                                   "size": "thumb"})
                lat["thumb"].append(time.perf_counter() - t0)
                if rt.status_code != 200:
                    errors.append(rt.status_code)


def load(n: int, clients: int, work: str) -> dict:
    import httpx

    project = os.path.join(work, "load")
    write_project(project, n)
    studio = Studio(project, os.path.join(work, "load-cache"))
    lat: dict[str, list[float]] = {"page": [], "thumb": []}
    errors: list = []
    try:
        with httpx.Client(headers=studio.headers, timeout=600) as client:
            classes = client.get(f"{studio.base}/api/project").json()["classes"]
            client.post(f"{studio.base}/api/train", json={}).raise_for_status()
            final: dict = {}

            async def main():
                stop = asyncio.Event()
                tasks = [asyncio.create_task(_browse(studio.base, studio.headers, classes, stop, lat, errors, s))
                         for s in range(clients)]
                final.update(await asyncio.to_thread(follow_training, client, studio))
                stop.set()
                await asyncio.gather(*tasks)

            t0 = time.perf_counter()
            asyncio.run(main())
            seconds = time.perf_counter() - t0
            peak = studio.peak_mb()
    finally:
        studio.close()
    out = {"images": n, "clients": clients, "training": final.get("event"), "seconds": round(seconds, 1),
           "errors": len(errors), "server_peak_mb": round(peak, 1)}
    for kind, values in lat.items():
        v = np.asarray(values) * 1000
        out[kind] = {"requests": len(v), **{f"p{q}_ms": round(float(np.percentile(v, q)), 1) for q in (50, 95, 99)}}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", default=["time-to-model", "memory", "load"],
                        choices=["time-to-model", "memory", "load"])
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--big", type=int, default=50_000)
    parser.add_argument("--load-images", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="edgetl-studio-bench-")
    results = {"cpu": cpu_model(), "cores": os.cpu_count()}
    try:
        if "time-to-model" in args.parts:
            results["time_to_model"] = time_to_model(args.photos, work)
            print(json.dumps(results["time_to_model"]), flush=True)
        if "memory" in args.parts:
            results["memory"] = memory(args.big, work)
            print(json.dumps(results["memory"]), flush=True)
        if "load" in args.parts:
            results["load"] = load(args.load_images, args.clients, work)
            print(json.dumps(results["load"]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
