"""Helpers of the browser tests (tests/web): Debian's chromium for Playwright,
a static server on 127.0.0.1 started by the test, and a harness page that
imports an exported app's edgetl.js."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files, plus the headers that make the page cross-origin isolated
    (so onnxruntime-web may use threads), and no logging to stderr."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
                      ".wasm": "application/wasm", ".webmanifest": "application/manifest+json"}

    def end_headers(self):
        if self.server.isolated:
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def chromium(what: str = "the browser tests"):
    """Headless Debian chromium through Playwright (no browser download), or a
    failure naming the package to install."""
    import os

    import pytest

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium ({what} need a real browser)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@contextlib.contextmanager
def serve(folder: str, isolated: bool = False):
    """Serve ``folder`` on 127.0.0.1 (a free port) for the block; yields the base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=folder))
    server.isolated = isolated
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


HARNESS = """<!doctype html><meta charset="utf-8"><title>edgetl harness</title><link rel="icon" href="data:,">
<script type="module">
import * as edgetl from './web/edgetl.js';
window.edgetl = edgetl;
window.blobOf = async (url) => { const r = await fetch(url); if (!r.ok) throw new Error(url); return r.blob(); };
window.harnessReady = true;
</script>"""


def open_harness(browser, url: str, errors=None):
    """A new context and page on RUN_DIR/harness.html, ready (window.edgetl set)."""
    context = browser.new_context()
    page = context.new_page()
    if errors is not None:
        errors.watch(page)
    page.goto(url + "harness.html")
    page.wait_for_function("window.harnessReady === true", timeout=30000)
    return context, page
