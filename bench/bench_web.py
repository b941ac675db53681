"""The web app on a phone-class budget: headless Chromium, mobile emulation, CPU throttled 4x.

Issue item: "Memory and speed on a phone-class budget: measure in headless
Chromium with mobile emulation (a mid-range Android viewport) and CPU
throttling (4x): page weight to download (MB), time to first prediction,
per-image latency fp32 vs int8, the time to add 50 examples and fit 20 epochs,
and the JS heap + wasm memory peak (Chrome DevTools Protocol). Goals: int8 page
weight <= 6 MB for the default Lite0 bundle (excluding ORT's wasm), add 10
classes x 50 photos and fit without the tab exceeding 300 MB, predictions agree
as above" (web top-1 = ``edgetl predict`` top-1 on >= 99 % of images, int8, and
>= 99.5 %, fp32: the thresholds of tests/web/test_web_runtime.py).

Setup
-----
* Bundles, trained here with the Python API exactly as ``edgetl train`` does
  (``edgetl.train(train_dir, run, progress=False)``), on the train half of a real
  colour photo set (``bench/photo_sets.py``, default ``gcompris_photos``: 5
  classes of full-frame photos; no set there has 10 classes):
  ``default`` -- default settings (the search picks tap, input size and head);
  ``224`` -- the same with ``image_size=224`` pinned, the worst case for a phone.
  Each is exported twice, ``edgetl export RUN --format web`` (int8, the default)
  and, in a copy of the run, ``--fp32``. ``--bundles`` may add ``digits``
  (default settings on scikit-learn's digits: a small grey bundle, for contrast).
* Browser: Debian's chromium through Playwright for Python, the flags of
  tests/webtools.py, one new browser context per measurement (empty HTTP cache,
  no service worker, no IndexedDB: a first visit), emulating a mid-range Android
  phone (Pixel 7: viewport 412x915, device scale factor 2.625, mobile, touch,
  Android Chrome user agent); through a CDP session on the page,
  ``Emulation.setCPUThrottlingRate {rate: 4}`` before the first navigation. A
  busy loop timed in a throttled and in an unthrottled page checks that the
  throttle holds (reported as ``throttle_check``). No network throttling: the
  files come from 127.0.0.1, so no time below contains a download delay (divide
  the bytes by a link speed for that).
* Server: a static server on 127.0.0.1 (tests/webtools.py's handler, plus a byte
  counter on every response, headers included). ``--isolated`` adds COOP/COEP
  (the page is then cross-origin isolated: onnxruntime-web may use threads, and
  ``performance.measureUserAgentSpecificMemory()`` exists).

What is measured, per bundle
----------------------------
1. First visit of the app (``web/index.html``), int8 and fp32, ``--visits`` times
   (3; medians, and every visit in ``per_visit``): navigation, the model loads
   (page ``data-ready``), then a photo is chosen in "Choose a picture"
   (``set_input_files``) and the top-3 list appears.
   * ``time_to_ready_ms``: navigation start (``performance.timeOrigin``) -> the
     app is ready (a MutationObserver stamps it);
   * ``time_to_first_prediction_ms``: time to ready + (the file input's change
     event -> the predictions in the page): the delay of Playwright's hand-over
     between the two is left out (``raw_first_prediction_ms`` keeps it in);
   * ``download``: every byte the server sent during the visit (bodies and
     headers), until the service worker is installed and controls the page, split
     into onnxruntime-web's ``.wasm`` and the rest, and by kind of file. This is
     the page weight of a first visit. app.js registers the service worker at
     once, and its install (not throttled: it runs off the page's main thread)
     fetches every file of web/ (``cache.addAll``) while the page fetches what it
     needs: a file the worker got first is revalidated by the page (``304``, ~130
     bytes); a file both asked for at the same moment is downloaded twice
     (``downloaded_twice``). ``page_requests_cdp`` is the page's own share (CDP
     ``Network.loadingFinished.encodedDataLength``), a cross-check only. Plus the
     file sizes on disk, and what gzip -6 would make of them (a server that
     compresses; this one does not).
   * ``repeat_visit_ready_ms``: reload in the same context (the service worker
     now serves every file), navigation -> ready, and the bytes served meanwhile.
   * ``first_visit_slow_link`` (first bundle only): one more first visit with the
     server pacing every response through one emulated link shared by all
     requests (``--link-mbps`` 9 Mbit/s, ``--link-rtt-ms`` 60 ms before each
     response): the time to first prediction with a download in it.
2. Per-image latency, int8 and fp32, on a harness page that imports
   ``web/edgetl.js``: ``load`` then ``predict(blob, {topK: 1})`` on every test
   photo of the set (fetched as Blobs first, so no fetch is timed); time per call
   in the page (``performance.now``): decode + preprocessing + feature model +
   head. ``first_predict_ms`` is the first call (cold session); the median and
   p90 are over the other calls. ``agreement``: web top-1 vs ``Predictor(run,
   int8=...)`` top-1 (the host's ``edgetl predict``) on the same files.
   ``memory_anatomy``: in a fresh page, the tab's memory after each step (the
   harness alone; onnxruntime-web's wasm started with a session on the small
   train_step.onnx; ``edgetl.load``; one prediction), with Chrome's own
   accounting (memory-infra dump through CDP ``Tracing.requestMemoryDump``:
   private footprint, partition_alloc / malloc / v8 / blink_gc).
3. Learning (int8, the default export), two fresh harness pages. ``one_class``:
   ``load``, fetch 50 photos of a new class as Blobs (not timed),
   ``addExamples`` (timed), ``fit({epochs: 20})`` (timed): the "add 50 examples
   and fit 20 epochs" case. ``learning``: ``load``, then for each of 10 new
   classes, fetch its 50 photos, ``addExamples`` (timed) and drop the Blobs;
   then one ``fit({epochs: 20})`` on everything (bundle classes + 10, 500 added
   examples plus the bundle's exemplars): the memory case. Its fit is the first
   of its page on purpose: the first fit of a page is the one that makes V8
   optimise (tier up) onnxruntime-web's training kernels, a transient ~100 MB.
   The new classes are real photos: tuxpaint_stamps (6 classes) + qabcs_photos
   (4), every photo of each (18-39), cycled to 50 (so most classes repeat some
   photos: ``new_classes`` says how many; a repeated photo costs the same time
   and memory as a new one). The photo sets are at most 256 px on a side;
   ``camera_photos`` then adds, in a fresh page, ``--camera-photos`` (8) of them
   upscaled to 4032x3024 (a 12 MP phone photo) as a new class, and fits.

Memory, sampled through 1-3 (each figure says what it includes)
---------------------------------------------------------------
* ``renderer``: the tab's renderer process (the chromium process under this
  script with ``--type=renderer`` holding the page: of the renderers first seen
  after the measurement's context was made, the largest; the service worker runs
  in it too), sampled every 100 ms by a thread: ``footprint`` = RssAnon + VmSwap
  from /proc/PID/status, which is the number Chrome itself reports as the
  process's private memory footprint on Linux (Task Manager's "Memory
  footprint"; memory-infra's ``private_footprint_bytes``, checked equal within a
  few MB in ``memory_anatomy``); ``pss`` (proportional set from
  /proc/PID/smaps_rollup: adds the tab's share of chromium's code and other
  shared pages), ``rss`` (resident, shared pages counted in full), ``uss``
  (private pages). Everything the tab holds: V8 heap, wasm linear memory and
  compiled wasm code, Blink's buffers, decoded images. The 300 MB goal is judged
  on the peak footprint, with PSS and RSS beside it. The baseline is the same
  renderer with the harness page loaded, before ``edgetl.load``.
* ``js_heap``: CDP ``Performance.getMetrics`` ``JSHeapUsedSize`` /
  ``JSHeapTotalSize`` of the page (V8's heap only: no ArrayBuffer backing store,
  no wasm memory), polled every ~250 ms while the page works (a CDP call is
  answered between tasks, so a peak inside one long wasm call can be missed).
* ``wasm_memory``: the size of every ``WebAssembly.Memory`` the page created (an
  init script wraps the constructor and ``WebAssembly.instantiate*``): the
  linear memory of onnxruntime-web; it only grows, so its last size is its peak.
* ``measure_user_agent_specific_memory`` (only with ``--isolated``): the page's
  own estimate at the end of the learning run (current, not peak).
* ``browser_all_pss_peak``: PSS summed over every chromium process of this
  script's browser (browser, GPU, network/utility, renderers), sampled every 0.3 s.

The machine is shared, so every section records the share of CPU that
processes outside this script's tree took (from /proc/stat).

Run from the repository root (about 20 minutes on 2 cores)::

    python bench/bench_web.py --out bench/results/web.json
    python bench/bench_web.py --quick                      # ~2 minutes, goals not judged

Uses the default edgetl cache ($EDGETL_CACHE_DIR or ~/.cache/edgetl) for the
backbone and onnxruntime-web; photos, bundles and the site go to a temporary
folder, deleted at the end unless ``--work DIR`` (kept, and its bundles reused).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import functools
import gzip
import http.server
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from webtools import CHROMIUM, CHROMIUM_FLAGS, HARNESS, _Handler  # noqa: E402

MB = 1e6
THROTTLE = 4
GOAL_PAGE_MB = 6.0
GOAL_TAB_MB = 300.0
GOAL_AGREE = {"int8": 0.99, "fp32": 0.995}
# A mid-range Android phone (Pixel 7 class), as in tests/web/test_app_ui.py.
PHONE = dict(viewport={"width": 412, "height": 915}, screen={"width": 412, "height": 915},
             device_scale_factor=2.625, is_mobile=True, has_touch=True,
             user_agent="Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) "
                        "Chrome/126.0.0.0 Mobile Safari/537.36")
NEW_SOURCES = {"tuxpaint_stamps": "tux", "qabcs_photos": "qabcs"}  # 6 + 4 = 10 new classes of real photos
HZ = os.sysconf("SC_CLK_TCK")

# Runs before any script of every page: stamps the app's milestones and keeps
# every WebAssembly.Memory the page makes (onnxruntime-web's linear memory).
INIT_SCRIPT = r"""
(() => {
  const marks = window.__marks = {};
  const mark = (k) => { if (!(k in marks)) marks[k] = performance.now(); };
  document.addEventListener('change', () => mark('change'), true);
  new MutationObserver(() => {
    const b = document.body;
    if (b && b.dataset.ready === '1') mark('ready');
    if (b && b.dataset.failed === '1') mark('failed');
    if (document.querySelector('#predictions li')) mark('prediction');
  }).observe(document, {subtree: true, childList: true, attributes: true});
  const W = WebAssembly, mems = new Set(), Orig = W.Memory;
  const Memory = function (desc) { const m = new Orig(desc); mems.add(m); return m; };
  Memory.prototype = Orig.prototype;
  W.Memory = Memory;
  const grab = (r) => { const inst = r && (r.instance || r); if (inst && inst.exports)
    for (const v of Object.values(inst.exports)) if (v instanceof Orig) mems.add(v); return r; };
  for (const name of ['instantiate', 'instantiateStreaming']) {
    const f = W[name];
    if (f) W[name] = function (...a) { return f.apply(this, a).then(grab); };
  }
  window.__wasmBytes = () => { let s = 0; for (const m of mems) s += m.buffer.byteLength; return s; };
})();
"""
BUSY_LOOP = """() => { const t = performance.now(); let s = 0;
  for (let i = 0; i < 3e7; i++) s += Math.sqrt(i) % 7; return [performance.now() - t, s]; }"""


# --------------------------------------------------------------------------- /proc


def _stat(pid: int):
    """(ppid, utime + stime + cutime + cstime) of a process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except OSError:
        return None
    rest = text[text.rindex(")") + 2:].split()
    return int(rest[1]), sum(int(x) for x in rest[11:15])


def _tree(root: int) -> dict:
    """{pid: cpu ticks} of ``root`` and all its descendants."""
    parent, ticks = {}, {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            s = _stat(int(name))
            if s:
                parent[int(name)], ticks[int(name)] = s
    children = {}
    for pid, pp in parent.items():
        children.setdefault(pp, []).append(pid)
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in ticks:
            out[pid] = ticks[pid]
        todo += children.get(pid, [])
    return out


def _busy_ticks() -> int:
    with open("/proc/stat") as fh:
        f = [int(x) for x in fh.readline().split()[1:9]]
    return sum(f) - f[3] - f[4]  # all but idle and iowait


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _rollup(pid: int):
    """{rss, pss, uss, footprint} in bytes, or None: from /proc/PID/smaps_rollup,
    and footprint = RssAnon + VmSwap from /proc/PID/status, which is what
    Chrome reports as a process's private memory footprint on Linux (Task
    Manager's "Memory footprint", memory-infra's private_footprint_bytes)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            text = fh.read()
        with open(f"/proc/{pid}/status") as fh:
            status = fh.read()
    except OSError:
        return None
    kb = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+):\s+(\d+) kB", text + status, re.M)}
    if "Rss" not in kb:
        return None
    return {"rss": kb["Rss"] * 1024, "pss": kb.get("Pss", 0) * 1024,
            "uss": (kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)) * 1024,
            "footprint": (kb.get("RssAnon", 0) + kb.get("VmSwap", 0)) * 1024}


class CpuShare:
    """Share of the machine's CPU taken by processes outside this script's tree."""

    def __init__(self):
        self.t, self.busy, self.ours = time.time(), _busy_ticks(), sum(_tree(os.getpid()).values())

    def other(self) -> float:
        dt = time.time() - self.t
        busy = _busy_ticks() - self.busy
        ours = sum(_tree(os.getpid()).values()) - self.ours
        return round(max(0.0, (busy - ours) / HZ / (dt * os.cpu_count())), 3) if dt > 0 else 0.0


class MemorySampler(threading.Thread):
    """Every 100 ms: smaps_rollup of every chromium renderer under this script;
    every 0.3 s: the list of processes, and the PSS of all of this browser's
    processes, summed. A renderer belongs to a measurement when it was first
    seen after the measurement's browser context was made (contexts never share
    a renderer)."""

    def __init__(self, interval: float = 0.1):
        super().__init__(daemon=True)
        self.interval = interval
        self.samples = []  # (time, pid, rss, pss, uss, footprint)
        self.totals = []  # (time, pss of all chromium processes)
        self.first_seen = {}
        self.renderers, self.chromium = [], []
        self._halt = threading.Event()

    def _scan(self):
        pids = [p for p in _tree(os.getpid()) if p != os.getpid()]
        cmd = {p: _cmdline(p) for p in pids}
        self.chromium = [p for p in pids if "chromium" in cmd[p]]
        self.renderers = [p for p in self.chromium if "--type=renderer" in cmd[p]
                          and "--top-chrome-webui" not in cmd[p] and "--extension-process" not in cmd[p]]
        now = time.time()
        for p in self.renderers:
            self.first_seen.setdefault(p, now)

    def run(self):
        i = 0
        while not self._halt.is_set():
            if i % 3 == 0:
                self._scan()
                total = 0
                for p in self.chromium:
                    r = _rollup(p)
                    total += r["pss"] if r else 0
                self.totals.append((time.time(), total))
            now = time.time()
            for p in self.renderers:
                r = _rollup(p)
                if r:
                    self.samples.append((now, p, r["rss"], r["pss"], r["uss"], r["footprint"]))
            i += 1
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()
        self.join()

    def window(self, t0: float, t1: float, born_after: float = 0.0) -> dict:
        """Peak of the tab's renderer in [t0, t1]: of the renderers first seen
        after ``born_after``, the one with the largest PSS there."""
        rows = [s for s in self.samples if t0 <= s[0] <= t1 and self.first_seen.get(s[1], 0) >= born_after]
        if not rows:
            return {"samples": 0}
        by_pid = {}
        for s in rows:
            by_pid.setdefault(s[1], []).append(s)
        pid = max(by_pid, key=lambda p: max(s[3] for s in by_pid[p]))
        mine = by_pid[pid]
        tot = [v for t, v in self.totals if t0 <= t <= t1]
        return {"pid": pid, "samples": len(mine), "renderers_seen": len(by_pid),
                "footprint_peak_mb": round(max(s[5] for s in mine) / MB, 1),
                "rss_peak_mb": round(max(s[2] for s in mine) / MB, 1),
                "pss_peak_mb": round(max(s[3] for s in mine) / MB, 1),
                "uss_peak_mb": round(max(s[4] for s in mine) / MB, 1),
                "browser_all_pss_peak_mb": round(max(tot) / MB, 1) if tot else None}

    def now(self, born_after: float) -> dict:
        """A fresh sample of the tab's renderer (the largest first seen after ``born_after``)."""
        t = time.time()
        time.sleep(4 * self.interval)
        latest = {}
        for s in self.samples:
            if s[0] >= t and self.first_seen.get(s[1], 0) >= born_after:
                latest[s[1]] = s
        if not latest:
            return {}
        s = max(latest.values(), key=lambda s: s[3])
        return {"pid": s[1], "footprint_mb": round(s[5] / MB, 1), "rss_mb": round(s[2] / MB, 1),
                "pss_mb": round(s[3] / MB, 1), "uss_mb": round(s[4] / MB, 1)}


def smaps_groups(pid: int) -> dict:
    """PSS (MB) of one process by kind of mapping, from /proc/PID/smaps."""
    groups, cur = {}, None
    try:
        with open(f"/proc/{pid}/smaps") as fh:
            for line in fh:
                if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                    parts = line.split()
                    name = parts[5] if len(parts) > 5 else ""
                    if not name or name.startswith("[anon"):
                        cur = "anonymous"
                    elif name.startswith("[stack") or name.startswith("[heap"):
                        cur = "anonymous"
                    elif name.endswith("/chromium"):
                        cur = "chromium_binary"
                    elif "memfd:" in name or name.startswith("/dev/shm") or "SYSV" in name:
                        cur = "shared_memory"
                    else:
                        cur = "other_files"
                elif line.startswith("Pss:") and cur:
                    groups[cur] = groups.get(cur, 0) + int(line.split()[1]) * 1024
    except OSError:
        return {}
    return {k: round(v / MB, 1) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])}


# --------------------------------------------------------------------------- server


class _Counting:
    """A write-through wrapper of the handler's socket file that counts bytes
    and, when the server emulates a link, paces them through it."""

    def __init__(self, raw, handler):
        self._raw, self._handler = raw, handler

    def write(self, data):
        self._handler.sent += len(data)
        server = self._handler.server
        if server.link_bps:  # one link shared by every connection: each chunk waits for its slot
            with server.lock:
                start = max(time.time(), server.link_free)
                server.link_free = start + len(data) * 8 / server.link_bps
                until = server.link_free
            time.sleep(max(0.0, until - time.time()))
        return self._raw.write(data)

    def __getattr__(self, name):
        return getattr(self._raw, name)


class CountingHandler(_Handler):
    def setup(self):
        super().setup()
        self.sent = 0
        self.wfile = _Counting(self.wfile, self)

    def send_response(self, code, message=None):
        if self.server.link_rtt and self.code is None:
            time.sleep(self.server.link_rtt)
        self.code = code
        super().send_response(code, message)

    def handle_one_request(self):
        self.sent, self.code = 0, None
        super().handle_one_request()
        if self.code is not None:
            with self.server.lock:
                self.server.log.append((time.time(), self.path.split("?")[0], self.code, self.sent))


@contextlib.contextmanager
def serve_counting(folder: str, isolated: bool):
    """tests/webtools.serve with a byte count per response; ``server.link(mbps,
    rtt_ms)`` emulates a slow link (0: none)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(CountingHandler, directory=folder))
    server.isolated, server.daemon_threads = isolated, True
    server.log, server.lock = [], threading.Lock()
    server.link_bps, server.link_rtt, server.link_free = 0, 0.0, 0.0

    def link(mbps: float = 0.0, rtt_ms: float = 0.0):
        server.link_bps, server.link_rtt, server.link_free = mbps * 1e6, rtt_ms / 1000, 0.0

    server.link = link
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _is_wasm(path: str) -> bool:
    return path.endswith(".wasm")


def _category(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    if name.endswith(".wasm"):
        return "ort_wasm"
    if "/ort/" in path or path.startswith("ort/"):
        return "ort_js"
    if name.startswith("features") and name.endswith(".onnx"):
        return "features_model"
    if name == "head.safetensors":
        return "head_and_exemplars"
    if name == "train_step.onnx":
        return "train_step"
    if name.startswith("icon-"):
        return "icons"
    return "app_code"  # html, js, css, bundle.json, manifest, sw.js


def _by_category(files: dict, key: str) -> dict:
    out = {}
    for path, f in files.items():
        c = _category(path)
        out[c] = round(out.get(c, 0) + f[key] / MB, 3)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _served(server, t0: float, t1: float | None = None) -> dict:
    with server.lock:
        rows = [r for r in server.log if r[0] >= t0 and (t1 is None or r[0] <= t1)]
    files = {}
    for _t, path, code, n in rows:
        f = files.setdefault(path, {"requests": 0, "bytes": 0, "codes": []})
        f["requests"] += 1
        f["bytes"] += n
        f["codes"].append(code)
    wasm = sum(n for _t, p, _c, n in rows if _is_wasm(p))
    total = sum(n for *_x, n in rows)
    return {"total_mb": round(total / MB, 3), "wasm_mb": round(wasm / MB, 3),
            "rest_mb": round((total - wasm) / MB, 3), "requests": len(rows),
            "not_modified_304": sum(1 for r in rows if r[2] == 304), "by_kind_mb": _by_category(files, "bytes"),
            "files": files}


# --------------------------------------------------------------------------- data and bundles


def _photo_paths(folder: str) -> list:
    out = []
    for cls in sorted(os.listdir(folder)):
        for name in sorted(os.listdir(os.path.join(folder, cls))):
            out.append((os.path.join(folder, cls, name), cls))
    return out


def prepare(work: str, photo_set: str, bundles: list, new_photos: str) -> dict:
    """Photos, bundles and the served site under ``work`` (reused when present)."""
    import photo_sets

    import edgetl
    from edgetl.export import export_model

    site = os.path.join(work, "site")
    images = os.path.join(site, "images")
    # The bundle's photo set (train half: the bundles; test half: latency + agreement).
    set_root = os.path.join(work, "photos", photo_set)
    if not os.path.isdir(os.path.join(set_root, "test")):
        photo_sets.build(photo_set, set_root)
    test = os.path.join(images, "test")
    if not os.path.isdir(test):
        shutil.copytree(os.path.join(set_root, "test"), test)
    # New classes for the learning case.
    new_root = os.path.join(images, "new")
    if not os.path.isdir(new_root):
        tmp = new_root + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        if new_photos == "photos":
            for name, prefix in NEW_SOURCES.items():
                src = os.path.join(work, "photos", name)
                if not os.path.isdir(os.path.join(src, "test")):
                    photo_sets.build(name, src)
                for half in ("train", "test"):  # every photo of the class
                    for cls in sorted(os.listdir(os.path.join(src, half))):
                        dst = os.path.join(tmp, f"{prefix}_{cls}")
                        os.makedirs(dst, exist_ok=True)
                        for f in os.listdir(os.path.join(src, half, cls)):
                            shutil.copy(os.path.join(src, half, cls, f), dst)
        else:
            from edgetl.demo import write_digits_folder

            write_digits_folder(os.path.join(work, "digits"))
            for cls in sorted(os.listdir(os.path.join(work, "digits"))):
                shutil.copytree(os.path.join(work, "digits", cls), os.path.join(tmp, f"digit_{cls}"))
        os.replace(tmp, new_root)

    runs = {}
    for name in bundles:
        run = os.path.join(site, "runs", name)
        fp32 = run + "_fp32"
        if not os.path.isfile(os.path.join(fp32, "web", "bundle", "bundle.json")):
            for d in (run, fp32):
                shutil.rmtree(d, ignore_errors=True)
            t = time.time()
            if name == "default":
                edgetl.train(os.path.join(set_root, "train"), run, progress=False)
            elif name == "224":
                edgetl.train(os.path.join(set_root, "train"), run, progress=False, image_size=224)
            elif name == "digits":
                digits = os.path.join(work, "digits-train")
                if not os.path.isdir(digits):
                    from edgetl.demo import write_digits_folder

                    write_digits_folder(digits)
                edgetl.train(digits, run, progress=False)
            else:
                raise SystemExit(f"unknown bundle {name!r}: default, 224 or digits")
            print(f"[{name}] trained in {time.time() - t:.0f} s", flush=True)
            shutil.copytree(run, fp32)
            export_model(run, "web")
            export_model(fp32, "web", fp32=True)
        for d in (run, fp32):
            with open(os.path.join(d, "harness.html"), "w") as fh:
                fh.write(HARNESS)
        metrics = json.load(open(os.path.join(run, "metrics.json")))
        runs[name] = {"int8": run, "fp32": fp32, "chosen": metrics.get("chosen"),
                      "input_spec": metrics.get("input_spec"), "labels": json.load(
                          open(os.path.join(run, "web", "bundle", "bundle.json")))["labels"]}
    if "digits" in bundles:  # measured on 6 of its own training scans per digit: latency and agreement only
        dtest = os.path.join(images, "digits-test")
        if not os.path.isdir(dtest):
            src = os.path.join(work, "digits-train")
            for cls in sorted(os.listdir(src)):
                os.makedirs(os.path.join(dtest, cls))
                for f in sorted(os.listdir(os.path.join(src, cls)))[:6]:
                    shutil.copy(os.path.join(src, cls, f), os.path.join(dtest, cls))
    return {"site": site, "runs": runs}


def web_files(run: str) -> dict:
    """Every file of RUN/web: size on disk and gzip -6 size."""
    web = os.path.join(run, "web")
    out = {}
    for root, _d, names in os.walk(web):
        for n in sorted(names):
            p = os.path.join(root, n)
            rel = os.path.relpath(p, web).replace(os.sep, "/")
            data = open(p, "rb").read()
            out[rel] = {"bytes": len(data), "gzip_bytes": len(gzip.compress(data, 6))}
    wasm = sum(v["bytes"] for k, v in out.items() if _is_wasm(k))
    total = sum(v["bytes"] for v in out.values())
    gz_wasm = sum(v["gzip_bytes"] for k, v in out.items() if _is_wasm(k))
    gz = sum(v["gzip_bytes"] for v in out.values())
    return {"total_mb": round(total / MB, 3), "wasm_mb": round(wasm / MB, 3), "rest_mb": round((total - wasm) / MB, 3),
            "gzip_rest_mb": round((gz - gz_wasm) / MB, 3), "gzip_wasm_mb": round(gz_wasm / MB, 3),
            "by_kind_mb": _by_category(out, "bytes"), "files": out}


# --------------------------------------------------------------------------- browser


class Phone:
    """A throttled, phone-emulating context + page + CDP session."""

    def __init__(self, browser, throttle: int = THROTTLE):
        self.born = time.time()  # the page's renderer is first seen after this
        self.context = browser.new_context(**PHONE)
        self.page = self.context.new_page()
        self.errors = []
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(f"console: {m.text}"))
        self.page.add_init_script(INIT_SCRIPT)
        self.cdp = self.context.new_cdp_session(self.page)
        self.cdp.send("Emulation.setCPUThrottlingRate", {"rate": throttle})
        self.cdp.send("Performance.enable")
        self.cdp.send("Network.enable")
        self.net = {}  # requestId -> {url, bytes}
        self.cdp.on("Network.responseReceived",
                    lambda e: self.net.setdefault(e["requestId"], {}).update(url=e["response"]["url"]))
        self.cdp.on("Network.loadingFinished",
                    lambda e: self.net.setdefault(e["requestId"], {}).update(bytes=e["encodedDataLength"]))

    def page_bytes(self) -> dict:
        rows = [(v.get("url", "?"), v.get("bytes", 0)) for v in self.net.values()]
        wasm = sum(b for u, b in rows if _is_wasm(u.split("?")[0]))
        total = sum(b for _u, b in rows)
        return {"total_mb": round(total / MB, 3), "wasm_mb": round(wasm / MB, 3),
                "rest_mb": round((total - wasm) / MB, 3), "requests": len(rows)}

    def js_heap(self) -> dict:
        m = {x["name"]: x["value"] for x in self.cdp.send("Performance.getMetrics")["metrics"]}
        return {"used": m.get("JSHeapUsedSize", 0), "total": m.get("JSHeapTotalSize", 0)}

    def close(self):
        self.context.close()


def throttle_check(browser) -> dict:
    out = {}
    for rate in (1, THROTTLE):
        ph = Phone(browser, rate)
        ph.page.goto("about:blank")
        ms = [ph.page.evaluate(BUSY_LOOP)[0] for _ in range(3)]
        out[f"rate_{rate}_ms"] = round(min(ms), 1)
        ph.close()
    out["measured_factor"] = round(out[f"rate_{THROTTLE}_ms"] / out["rate_1_ms"], 2)
    return out


def first_visit(browser, server, url: str, photo: str, sampler) -> dict:
    """The app's page, cold: ready, first prediction, bytes; then a repeat visit."""
    ph = Phone(browser)
    cpu = CpuShare()
    t0 = time.time()
    ph.page.goto(url + "web/index.html", wait_until="commit")
    ph.page.wait_for_function("window.__marks && ('ready' in __marks || 'failed' in __marks)", polling=100,
                              timeout=900_000)
    if "failed" in ph.page.evaluate("__marks"):
        raise RuntimeError(f"the app failed to load: {ph.page.text_content('#message')} {ph.errors}")
    ph.page.set_input_files("#predict-pick", photo)
    ph.page.wait_for_function("'prediction' in __marks && !document.body.dataset.busy", polling=100, timeout=900_000)
    marks = ph.page.evaluate("__marks")
    shown = ph.page.eval_on_selector_all("#predictions li", "ls => ls.map(l => l.dataset.label)")
    app_latency = ph.page.text_content("#latency")
    t_pred = time.time()
    # Let the service worker finish installing (its precache is part of a first visit).
    ph.page.evaluate("navigator.serviceWorker.ready.then(() => true)")
    ph.page.wait_for_function("navigator.serviceWorker.controller !== null", polling=200, timeout=900_000)
    time.sleep(1.0)
    t1 = time.time()
    served = _served(server, t0, t1)
    mem = sampler.window(t0, t1, ph.born)
    wasm_mem = ph.page.evaluate("__wasmBytes()")
    other = cpu.other()
    # Repeat visit: the service worker serves the files now.
    t2 = time.time()
    ph.page.reload(wait_until="commit")
    ph.page.wait_for_function("window.__marks && ('ready' in __marks || 'failed' in __marks)", polling=100,
                              timeout=900_000)
    repeat = ph.page.evaluate("__marks")
    repeat_served = _served(server, t2)
    out = {
        "time_to_ready_ms": round(marks["ready"]),
        "time_to_first_prediction_ms": round(marks["ready"] + marks["prediction"] - marks["change"]),
        "raw_first_prediction_ms": round(marks["prediction"]),
        "app_shown_latency": app_latency,
        "predicted": shown,
        "download": {k: v for k, v in served.items() if k != "files"},
        "download_files": served["files"],
        "downloaded_twice": sorted(p for p, f in served["files"].items() if f["codes"].count(200) > 1),
        "page_requests_cdp": ph.page_bytes(),
        "wall_s_to_prediction": round(t_pred - t0, 1),
        "repeat_visit_ready_ms": round(repeat.get("ready", float("nan"))),
        "repeat_visit_served_mb": repeat_served["total_mb"],
        "memory": {"renderer": mem, "wasm_memory_mb": round(wasm_mem / MB, 1)},
        "other_cpu_share": other,
        "errors": ph.errors,
    }
    ph.close()
    return out


def first_visits(browser, server, url: str, photo: str, sampler, visits: int) -> dict:
    """``visits`` cold first visits: the medians, and every visit."""
    runs = [first_visit(browser, server, url, photo, sampler) for _ in range(visits)]
    med = lambda key: round(statistics.median(r[key] for r in runs))  # noqa: E731
    rest = [r["download"]["rest_mb"] for r in runs]
    wasm = [r["download"]["wasm_mb"] for r in runs]
    per_visit = []
    for r in runs:
        keys = ("time_to_ready_ms", "time_to_first_prediction_ms", "repeat_visit_ready_ms", "downloaded_twice",
                "other_cpu_share")
        per_visit.append({**{k: r[k] for k in keys}, "download_rest_mb": r["download"]["rest_mb"],
                          "download_wasm_mb": r["download"]["wasm_mb"],
                          "tab_footprint_peak_mb": r["memory"]["renderer"].get("footprint_peak_mb")})
    out = dict(runs[0])  # the first visit's details
    out.update({"visits": len(runs), "time_to_ready_ms": med("time_to_ready_ms"),
                "time_to_first_prediction_ms": med("time_to_first_prediction_ms"),
                "repeat_visit_ready_ms": med("repeat_visit_ready_ms"),
                "per_visit": per_visit,
                "download_rest_mb_min_max": [min(rest), max(rest)],
                "download_wasm_mb_min_max": [min(wasm), max(wasm)]})
    return out


def _percentile(xs, q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


def _open_harness(browser, url: str) -> Phone:
    ph = Phone(browser)
    ph.page.goto(url + "harness.html")
    ph.page.wait_for_function("window.harnessReady === true", polling=100, timeout=300_000)
    return ph


def latency(browser, url: str, image_urls: list, sampler) -> dict:
    ph = _open_harness(browser, url)
    cpu = CpuShare()
    t0 = time.time()
    r = ph.page.evaluate("""async (urls) => {
        const t0 = performance.now();
        const m = await edgetl.load('./web/', {restore: false});
        const loadMs = performance.now() - t0;
        const blobs = await Promise.all(urls.map(blobOf));
        const labels = [], ms = [];
        for (const b of blobs) {
            const t = performance.now();
            const [best] = await m.predict(b, {topK: 1});
            ms.push(performance.now() - t);
            labels.push(best.label);
        }
        const ort = await import('./web/ort/ort.wasm.min.mjs');
        return {loadMs, ms, labels, numThreads: ort.env.wasm.numThreads, isolated: self.crossOriginIsolated,
                wasm: __wasmBytes(), hardwareConcurrency: navigator.hardwareConcurrency};
    }""", image_urls)
    t1 = time.time()
    heap = ph.js_heap()
    out = {"load_ms": round(r["loadMs"]), "first_predict_ms": round(r["ms"][0]),
           "median_ms": round(statistics.median(r["ms"][1:]), 1), "p90_ms": round(_percentile(r["ms"][1:], 0.9), 1),
           "n_timed": len(r["ms"]) - 1, "ms": [round(x, 1) for x in r["ms"]], "labels": r["labels"],
           "ort_num_threads": r["numThreads"], "cross_origin_isolated": r["isolated"],
           "hardware_concurrency": r["hardwareConcurrency"],
           "memory": {"renderer": sampler.window(t0, t1, ph.born), "wasm_memory_mb": round(r["wasm"] / MB, 1),
                      "js_heap_end_used_mb": round(heap["used"] / MB, 1)},
           "other_cpu_share": cpu.other(), "errors": ph.errors}
    ph.close()
    return out


def chrome_memory_dump(browser, pid: int, depth: int = 2) -> dict:
    """Chrome's own accounting of one process (memory-infra, through a browser
    CDP session: ``Tracing.requestMemoryDump``): its private footprint and
    the allocators' sizes (partition_alloc -- Blink's buffers, strings,
    ArrayBuffers --, malloc, v8's heaps, blink_gc), ``depth`` levels, >= 0.5 MB.
    Wasm linear memory and compiled wasm code are in none of them."""
    cdp = browser.new_browser_cdp_session()
    done = {}
    cdp.on("Tracing.tracingComplete", lambda e: done.update(e))
    cdp.send("Tracing.start", {"transferMode": "ReturnAsStream", "traceConfig": {
        "includedCategories": ["disabled-by-default-memory-infra"], "excludedCategories": ["*"],
        "memoryDumpConfig": {"triggers": []}}})
    cdp.send("Tracing.requestMemoryDump", {"deterministic": True, "levelOfDetail": "detailed"})
    cdp.send("Tracing.end")
    deadline = time.time() + 60
    while "stream" not in done and time.time() < deadline:
        cdp.send("Browser.getVersion")  # lets the event arrive
        time.sleep(0.1)
    if "stream" not in done:
        return {}
    data = b""
    while True:
        chunk = cdp.send("IO.read", {"handle": done["stream"], "size": 1 << 20})
        data += base64.b64decode(chunk["data"]) if chunk.get("base64Encoded") else chunk["data"].encode()
        if chunk.get("eof"):
            break
    cdp.send("IO.close", {"handle": done["stream"]})
    cdp.detach()
    trace = json.loads(data)
    out = {}
    for e in trace["traceEvents"] if isinstance(trace, dict) else trace:
        if e.get("ph") != "v" or e.get("pid") != pid:
            continue
        dumps = e["args"]["dumps"]
        for k, v in dumps.get("process_totals", {}).items():
            if isinstance(v, str):
                out[k + "_mb"] = round(int(v, 16) / MB, 1)
        allocators = {}
        for name, a in dumps.get("allocators", {}).items():
            size = a.get("attrs", {}).get("size", {}).get("value")
            keep = name.count("/") <= depth and not name.startswith(("shared_memory/", "global/"))
            if size and keep and int(size, 16) >= 0.5 * MB:
                allocators[name] = round(int(size, 16) / MB, 1)
        if allocators:
            out["allocators_mb"] = dict(sorted(allocators.items(), key=lambda kv: -kv[1]))
    return out


def anatomy(browser, url: str, photo_url: str, sampler) -> dict:
    """What the tab's memory is made of, step by step: the harness alone;
    onnxruntime-web's wasm compiled and started (a session on the small
    train_step.onnx); edgetl.load (the feature model's session, the head); one
    prediction. At each step: the renderer (rollup, and PSS by kind of mapping),
    the wasm linear memory, V8's heap and ArrayBuffer backing stores."""
    ph = _open_harness(browser, url)
    steps = {}

    def step(name):
        time.sleep(1.0)
        now = sampler.now(ph.born)
        usage = ph.cdp.send("Runtime.getHeapUsage")
        steps[name] = {"renderer": now, "renderer_pss_by_kind_mb": smaps_groups(now["pid"]) if now else {},
                       "chrome_memory_dump": chrome_memory_dump(browser, now["pid"]) if now else {},
                       "wasm_memory_mb": round(ph.page.evaluate("__wasmBytes()") / MB, 1),
                       "js_heap_used_mb": round(usage["usedSize"] / MB, 1),
                       "js_heap_total_mb": round(usage["totalSize"] / MB, 1),
                       "array_buffers_mb": round(usage.get("backingStorageSize", 0) / MB, 1)}

    step("harness_page")
    ph.page.evaluate("""async () => { const ort = await import('./web/ort/ort.wasm.min.mjs');
        window.__tiny = await ort.InferenceSession.create(new URL('./web/bundle/train_step.onnx', location.href).href,
                                                            {executionProviders: ['wasm']}); }""")
    step("ort_wasm_started")
    ph.page.evaluate("async () => { window.__m = await edgetl.load('./web/', {restore: false}); }")
    step("model_loaded")
    ph.page.evaluate("async (u) => { await __m.predict(await blobOf(u)); }", photo_url)
    step("after_one_prediction")
    ph.close()
    return steps


LEARN_JOB = """async ([classes, epochs, uasm, fitAfter]) => {
    const job = window.__job = {done: false, error: null, phase: 'load', adds: [], fits: [], log: []};
    const now = () => performance.now();
    const phase = (p) => { job.phase = p; job.log.push([Date.now() / 1000, p]); };
    phase('load');
    (async () => {
        let t = now();
        const m = await edgetl.load('./web/', {restore: false});
        job.loadMs = now() - t;
        job.bundleClasses = m.labels.length;
        job.bundleStored = m.numStored;
        phase('loaded');
        await new Promise((r) => setTimeout(r, 1500));  // a quiet moment: the baseline after load
        for (let i = 0; i < classes.length; i++) {
            const [label, urls] = classes[i];
            phase(`fetch ${i + 1}`);
            let blobs = await Promise.all(urls.map(blobOf));
            phase(`add ${i + 1}`);
            t = now();
            await m.addExamples(blobs, label);
            job.adds.push({label, n: urls.length, ms: now() - t});
            blobs = null;
            if (fitAfter.includes(i + 1)) {
                phase(`fit ${i + 1}`);
                const epochMs = [];
                let te = now();
                t = te;
                const records = await m.fit({epochs, onEpoch: () => { const x = now(); epochMs.push(x - te); te = x; }});
                job.fits.push({afterClasses: i + 1, classes: m.labels.length, stored: m.numStored, ms: now() - t,
                               epochs: records.length, firstLoss: records[0].loss,
                               lastLoss: records[records.length - 1].loss, epochMs});
            }
        }
        job.wasm = __wasmBytes();
        job.stored = m.numStored;
        job.labels = m.labels.length;
        if (uasm && self.crossOriginIsolated && performance.measureUserAgentSpecificMemory) {
            phase('measureUserAgentSpecificMemory');
            const r = await performance.measureUserAgentSpecificMemory();
            job.uasm = {bytes: r.bytes, breakdown: r.breakdown.filter((b) => b.bytes > 0)
                .map((b) => ({bytes: b.bytes, types: b.types, scope: b.attribution.map((a) => a.scope).join(',')}))};
        }
        window.__model = m;  // kept alive until the end, as in the app
        phase('done');
        job.done = true;
    })().catch((e) => { job.error = String((e && e.stack) || e); job.done = true; });
    return true;
}"""


def learning(browser, url: str, classes: list, epochs: int, sampler, fit_after=None) -> dict:
    """A fresh page: load, then addExamples class by class, and
    ``fit({epochs})`` after the classes numbered in ``fit_after`` (default:
    after the last only); memory sampled throughout."""
    fit_after = list(fit_after or [len(classes)])
    ph = _open_harness(browser, url)
    baseline = sampler.now(ph.born)
    cpu = CpuShare()
    t0 = time.time()
    ph.page.evaluate(LEARN_JOB, [classes, epochs, True, fit_after])
    heap_used = heap_total = 0
    while True:
        h = ph.js_heap()
        heap_used, heap_total = max(heap_used, h["used"]), max(heap_total, h["total"])
        if ph.page.evaluate("__job.done"):
            break
        time.sleep(0.25)
    t1 = time.time()
    job = ph.page.evaluate("(() => { const j = {...__job}; return j; })()")
    if job.get("error"):
        raise RuntimeError(f"learning failed in the page: {job['error']}\n{ph.errors}")
    end_groups = smaps_groups(sampler.now(ph.born).get("pid", 0))
    # The peak of each stage: load; adding examples (fetch + addExamples); each fit.
    marks = [(t0, "load")] + [tuple(x) for x in job["log"][1:]] + [(t1, "end")]
    stages = {}
    for (a, phase), (b, _next) in zip(marks, marks[1:]):
        kind = phase.split()[0]
        key = {"load": "load", "loaded": "load", "fetch": "add_examples", "add": "add_examples"}.get(kind)
        if kind == "fit":
            key = f"fit_after_{phase.split()[1]}_classes"
        if key:
            w = sampler.window(a, b, ph.born)
            if w.get("samples"):
                old = stages.get(key)
                if not old or w["footprint_peak_mb"] > old["footprint_peak_mb"]:
                    stages[key] = w
    out = {"load_ms": round(job["loadMs"]), "bundle_classes": job["bundleClasses"],
           "bundle_exemplars": job["bundleStored"], "adds": job["adds"], "fits": job["fits"],
           "stored_at_end": job["stored"], "classes_at_end": job["labels"],
           "memory": {"renderer_baseline_before_load": baseline, "renderer": sampler.window(t0, t1, ph.born),
                      "renderer_by_stage": stages, "renderer_pss_by_kind_at_end_mb": end_groups,
                      "js_heap_peak_used_mb": round(heap_used / MB, 1),
                      "js_heap_peak_total_mb": round(heap_total / MB, 1),
                      "wasm_memory_mb": round(job["wasm"] / MB, 1),
                      "measure_user_agent_specific_memory": job.get("uasm")},
           "wall_s": round(t1 - t0, 1), "other_cpu_share": cpu.other(), "errors": ph.errors}
    ph.close()
    return out


def camera_photos(site: str, new_class: str, n: int, size=(4032, 3024)) -> list:
    """``n`` photos of ``new_class`` upscaled (Lanczos) to a phone camera's 12 MP
    and saved as JPEG (quality 90): the size a phone's camera hands the page.
    Returns their URLs relative to a run folder."""
    from PIL import Image

    src = os.path.join(site, "images", "new", new_class)
    dst = os.path.join(site, "images", "camera", new_class)
    os.makedirs(dst, exist_ok=True)
    urls = []
    for name in sorted(os.listdir(src))[:n]:
        out = os.path.join(dst, os.path.splitext(name)[0] + ".jpg")
        if not os.path.isfile(out):
            with Image.open(os.path.join(src, name)) as im:
                im.convert("RGB").resize(size, Image.LANCZOS).save(out, "JPEG", quality=90)
        urls.append(f"../../images/camera/{new_class}/{os.path.basename(out)}")
    return urls


def camera_case(browser, url: str, label: str, urls: list, epochs: int, sampler) -> dict:
    """A fresh page: load, addExamples of ``urls`` (12 MP photos) as a new class, fit."""
    ph = _open_harness(browser, url)
    t0 = time.time()
    r = ph.page.evaluate("""async ([label, urls, epochs]) => {
        const m = await edgetl.load('./web/', {restore: false});
        let blobs = await Promise.all(urls.map(blobOf));
        const mb = blobs.reduce((s, b) => s + b.size, 0) / 1e6;
        const addStart = Date.now() / 1000;
        let t = performance.now();
        await m.addExamples(blobs, label);
        const addMs = performance.now() - t;
        const addEnd = Date.now() / 1000;
        blobs = null;
        t = performance.now();
        await m.fit({epochs});
        return {addMs, fitMs: performance.now() - t, fileMb: mb, wasm: __wasmBytes(), addStart, addEnd};
    }""", [label, urls, epochs])
    t1 = time.time()
    out = {"photos": len(urls), "pixels": "4032x3024", "files_mb": round(r["fileMb"], 2),
           "add_ms": round(r["addMs"]), "add_ms_per_photo": round(r["addMs"] / len(urls)),
           "fit_ms": round(r["fitMs"]), "memory": {"renderer": sampler.window(t0, t1, ph.born),
                                                   "renderer_during_add": sampler.window(r["addStart"], r["addEnd"],
                                                                                         ph.born),
                                                   "renderer_during_fit": sampler.window(r["addEnd"], t1, ph.born),
                                                   "wasm_memory_mb": round(r["wasm"] / MB, 1)},
           "errors": ph.errors}
    ph.close()
    return out


# --------------------------------------------------------------------------- report


def machine(browser_version: str) -> dict:
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    git = {}
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        git["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                       text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.splitlines()
        git["src_uncommitted_files"] = [line[3:] for line in dirty if line.strip()]
    from importlib.metadata import version

    import edgetl

    return {"cpu_model": model, "nproc": os.cpu_count(), "chromium": browser_version,
            "chromium_flags": CHROMIUM_FLAGS, "playwright": version("playwright"),
            "python": platform.python_version(), "edgetl": getattr(edgetl, "__version__", "?"), **git,
            "loadavg_start": open("/proc/loadavg").read().split()[:3]}


def _span(lo_hi) -> str:
    lo, hi = lo_hi
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


def print_table(res: dict) -> None:
    print()
    print(f"machine: {res['machine']['cpu_model']}, {res['machine']['nproc']} cores; {res['machine']['chromium']}; "
          f"onnxruntime-web {res['onnxruntime_web']}; cross-origin isolated: {res['cross_origin_isolated']}; "
          f"ORT threads: {res['ort_num_threads']}; throttle {THROTTLE}x (measured "
          f"{res['throttle_check']['measured_factor']}x)")
    for name, b in res["bundles"].items():
        spec = b["input_spec"] or {}
        ch = b["chosen"] or {}
        print(f"\n== bundle {name}: {spec.get('image_size')} px {spec.get('channels')}, tap {ch.get('tap')}, "
              f"dim {ch.get('dim')}, {len(b['labels'])} classes")
        rows = []
        for prec in ("int8", "fp32"):
            fv, lat, disk = b[prec]["first_visit"], b[prec]["latency"], b[prec]["files"]
            rows.append((prec, [
                ("on disk: web/ without ORT wasm / ORT wasm (MB)", f"{disk['rest_mb']} / {disk['wasm_mb']}"),
                ("  gzip -6 of the same (MB)", f"{disk['gzip_rest_mb']} / {disk['gzip_wasm_mb']}"),
                ("first visit download: without wasm / wasm (MB; min-max of the visits)",
                 f"{_span(fv['download_rest_mb_min_max'])} / {_span(fv['download_wasm_mb_min_max'])}"),
                ("  of which feature model / head+exemplars / app code (MB)",
                 f"{fv['download']['by_kind_mb'].get('features_model')} / "
                 f"{fv['download']['by_kind_mb'].get('head_and_exemplars')} / "
                 f"{fv['download']['by_kind_mb'].get('app_code')}"),
                ("time to ready / to first prediction (ms)",
                 f"{fv['time_to_ready_ms']} / {fv['time_to_first_prediction_ms']}"),
                ("repeat visit (service worker): time to ready (ms)", f"{fv['repeat_visit_ready_ms']}"),
                ("harness: load / first predict / median / p90 per image (ms)",
                 f"{lat['load_ms']} / {lat['first_predict_ms']} / {lat['median_ms']} / {lat['p90_ms']}"),
                ("agreement with edgetl predict", f"{lat['agreement']:.1%} of {lat['n_images']}"),
                ("tab (renderer) peak during predictions: footprint / PSS / RSS (MB)",
                 f"{lat['memory']['renderer'].get('footprint_peak_mb')} / {lat['memory']['renderer'].get('pss_peak_mb')}"
                 f" / {lat['memory']['renderer'].get('rss_peak_mb')}"),
                ("wasm linear memory (MB)", f"{lat['memory']['wasm_memory_mb']}"),
            ]))
        labels = [k for k, _v in rows[0][1]]
        print(f"{'':74s} {'int8':>22s} {'fp32':>22s}")
        for i, label in enumerate(labels):
            print(f"{label:74s} {rows[0][1][i][1]:>22s} {rows[1][1][i][1]:>22s}")
        for prec in ("int8", "fp32"):
            an = b[prec].get("memory_anatomy")
            if an:
                steps = ", ".join(f"{k} {v['renderer'].get('footprint_mb')}" for k, v in an.items())
                d = an["model_loaded"].get("chrome_memory_dump", {}).get("allocators_mb", {})
                print(f"tab footprint (MB), {prec}: {steps}; after load: wasm linear memory "
                      f"{an['model_loaded']['wasm_memory_mb']}, partition_alloc {d.get('partition_alloc')}, malloc "
                      f"{d.get('malloc')}, v8 {d.get('v8')}, blink_gc {d.get('blink_gc')}")
        one, le = b.get("one_class"), b.get("learning")
        if one:
            f1 = one["fits"][0]
            r1 = one["memory"]["renderer"]
            print(f"one new class (int8, fresh page): load {one['load_ms']} ms; add {one['adds'][0]['n']} photos "
                  f"{one['adds'][0]['ms'] / 1000:.1f} s ({one['adds'][0]['ms'] / one['adds'][0]['n']:.0f} ms/photo); "
                  f"fit {f1['epochs']} epochs on {f1['stored']} examples {f1['ms'] / 1000:.1f} s; tab peak footprint "
                  f"{r1.get('footprint_peak_mb')} MB (PSS {r1.get('pss_peak_mb')}, RSS {r1.get('rss_peak_mb')})")
        if le:
            fn = le["fits"][-1]
            mem = le["memory"]
            r = mem["renderer"]
            add = sum(x["ms"] for x in le["adds"])
            n_add = sum(x["n"] for x in le["adds"])
            print(f"{len(le['adds'])} new classes (int8, fresh page): add {n_add} photos {add / 1000:.1f} s "
                  f"({add / n_add:.0f} ms/photo); then fit {fn['epochs']} epochs, {fn['classes']} classes, "
                  f"{fn['stored']} examples: {fn['ms'] / 1000:.1f} s")
            base_ = mem["renderer_baseline_before_load"]
            print(f"  tab (renderer) peak: footprint {r.get('footprint_peak_mb')} MB, PSS {r.get('pss_peak_mb')} MB, "
                  f"RSS {r.get('rss_peak_mb')} MB, USS {r.get('uss_peak_mb')} MB; harness page before load: footprint "
                  f"{base_.get('footprint_mb')}, PSS {base_.get('pss_mb')}, RSS {base_.get('rss_mb')} MB")
            print(f"  JS heap peak used/total {mem['js_heap_peak_used_mb']}/{mem['js_heap_peak_total_mb']} MB; "
                  f"wasm linear memory {mem['wasm_memory_mb']} MB; all browser processes PSS peak "
                  f"{r.get('browser_all_pss_peak_mb')} MB")
            for k, v in mem["renderer_by_stage"].items():
                print(f"    {k:24s} footprint {v.get('footprint_peak_mb')} MB, PSS {v.get('pss_peak_mb')} MB, "
                      f"RSS {v.get('rss_peak_mb')} MB")
            cam = b.get("camera_photos")
            if cam:
                cr = cam["memory"]["renderer"]
                print(f"  {cam['photos']} camera-size photos ({cam['pixels']}, {cam['files_mb']} MB of JPEG) as a new "
                      f"class in a fresh page: add {cam['add_ms'] / 1000:.1f} s ({cam['add_ms_per_photo']} ms/photo), "
                      f"fit {cam['fit_ms'] / 1000:.1f} s; tab peak footprint {cr.get('footprint_peak_mb')} MB "
                      f"(while adding {cam['memory']['renderer_during_add'].get('footprint_peak_mb')}, while fitting "
                      f"{cam['memory']['renderer_during_fit'].get('footprint_peak_mb')}), PSS {cr.get('pss_peak_mb')} MB, "
                      f"RSS {cr.get('rss_peak_mb')} MB")
            if mem.get("measure_user_agent_specific_memory"):
                print(f"  measureUserAgentSpecificMemory: {mem['measure_user_agent_specific_memory']['bytes'] / MB:.1f} MB")
    if res.get("goals"):
        print("\ngoals:")
        for g in res["goals"]:
            print(f"  [{'met' if g['met'] else 'NOT MET'}] {g['goal']}: {g['value']}")


def goals(res: dict) -> list:
    out = []
    b = res["bundles"].get("default")
    if b:
        fv = b["int8"]["first_visit"]
        worst = fv["download_rest_mb_min_max"][1]
        out.append({"goal": f"int8 page weight <= {GOAL_PAGE_MB} MB without ORT's wasm (default bundle, first-visit "
                            f"download, the largest of {fv['visits']} visits)",
                    "value": f"{worst} MB (wasm {_span(fv['download_wasm_mb_min_max'])} MB)", "met": worst <= GOAL_PAGE_MB})
    for name, b in res["bundles"].items():
        le = b.get("learning")
        if le:
            r = le["memory"]["renderer"]
            fp = r.get("footprint_peak_mb")
            out.append({"goal": f"[{name}] 10 classes x 50 photos + fit: the tab's memory footprint (Chrome's "
                                f"private footprint of its renderer) <= {GOAL_TAB_MB} MB",
                        "value": f"peak footprint {fp} MB (PSS {r.get('pss_peak_mb')} MB, RSS {r.get('rss_peak_mb')} MB)",
                        "met": fp is not None and fp <= GOAL_TAB_MB})
        for prec in ("int8", "fp32"):
            lat = b[prec]["latency"]
            out.append({"goal": f"[{name}] {prec} web top-1 = edgetl predict on >= {GOAL_AGREE[prec]:.1%}",
                        "value": f"{lat['agreement']:.1%} of {lat['n_images']}",
                        "met": lat["agreement"] >= GOAL_AGREE[prec]})
    return out


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="JSON results (default bench/results/web-<date>.json)")
    ap.add_argument("--quick", action="store_true",
                    help="short run: the default bundle only, 8 latency images, 3 new classes x 20 photos, "
                         "fit 20 epochs; goals not judged")
    ap.add_argument("--bundles", default=None, help="comma-separated: default, 224, digits (default: default,224)")
    ap.add_argument("--photo-set", default="gcompris_photos", help="bench/photo_sets.py set for the bundles")
    ap.add_argument("--new-photos", choices=("photos", "digits"), default="photos",
                    help="new classes: 10 classes of real photos (tuxpaint_stamps + qabcs_photos, each cycled to 50) "
                         "or scikit-learn's digits (10 classes, ~180 scans each)")
    ap.add_argument("--classes", type=int, default=10, help="new classes in the learning case")
    ap.add_argument("--per-class", type=int, default=50, help="photos per new class")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--latency-images", type=int, default=0, help="0: every test photo of the set")
    ap.add_argument("--isolated", action="store_true", help="serve with COOP/COEP (cross-origin isolated page)")
    ap.add_argument("--visits", type=int, default=3, help="cold first visits of the app per export (medians)")
    ap.add_argument("--link-mbps", type=float, default=9.0,
                    help="one more first visit (default bundle) through an emulated link shared by all requests, "
                         "at this many Mbit/s (0: skip)")
    ap.add_argument("--link-rtt-ms", type=float, default=60.0, help="added before each response of that visit")
    ap.add_argument("--camera-photos", type=int, default=8,
                    help="then, in a fresh page, add this many 12 MP photos (the first new class's photos upscaled to "
                         "4032x3024 JPEG) as a new class and fit (0: skip)")
    ap.add_argument("--work", help="keep photos, bundles and the site here (reused when present)")
    args = ap.parse_args(argv)
    if args.quick:
        args.bundles = args.bundles or "default"
        args.latency_images = args.latency_images or 8
        args.classes, args.per_class = min(args.classes, 3), min(args.per_class, 20)
        args.visits, args.link_mbps, args.camera_photos = 1, 0.0, 0
    bundles = (args.bundles or "default,224").split(",")
    out_path = args.out or os.path.join(HERE, "results", f"web-{datetime.date.today().isoformat()}.json")
    if not os.path.exists(CHROMIUM):
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install chromium")

    work = args.work or tempfile.mkdtemp(prefix="edgetl-bench-web-")
    os.makedirs(work, exist_ok=True)
    started = time.time()
    try:
        t = time.time()
        data = prepare(work, args.photo_set, bundles, args.new_photos)
        prep_s = time.time() - t
        site = data["site"]
        test = _photo_paths(os.path.join(site, "images", "test"))
        if args.latency_images:
            test = test[:: max(1, len(test) // args.latency_images)][: args.latency_images]
        new_root = os.path.join(site, "images", "new")
        new_classes = sorted(os.listdir(new_root))[: args.classes]
        classes, reuse = [], {}
        for cls in new_classes:
            files = sorted(os.listdir(os.path.join(new_root, cls)))
            reuse[cls] = len(files)
            picks = [files[i % len(files)] for i in range(args.per_class)]  # cycled when fewer than per_class
            classes.append([cls, [f"../../images/new/{cls}/{f}" for f in picks]])

        from playwright.sync_api import sync_playwright

        from edgetl.runtime import Predictor

        sampler = MemorySampler()
        sampler.start()
        res = {"command": " ".join([os.path.basename(sys.executable)] + sys.argv), "args": vars(args),
               "date": datetime.datetime.now().isoformat(timespec="seconds"), "prepare_s": round(prep_s, 1),
               "photo_set": args.photo_set, "test_images": len(test),
               "new_classes": {c: {"distinct_photos": reuse[c], "used": args.per_class,
                                   "reused": max(0, args.per_class - reuse[c])} for c in new_classes},
               "bundles": {}}
        with sync_playwright() as pw, serve_counting(site, args.isolated) as (server, base):
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
            res["machine"] = machine(browser.version)
            res["throttle_check"] = throttle_check(browser)
            print(f"throttle check: {res['throttle_check']}", flush=True)
            for name in bundles:
                run = data["runs"][name]
                images = test if name != "digits" else _photo_paths(os.path.join(site, "images", "digits-test"))
                entry = {"chosen": run["chosen"], "input_spec": run["input_spec"], "labels": run["labels"]}
                for prec in ("int8", "fp32"):
                    rd = run[prec]
                    url = base + os.path.relpath(rd, site).replace(os.sep, "/") + "/"
                    info = json.load(open(os.path.join(rd, "web", "bundle", "bundle.json")))
                    res["onnxruntime_web"] = info["onnxruntime_web"]
                    print(f"[{name} {prec}] first visit x {args.visits} ...", flush=True)
                    fv = first_visits(browser, server, url, images[0][0], sampler, args.visits)
                    print(f"[{name} {prec}] ready {fv['time_to_ready_ms']} ms, first prediction "
                          f"{fv['time_to_first_prediction_ms']} ms, download {fv['download']['rest_mb']} MB + wasm "
                          f"{fv['download']['wasm_mb']} MB", flush=True)
                    urls = ["../../images/" + os.path.relpath(p, os.path.join(site, "images")).replace(os.sep, "/")
                            for p, _c in images]
                    lat = latency(browser, url, urls, sampler)
                    host = [p.label for p in Predictor(rd, int8=prec == "int8").predict([p for p, _c in images])]
                    lat["agreement"] = sum(a == b for a, b in zip(lat["labels"], host)) / len(host)
                    lat["n_images"] = len(host)
                    lat["accuracy_web"] = sum(a == c for a, (_p, c) in zip(lat["labels"], images)) / len(images)
                    print(f"[{name} {prec}] latency median {lat['median_ms']} ms (first {lat['first_predict_ms']} ms), "
                          f"agreement {lat['agreement']:.1%}", flush=True)
                    res["cross_origin_isolated"] = lat["cross_origin_isolated"]
                    res["ort_num_threads"] = lat["ort_num_threads"]
                    photo_url = urls[0]
                    entry[prec] = {"run_dir": rd, "precision": info["precision"], "files": web_files(rd),
                                   "first_visit": fv, "latency": lat,
                                   "memory_anatomy": anatomy(browser, url, photo_url, sampler)}
                    if name == bundles[0] and args.link_mbps:
                        server.link(args.link_mbps, args.link_rtt_ms)
                        try:
                            slow = first_visit(browser, server, url, images[0][0], sampler)
                        finally:
                            server.link()
                        slow["link"] = {"mbps": args.link_mbps, "rtt_ms": args.link_rtt_ms}
                        entry[prec]["first_visit_slow_link"] = slow
                        print(f"[{name} {prec}] over {args.link_mbps} Mbit/s: first prediction "
                              f"{slow['time_to_first_prediction_ms']} ms, download {slow['download']['total_mb']} MB, "
                              f"twice: {slow['downloaded_twice']}", flush=True)
                url = base + os.path.relpath(run["int8"], site).replace(os.sep, "/") + "/"
                print(f"[{name}] one new class: add {args.per_class} photos, fit {args.epochs} epochs ...", flush=True)
                one = entry["one_class"] = learning(browser, url, classes[:1], args.epochs, sampler)
                print(f"[{name}] add: {one['adds'][0]['ms'] / 1000:.1f} s, fit: {one['fits'][0]['ms'] / 1000:.1f} s, "
                      f"tab peak footprint {one['memory']['renderer'].get('footprint_peak_mb')} MB", flush=True)
                print(f"[{name}] {len(classes)} new classes x {args.per_class} photos, then one fit ...", flush=True)
                le = entry["learning"] = learning(browser, url, classes, args.epochs, sampler)
                print(f"[{name}] add: {sum(x['ms'] for x in le['adds']) / 1000:.1f} s, fit: "
                      f"{le['fits'][0]['ms'] / 1000:.1f} s, tab peak footprint "
                      f"{le['memory']['renderer'].get('footprint_peak_mb')} MB", flush=True)
                if args.camera_photos:
                    cam = camera_photos(site, classes[0][0], args.camera_photos)
                    entry["camera_photos"] = camera_case(browser, url, classes[0][0], cam, args.epochs, sampler)
                    c = entry["camera_photos"]
                    print(f"[{name}] {c['photos']} camera photos (12 MP): add {c['add_ms'] / 1000:.1f} s, tab peak "
                          f"footprint {c['memory']['renderer'].get('footprint_peak_mb')} MB", flush=True)
                res["bundles"][name] = entry
            browser.close()
        sampler.stop()
        res["goals"] = [] if args.quick else goals(res)
        res["wall_s"] = round(time.time() - started, 1)
        res["machine"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
        with open(out_path, "w") as fh:
            json.dump(res, fh, indent=1)
        print_table(res)
        print(f"\nwrote {out_path} ({res['wall_s']:.0f} s)")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
