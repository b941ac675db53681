"""Files the page needs: the page itself (token in a meta tag), its static
files, the web runtime (``edgetl.js`` and onnxruntime-web) and a run's
preview bundle (``bundle.json`` made like the web export's)."""

from __future__ import annotations

import os
import re

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from ..errors import EdgetlError
from .project import Refused
from .security import page_html, resolve_inside

router = APIRouter()
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
WEB_SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "web")
WEBRT_FILES = ("edgetl.js", "preprocess.js", "rng.js")
_STATIC_NAME = re.compile(r"[A-Za-z0-9_-]+\.(js|css|png|svg|ico|woff2)")
MEDIA = {".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm", ".css": "text/css",
         ".png": "image/png", ".svg": "image/svg+xml", ".ico": "image/x-icon", ".json": "application/json",
         ".onnx": "application/octet-stream", ".safetensors": "application/octet-stream", ".woff2": "font/woff2"}
_FALLBACK = ('<!doctype html><html><head><meta charset="utf-8"><meta name="edgetl-token" content="__EDGETL_TOKEN__">'
             '<title>edgetl studio</title></head><body><p>edgetl studio: the page is not installed '
             '(src/edgetl/studio/static/index.html); the API answers under /api/.</p></body></html>')


def _file(path: str) -> FileResponse:
    return FileResponse(path, media_type=MEDIA.get(os.path.splitext(path)[1], "application/octet-stream"),
                        headers={"Cache-Control": "no-cache"})


@router.get("/")
async def page(request: Request):
    try:
        with open(os.path.join(STATIC_DIR, "index.html"), encoding="utf-8") as fh:
            template = fh.read()
    except OSError:
        template = _FALLBACK
    return HTMLResponse(page_html(template, request.app.state.studio.settings.token),
                        headers={"Cache-Control": "no-store"})


@router.get("/static/{name}")
async def static(name: str):
    if not _STATIC_NAME.fullmatch(name) or name.startswith("index."):
        raise Refused(404, f"no static file {name!r}")
    path = resolve_inside(STATIC_DIR, [name])
    if not os.path.isfile(path):
        raise Refused(404, f"no static file {name!r}")
    return _file(path)


@router.get("/webrt/{name}")
async def webrt(name: str):
    if name not in WEBRT_FILES:
        raise Refused(404, f"no web runtime file {name!r}; there are {', '.join(WEBRT_FILES)} and ort/*")
    return _file(os.path.join(WEB_SOURCE, name))


@router.get("/webrt/ort/{name}")
async def webrt_ort(request: Request, name: str):
    from ..export.web import ORT_FILES, ort_web_dist

    if name not in ORT_FILES:
        raise Refused(404, f"no onnxruntime-web file {name!r}; there are {', '.join(ORT_FILES)}")
    try:
        dist = await run_in_threadpool(ort_web_dist, request.app.state.studio.cache_dir)
    except EdgetlError as exc:
        raise Refused(503, str(exc).splitlines()[0]) from None
    return _file(os.path.join(dist, name))


@router.get("/preview/{run}/{precision}/bundle/{name}")
async def preview(request: Request, run: str, precision: str, name: str):
    from ..export.web import bundle_json
    from ..runtime.bundle import FEATURES_FP32, FEATURES_INT8, HEAD, TRAIN_STEP, read_device_files

    studio = request.app.state.studio
    if precision not in ("int8", "fp32"):
        raise Refused(404, f"precision {precision!r}: use int8 or fp32")
    run_dir = run_folder(studio, run)
    int8 = precision == "int8"
    features = FEATURES_INT8 if int8 else FEATURES_FP32
    if name == "bundle.json":
        def make():
            return bundle_json(read_device_files(run_dir, int8=int8), run_dir, features, int8)
        try:
            return JSONResponse(await run_in_threadpool(make), headers={"Cache-Control": "no-cache"})
        except EdgetlError as exc:
            raise Refused(409, str(exc).splitlines()[0]) from None
    if name not in (features, TRAIN_STEP, HEAD):
        raise Refused(404, f"no preview file {name!r}: bundle.json, {features}, {TRAIN_STEP}, {HEAD}")
    path = resolve_inside(run_dir, [name])
    if not os.path.isfile(path):
        raise Refused(404, f"{run} has no {name}")
    return _file(path)


def run_folder(studio, run: str) -> str:
    """The folder of a finished run named in runs.json (no symlink, inside runs/)."""
    from .jobs import RUN_ID

    record = studio.runs.get(run) if RUN_ID.fullmatch(run or "") else None
    if record is None:
        raise Refused(404, f"no run {run!r}; GET /api/runs lists them")
    path = resolve_inside(os.path.join(studio.project.dir, "runs"), [run])
    if record.get("status") != "done" or not os.path.isdir(path):
        raise Refused(404, f"{run} has no results ({record.get('status')}): "
                           f"{record.get('error') or 'wait for it to finish'}")
    return path
