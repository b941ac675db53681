"""The web runtime's tests run in a real browser: Debian's chromium driven by
Playwright for Python (a browser download cannot work here), against static
files served by a real HTTP server on 127.0.0.1 that the test starts."""

from __future__ import annotations

import os
import shutil

import pytest

from webtools import CHROMIUM, CHROMIUM_FLAGS, HARNESS, chromium, open_harness, serve  # noqa: F401  (re-exported)


@pytest.fixture(scope="session")
def browser():
    """One headless chromium for the session (each test opens its own context)."""
    with chromium("the web tests") as b:
        yield b


@pytest.fixture
def page_errors():
    """Collects a page's uncaught errors and console errors: attach with ``page_errors.watch(page)``."""

    class Errors(list):
        def watch(self, page):
            page.on("pageerror", lambda exc: self.append(f"pageerror: {exc}"))
            page.on("console", lambda msg: msg.type == "error" and self.append(f"console: {msg.text}"))
            return page

    return Errors()


@pytest.fixture(scope="session")
def digits_bundle(tmp_path_factory, edgetl_cache):
    """A real bundle for the browser: digits 0-4 (12 scans each) at 32 px,
    default search, exported to web/ (int8) and, in a copy, fp32. Held-out
    scans of each class, and scans of digit 7 the bundle never saw, are
    copied under RUN_DIR/images/ so the served folder holds them; a harness
    page RUN_DIR/harness.html imports web/edgetl.js as window.edgetl."""
    import types

    from edgetl import train
    from edgetl.demo import write_digits_folder
    from edgetl.export import export_model

    root = tmp_path_factory.mktemp("web-bundle")
    every = root / "all"
    write_digits_folder(str(every))
    train_dir = root / "train"
    held_out, new = [], []
    for digit in "01234":
        files = sorted(os.listdir(every / digit))
        (train_dir / digit).mkdir(parents=True)
        for name in files[:12]:
            shutil.copy(every / digit / name, train_dir / digit / name)
        held_out += [(str(every / digit / name), digit) for name in files[12:40]]
    new = [str(every / "7" / name) for name in sorted(os.listdir(every / "7"))[:40]]
    run = root / "run"
    train(str(train_dir), str(run), image_size=32, progress=False)
    fp32 = root / "run_fp32"
    shutil.copytree(run, fp32)
    export_model(str(run), "web")
    export_model(str(fp32), "web", fp32=True)
    for folder in (run, fp32):
        images = folder / "images"
        images.mkdir()
        for path, _label in held_out:
            shutil.copy(path, images / f"{_label}-{os.path.basename(path)}")
        for path in new:
            shutil.copy(path, images / f"new7-{os.path.basename(path)}")
        (folder / "harness.html").write_text(HARNESS)
    held = [(f"images/{label}-{os.path.basename(p)}", p, label) for p, label in held_out]
    fresh = [(f"images/new7-{os.path.basename(p)}", p) for p in new]
    return types.SimpleNamespace(run_dir=str(run), fp32_dir=str(fp32), held_out=held, new=fresh)
