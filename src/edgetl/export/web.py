"""``edgetl export RUN_DIR --format web [--fp32]``: RUN_DIR/web/, a static
web app that predicts and keeps learning in a browser, offline after the
first visit, on onnxruntime-web (no training framework: the bundle's
``train_step.onnx`` is plain ONNX).

Layout (what ``edgetl/web/edgetl.js`` reads; a test checks it)::

    web/index.html, app.js, app.css        the app (a phone-sized page)
    web/edgetl.js, preprocess.js, rng.js   the ES module app developers import
    web/sw.js, manifest.webmanifest, icon-*.png   offline cache, installable PWA
    web/bundle/bundle.json                 labels, InputSpec, l2, file names, sha256
    web/bundle/features[.int8].onnx        the frozen feature model (int8 by default)
    web/bundle/train_step.onnx             one gradient step of the head
    web/bundle/head.safetensors            head, standardisation, exemplars (as the bundle's)
    web/ort/                               onnxruntime-web's wasm build (pinned, from npm)

Prediction in the page is ``features.onnx`` + the head in JavaScript, not
``model.onnx``: the head is what the device trains, and the page does not
download the backbone twice.

onnxruntime-web comes from the npm registry at the version pinned in
``edgetl/web/package.json`` + ``package-lock.json``: the first web export runs
``npm ci`` once into the cache (``CACHE/web-runtime/``); later exports copy
from there. ``EDGETL_ORT_WEB_DIST`` may name a folder holding its ``dist``
files instead (a machine without npm)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess

from .._files import atomic_path, cache_path, open_cache_folder, temp_name
from ..errors import BundleError, MissingExtraError
from ..runtime.bundle import FEATURES_FP32, FEATURES_INT8, HEAD, TRAIN_STEP, file_sha256, read_device_files
from .record import size_mb, update_metrics
from .registry import register_format

WEB_DIR = "web"
APP_SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "web")
APP_FILES = ("index.html", "app.js", "app.css", "edgetl.js", "preprocess.js", "rng.js")
# onnxruntime-web's wasm build: the ES module, its Emscripten loader and the
# SIMD (+ threads when the page is cross-origin isolated) wasm binary.
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
WEB_FORMAT = "edgetl.web/1"


def ort_web_version() -> str:
    with open(os.path.join(APP_SOURCE, "package.json"), encoding="utf-8") as fh:
        return json.load(fh)["dependencies"]["onnxruntime-web"]


def _installed_version(dist: str) -> str | None:
    try:
        with open(os.path.join(os.path.dirname(dist), "package.json"), encoding="utf-8") as fh:
            return json.load(fh).get("version")
    except (OSError, ValueError):
        return None


def ort_web_dist(cache_dir: str | None = None) -> str:
    """The folder holding onnxruntime-web's ``dist`` files at the pinned
    version: ``$EDGETL_ORT_WEB_DIST``, else the cache, filled by ``npm ci``
    the first time (MissingExtraError if npm is not installed)."""
    version = ort_web_version()
    given = os.environ.get("EDGETL_ORT_WEB_DIST")
    if given:
        missing = [f for f in ORT_FILES if not os.path.isfile(os.path.join(given, f))]
        if missing:
            raise BundleError(f"EDGETL_ORT_WEB_DIST='{given}' lacks {', '.join(missing)}; point it at the 'dist' "
                              f"folder of onnxruntime-web {version}, or unset it to fetch it with npm")
        return given
    root = open_cache_folder(cache_path(cache_dir, "web-runtime"))
    folder = os.path.join(root, f"onnxruntime-web-{version}")
    dist = os.path.join(folder, "node_modules", "onnxruntime-web", "dist")
    if _installed_version(dist) == version and all(os.path.isfile(os.path.join(dist, f)) for f in ORT_FILES):
        return dist
    npm = shutil.which("npm")
    if npm is None:
        raise MissingExtraError(f"The web export needs onnxruntime-web {version} from the npm registry once, and npm "
                                f"is not installed: install Node.js 18+ with npm (e.g. apt-get install npm) and run "
                                f"it again, or set EDGETL_ORT_WEB_DIST to a copy of its 'dist' folder")
    tmp = temp_name(folder)
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for name in ("package.json", "package-lock.json"):
        shutil.copy(os.path.join(APP_SOURCE, name), tmp)
    done = subprocess.run([npm, "ci", "--prefer-offline", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"], cwd=tmp,
                          capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise BundleError(f"npm could not fetch onnxruntime-web {version} ({last}); check the connection to the "
                          f"npm registry and run it again, or set EDGETL_ORT_WEB_DIST to a copy of its 'dist' folder")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return dist


def _icon(path: str, size: int) -> None:
    """The app's icon: a plain mark drawn here (no third-party artwork)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (22, 101, 52))
    draw = ImageDraw.Draw(image)
    r = size // 4
    draw.ellipse((size // 2 - r, size // 2 - r, size // 2 + r, size // 2 + r), outline=(240, 253, 244),
                 width=max(2, size // 24))
    draw.rectangle((size // 2 - r // 3, size // 2 - r // 3, size // 2 + r // 3, size // 2 + r // 3),
                   fill=(240, 253, 244))
    image.save(path, "PNG")


def bundle_json(files, run_dir: str, features_name: str, int8: bool) -> dict:
    spec = files.bundle.input_spec
    return {
        "format": WEB_FORMAT,
        "name": os.path.basename(os.path.abspath(run_dir)),
        "labels": list(files.bundle.labels),
        "input_spec": json.loads(spec.to_json()),
        "backbone": files.bundle.backbone,
        "precision": "int8" if int8 else "fp32",
        "features": f"bundle/{features_name}",
        "train_step": f"bundle/{TRAIN_STEP}",
        "head": f"bundle/{HEAD}",
        "feature_dim": int(files.head["weight"].shape[1]),
        "l2": files.l2,
        "features_sha256": file_sha256(files.features_path),
        "onnxruntime_web": ort_web_version(),
    }


def _manifest(name: str) -> dict:
    return {"name": f"edgetl: {name}", "short_name": name[:12] or "edgetl", "start_url": "./index.html",
            "scope": "./", "display": "standalone", "background_color": "#f8fafc", "theme_color": "#166534",
            "icons": [{"src": f"icon-{s}.png", "sizes": f"{s}x{s}", "type": "image/png"} for s in (192, 512)]}


def _service_worker(folder: str) -> None:
    """sw.js: the template with every file of the app listed, and a cache name
    that changes whenever any file does (a re-export replaces the old cache)."""
    files, digest = [], hashlib.sha256()
    for root, _dirs, names in sorted(os.walk(folder)):
        for name in sorted(names):
            rel = os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")
            files.append("./" + rel)
            digest.update(rel.encode() + file_sha256(os.path.join(root, name)).encode())
    files.append("./")
    with open(os.path.join(APP_SOURCE, "sw.js"), encoding="utf-8") as fh:
        template = fh.read()
    text = (template.replace("/*FILES*/[]", json.dumps(sorted(files), indent=1))
            .replace("/*VERSION*/\"dev\"", json.dumps(digest.hexdigest()[:16])))
    with open(os.path.join(folder, "sw.js"), "w", encoding="utf-8") as fh:
        fh.write(text)


def write_web_app(run_dir: str, int8: bool = True, cache_dir: str | None = None) -> dict:
    """Write RUN_DIR/web (replacing an older one only once the new one is
    complete); returns the record also stored in metrics.json's exports."""
    files = read_device_files(run_dir, int8=int8)
    dist = ort_web_dist(cache_dir)
    features_name = FEATURES_INT8 if int8 else FEATURES_FP32
    out = os.path.join(run_dir, WEB_DIR)
    with atomic_path(out) as tmp:
        os.makedirs(os.path.join(tmp, "bundle"))
        os.makedirs(os.path.join(tmp, "ort"))
        for name in APP_FILES:
            shutil.copy(os.path.join(APP_SOURCE, name), os.path.join(tmp, name))
        for name in ORT_FILES:
            shutil.copy(os.path.join(dist, name), os.path.join(tmp, "ort", name))
        for name in (features_name, TRAIN_STEP, HEAD):
            shutil.copy(os.path.join(run_dir, name), os.path.join(tmp, "bundle", name))
        info = bundle_json(files, run_dir, features_name, int8)
        with open(os.path.join(tmp, "bundle", "bundle.json"), "w", encoding="utf-8") as fh:
            json.dump(info, fh, indent=1)
        with open(os.path.join(tmp, "manifest.webmanifest"), "w", encoding="utf-8") as fh:
            json.dump(_manifest(info["name"]), fh, indent=1)
        for s in (192, 512):
            _icon(os.path.join(tmp, f"icon-{s}.png"), s)
        _service_worker(tmp)
    wasm = [os.path.join(out, "ort", n) for n in ORT_FILES if n.endswith(".wasm")]
    return {
        "folder": WEB_DIR,
        "precision": info["precision"],
        "page_mb": round(size_mb(out) - sum(size_mb(p) for p in wasm), 3),
        "wasm_mb": round(sum(size_mb(p) for p in wasm), 3),
        "onnxruntime_web": info["onnxruntime_web"],
        "serve": f"python -m http.server -b 127.0.0.1 -d {os.path.join(run_dir, WEB_DIR)} 8000",
    }


@register_format("web")
def export_web(run_dir: str, int8: bool = False, images=None, fp32: bool = False) -> dict:
    """The web app, with the int8 feature model unless ``fp32``."""
    record = write_web_app(run_dir, int8=not fp32)
    update_metrics(run_dir, "web", record)
    return record
