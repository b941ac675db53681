"""The studio under load (issue 15): 20 clients browse the thumbnails of a
10,000-image project at once while a training runs. No request may fail and
every thumbnail must be a JPEG of the right photo; the latency is printed
(the figures with their command are bench/bench_studio.py's, in BENCHMARKS.md)."""

from __future__ import annotations

import asyncio
import io
import os
import time

import httpx
import numpy as np
import pytest
from PIL import Image

CLIENTS = 20
IMAGES = 10_000


def write_project(root: str) -> dict[str, int]:
    """IMAGES distinct grey photos in 5 classes (a digit scan, one pixel varied per copy)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    counts: dict[str, int] = {}
    for i in range(IMAGES):
        j = i % len(d.images)
        cls = str(d.target[j] % 5)
        img = (255 - d.images[j] * 255 / 16).round().astype(np.uint8)
        img.flat[(i // len(d.images)) % 64] ^= 1 + i // (len(d.images) * 64)
        folder = os.path.join(root, cls)
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(img, "L").save(os.path.join(folder, f"{i:05d}.png"))
        counts[cls] = counts.get(cls, 0) + 1
    return counts


async def browse(url: str, token: str, counts: dict[str, int], stop: asyncio.Event, seed: int, out: dict):
    rng = np.random.default_rng(seed)
    classes = sorted(counts)
    async with httpx.AsyncClient(base_url=url, headers={"X-Edgetl-Token": token}, timeout=60) as client:
        while not stop.is_set():
            cls = classes[int(rng.integers(len(classes)))]
            offset = int(rng.integers(counts[cls] // 100)) * 100
            t0 = time.perf_counter()
            r = await client.get("/api/images", params={"class": cls, "offset": offset, "limit": 100})
            out["latency"].append(time.perf_counter() - t0)
            if r.status_code != 200:
                out["errors"].append(("page", r.status_code))
                continue
            page = r.json()
            assert page["total"] == counts[cls] and len(page["images"]) == min(100, counts[cls] - offset)
            for im in page["images"][:12]:
                t0 = time.perf_counter()
                rt = await client.get("/api/image", params={"class": cls, "name": im["name"], "size": "thumb"})
                out["latency"].append(time.perf_counter() - t0)
                if rt.status_code != 200 or not rt.content.startswith(b"\xff\xd8"):
                    out["errors"].append(("thumb", rt.status_code))


@pytest.mark.slow
def test_twenty_clients_browse_10000_thumbnails_while_a_training_runs(tmp_path, tools):
    counts = write_project(str(tmp_path / "project" / "data"))
    with tools.serve(tmp_path / "project") as s:
        r = s.client.post("/api/train", json={"budget": "none", "image_size": 32, "search": "off"})
        assert r.status_code == 202, r.text
        out: dict = {"latency": [], "errors": []}

        async def main():
            stop = asyncio.Event()
            tasks = [asyncio.create_task(browse(s.url, s.token, counts, stop, seed, out)) for seed in range(CLIENTS)]
            events = await asyncio.to_thread(tools.sse_events, s.client)
            stop.set()
            await asyncio.gather(*tasks)
            return events

        events = asyncio.run(main())
        assert events[-1][1]["event"] == "done", events[-1]
        assert out["errors"] == []
        assert len(out["latency"]) > CLIENTS * 13  # every client browsed at least one page and its thumbnails
        p95 = float(np.percentile(out["latency"], 95)) * 1000
        print(f"\n{len(out['latency'])} requests from {CLIENTS} clients during the training: p95 {p95:.0f} ms")
