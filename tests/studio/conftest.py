"""The studio served for real (uvicorn in a thread, on a bound port), and
projects of real images: scikit-learn's digits written as PNG files."""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
import time
import types

import httpx
import numpy as np
import pytest
from PIL import Image

TOKEN = "test-token-" + "x" * 32


def digit_png(index: int) -> bytes:
    """One of scikit-learn's digits as PNG bytes (dark ink on white)."""
    from sklearn.datasets import load_digits

    img = load_digits().images[index]
    out = io.BytesIO()
    Image.fromarray((255 - img * 255 / 16).round().astype(np.uint8), "L").save(out, "PNG")
    return out.getvalue()


def write_digits(root, classes=("0", "1", "2"), per_class: int = 30) -> str:
    """ROOT/<digit>/<n>.png, the first ``per_class`` scans of each digit."""
    from sklearn.datasets import load_digits

    d = load_digits()
    for cls in classes:
        folder = os.path.join(root, cls)
        os.makedirs(folder, exist_ok=True)
        for n, i in enumerate(np.flatnonzero(d.target == int(cls))[:per_class]):
            Image.fromarray((255 - d.images[i] * 255 / 16).round().astype(np.uint8), "L").save(
                os.path.join(folder, f"{n:03d}.png"))
    return str(root)


@contextlib.contextmanager
def serve(project_dir, source=None, cache_dir=None):
    import uvicorn

    from edgetl.studio.server import _bind, create_app

    sock = _bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    app = create_app(str(project_dir), source and str(source), token=TOKEN, cache_dir=cache_dir, port=port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, headers={"X-Edgetl-Token": TOKEN}, timeout=120)
    anonymous = httpx.Client(base_url=url, timeout=30)
    try:
        yield types.SimpleNamespace(app=app, url=url, port=port, token=TOKEN, client=client, anonymous=anonymous,
                                    project_dir=str(project_dir), studio=app.state.studio)
    finally:
        job = app.state.studio.runner.cancel()
        if job is not None:
            job.finished.wait(30)
        client.close()
        anonymous.close()
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="session")
def tools():
    """This file's helpers (test modules cannot import a conftest under --import-mode=importlib)."""
    return types.SimpleNamespace(TOKEN=TOKEN, digit_png=digit_png, write_digits=write_digits, serve=serve,
                                 sse_events=sse_events)


@pytest.fixture
def studio(tmp_path):
    """An empty project."""
    with serve(tmp_path / "project") as s:
        yield s


@pytest.fixture
def digits_studio(tmp_path):
    """A project holding digits 0, 1, 2 (30 scans each) in data/."""
    write_digits(tmp_path / "project" / "data")
    with serve(tmp_path / "project") as s:
        yield s


def sse_events(client, after: int | None = None, headers=None, timeout: float = 600) -> list[tuple[int, dict]]:
    """Every event of the current job's stream until it closes."""
    params = {} if after is None else {"after": after}
    out = []
    with client.stream("GET", "/api/train/events", params=params, headers=headers or {},
                       timeout=httpx.Timeout(timeout)) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        ident = None
        for line in r.iter_lines():
            if line.startswith("id: "):
                ident = int(line[4:])
            elif line.startswith("data: "):
                out.append((ident, json.loads(line[6:])))
    return out
