"""Training and results: options, plan, train (one at a time), cancel, the
progress events (SSE), runs, their metrics, confusion cells, worst images,
files, bundle.zip and exports (in the worker)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
import zipfile

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from .._files import atomic_path, write_json
from ..errors import DataError
from .api_data import body_json, integer, query
from .api_files import run_folder
from .jobs import FINAL_EVENTS, run_worker
from .project import Refused

router = APIRouter()
BUDGETS = {"phone": {"max_latency_ms": 50.0, "max_model_mb": 20.0},
           "watch": {"max_macs": "60M", "max_model_mb": 4.0},
           "none": {}}
STRATEGIES = ["head", "bias", "last-2", "full", "auto"]
NOT_FROM_THE_PAGE = ("data_dir", "out", "overwrite", "resume", "weights")
EXPORT_FORMATS = ("tflite", "coreml", "web")
BUNDLE_FILES = ("model.onnx", "model.int8.onnx", "labels.txt", "features.onnx", "features.int8.onnx",
                "train_step.onnx", "head.safetensors", "metrics.json", "config.toml", "README.md")
RUN_FILES = re.compile(r"report\.html|search\.png|metrics\.json|plots/[A-Za-z0-9_-][A-Za-z0-9_.-]*\.png")
HEARTBEAT_S = 15.0
_ZIP_LOCK = threading.Lock()


@router.get("/api/options")
async def options():
    from ..zoo import list_backbones

    return {"budgets": BUDGETS, "backbones": list_backbones(), "strategies": STRATEGIES}


def train_settings(body: dict) -> dict:
    """The page's settings as TrainConfig fields: the budget preset, then the
    numbers given; checked by TrainConfig here (400), not in the worker."""
    from ..training.config import TrainConfig

    budget = body.get("budget") or "none"
    if budget not in (*BUDGETS, "custom"):
        raise Refused(400, f"budget {budget!r}: use one of {', '.join(BUDGETS)} or custom")
    values = dict(BUDGETS.get(budget, {}))
    values.update({k: v for k, v in body.items() if k != "budget" and v is not None and v != ""})
    bad = [k for k in values if k in NOT_FROM_THE_PAGE]
    if bad:
        raise Refused(400, f"the setting {bad[0]!r} cannot be set from the studio")
    from ..zoo import list_backbones

    if "backbone" in values and values["backbone"] not in list_backbones():
        raise Refused(400, f"unknown backbone {values['backbone']!r}; GET /api/options lists them")
    try:
        TrainConfig.from_mapping(values, source="the settings")
    except (DataError, TypeError, ValueError) as exc:
        raise Refused(400, str(exc).splitlines()[0]) from None
    return values


@router.post("/api/plan")
async def plan(request: Request):
    studio = request.app.state.studio
    body = await body_json(request)
    strategies = body.pop("strategies", None)
    settings = train_settings(body)
    if strategies is not None and not (isinstance(strategies, list) and all(isinstance(s, str) for s in strategies)):
        raise Refused(400, "strategies must be a list of names")
    job = {"command": "plan", "data_dir": studio.project.data_root, "cache_dir": studio.cache_dir,
           "settings": {"backbone": settings.get("backbone"), "image_size": settings.get("image_size"),
                        "batch_size": settings.get("batch_size"), "strategies": strategies,
                        "max_memory_mb": settings.get("max_memory_mb")}}
    answer = await run_in_threadpool(run_worker, job, studio.project.dir, studio.worker_env(), 600.0)
    if answer.get("event") != "plan":
        return JSONResponse({"error": answer.get("message", "the plan failed")}, status_code=422)
    return {k: v for k, v in answer.items() if k != "event"}


@router.post("/api/train")
async def train(request: Request):
    studio = request.app.state.studio
    settings = train_settings(await body_json(request))
    with studio.start_lock:
        running = studio.runner.running()
        if running is not None:
            raise Refused(409, f"a training is already running ({running.run_id}): wait for it or cancel it")
        run_id = studio.runs.next_id()
        p = studio.project
        out = os.path.join(p.dir, "runs", run_id)
        studio.runs.add({"id": run_id, "status": "running", "error": None, "settings": settings,
                         "data_version": p.data_version, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                         "finished": None, "val_accuracy": None})
        job = {"command": "train", "data_dir": p.data_root, "out": out, "cache_dir": studio.cache_dir,
               "settings": settings}
        studio.runner.start(run_id, job, os.path.join(p.state, "logs", f"{run_id}.stderr.txt"), p.dir,
                            studio.worker_env())
    return JSONResponse({"run": run_id}, status_code=202)


@router.post("/api/train/cancel")
async def cancel(request: Request):
    job = request.app.state.studio.runner.cancel()
    if job is None:
        raise Refused(409, "no training is running")
    return {"cancelled": job.run_id}


def _start_index(request: Request) -> int:
    text = request.headers.get("last-event-id") or request.query_params.get("after") or "-1"
    try:
        return max(int(text), -1) + 1
    except ValueError:
        raise Refused(400, f"after={text!r} is not a whole number") from None


async def _stream(request: Request, job, index: int):
    last = time.monotonic()
    while True:
        events = job.events
        while index < len(events):
            event = events[index]
            yield f"id: {index}\ndata: {json.dumps(event)}\n\n"
            index += 1
            last = time.monotonic()
            if event.get("event") in FINAL_EVENTS:
                return
        if job.finished.is_set() and index >= len(job.events):
            return
        if time.monotonic() - last > HEARTBEAT_S:
            yield ": heartbeat\n\n"
            last = time.monotonic()
        if await request.is_disconnected():
            return
        await asyncio.sleep(0.2)


@router.get("/api/train/events")
async def events(request: Request):
    job = request.app.state.studio.runner.job
    if job is None:
        raise Refused(404, "no training has run since the studio started")
    return StreamingResponse(_stream(request, job, _start_index(request)), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/api/runs")
async def runs(request: Request):
    studio = request.app.state.studio
    return [studio.summary(r) for r in studio.runs.all()]


def _metrics(run_dir: str) -> dict:
    try:
        with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        raise Refused(404, f"{os.path.basename(run_dir)} has no readable metrics.json") from None


@router.get("/api/runs/{run}")
async def run_detail(request: Request, run: str):
    studio = request.app.state.studio
    record = studio.runs.get(run)
    run_dir = run_folder(studio, run)
    metrics = await run_in_threadpool(_metrics, run_dir)
    metrics.pop("val_predictions", None)
    return {**studio.summary(record), "metrics": metrics}


def _where(project, path: str, label: str) -> tuple[str, str]:
    """A val_predictions path as (class, name) in the data root (or its label and file name)."""
    root = os.path.realpath(project.data_root)
    real = os.path.realpath(path)
    if real.startswith(root + os.sep):
        cls, _, name = os.path.relpath(real, root).replace(os.sep, "/").partition("/")
        return cls, name
    return label, os.path.basename(path)


def _predictions(studio, run: str) -> list[dict]:
    metrics = _metrics(run_folder(studio, run))
    out = []
    for p in metrics.get("val_predictions") or []:
        cls, name = _where(studio.project, p["path"], p["label"])
        out.append({"class": cls, "name": name, "label": p["label"], "predicted": p["predicted"],
                    "probability": p.get("probability")})
    return out


@router.get("/api/runs/{run}/cell")
async def cell(request: Request, run: str):
    true, pred = query(request, "true"), query(request, "pred")
    images = await run_in_threadpool(_predictions, request.app.state.studio, run)
    return {"images": [p for p in images if p["label"] == true and p["predicted"] == pred]}


@router.get("/api/runs/{run}/worst")
async def worst(request: Request, run: str):
    limit = integer(request, "limit", 24, 1, 200)
    images = await run_in_threadpool(_predictions, request.app.state.studio, run)
    wrong = sorted((p for p in images if p["label"] != p["predicted"]), key=lambda p: -(p["probability"] or 0))
    right = sorted((p for p in images if p["label"] == p["predicted"]), key=lambda p: p["probability"] or 0)
    return {"images": (wrong + right)[:limit]}


@router.get("/api/runs/{run}/file")
async def run_file(request: Request, run: str):
    from .security import resolve_inside

    name = query(request, "name")
    if not RUN_FILES.fullmatch(name):
        raise Refused(400, f"name={name!r}: use report.html, search.png, metrics.json or plots/<name>.png")
    path = resolve_inside(run_folder(request.app.state.studio, run), name.split("/"))
    if not os.path.isfile(path):
        raise Refused(404, f"{run} has no {name}")
    media = {".html": "text/html; charset=utf-8", ".png": "image/png", ".json": "application/json"}
    return FileResponse(path, media_type=media[os.path.splitext(name)[1]])


def _zip(studio, key: str, run_dir: str, names: list[str]) -> str:
    """.studio/zips/<key>.zip of run_dir/<names> (folders recursively), made again when older than them."""
    with _ZIP_LOCK:  # one writer: the temporary name is per process
        return _make_zip(studio, key, run_dir, names)


def _make_zip(studio, key: str, run_dir: str, names: list[str]) -> str:
    out = os.path.join(studio.project.state, "zips", f"{key}.zip")
    paths = [os.path.join(run_dir, n) for n in names if os.path.exists(os.path.join(run_dir, n))]
    newest = max((_newest(p) for p in paths), default=0)
    if os.path.isfile(out) and os.path.getmtime(out) >= newest:
        return out
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for path in paths:
            if os.path.isdir(path):
                for root, dirs, files in os.walk(path):
                    dirs.sort()
                    for f in sorted(files):
                        full = os.path.join(root, f)
                        zf.write(full, os.path.relpath(full, run_dir))
            else:
                zf.write(path, os.path.basename(path))
    return out


def _newest(path: str) -> float:
    if not os.path.isdir(path):
        return os.path.getmtime(path)
    return max([os.path.getmtime(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs] or [0])


@router.get("/api/runs/{run}/bundle.zip")
async def bundle_zip(request: Request, run: str):
    studio = request.app.state.studio
    run_dir = run_folder(studio, run)
    path = await run_in_threadpool(_zip, studio, f"{run}.bundle", run_dir, list(BUNDLE_FILES))
    return FileResponse(path, media_type="application/zip", filename=f"{run}-bundle.zip")


def _export_record_path(studio, run: str, fmt: str) -> str:
    return os.path.join(studio.project.state, "exports", f"{run}.{fmt}.json")


@router.post("/api/runs/{run}/export/{fmt}")
async def export(request: Request, run: str, fmt: str):
    studio = request.app.state.studio
    if fmt not in EXPORT_FORMATS:
        raise Refused(404, f"export format {fmt!r}: use one of {', '.join(EXPORT_FORMATS)}")
    run_dir = run_folder(studio, run)
    job = {"command": "export", "run_dir": run_dir, "format": fmt, "options": {}}
    answer = await run_in_threadpool(run_worker, job, studio.project.dir, studio.worker_env())
    if answer.get("event") != "done":
        message = answer.get("message", "the export failed")
        return JSONResponse({"error": message}, status_code=409 if "pip install" in message else 500)
    os.makedirs(os.path.dirname(_export_record_path(studio, run, fmt)), exist_ok=True)
    write_json(_export_record_path(studio, run, fmt), answer.get("record") or {})
    return {"download": f"/api/runs/{run}/export/{fmt}.zip"}


@router.get("/api/runs/{run}/export/{name}")
async def export_zip(request: Request, run: str, name: str):
    studio = request.app.state.studio
    fmt = name.removesuffix(".zip")
    if not name.endswith(".zip") or fmt not in EXPORT_FORMATS:
        raise Refused(404, f"no export {name!r}: use tflite.zip, coreml.zip or web.zip")
    run_dir = run_folder(studio, run)
    try:
        with open(_export_record_path(studio, run, fmt), encoding="utf-8") as fh:
            record = json.load(fh)
    except (OSError, ValueError):
        raise Refused(404, f"{run} has no {fmt} export yet: POST /api/runs/{run}/export/{fmt} first") from None
    names = [record[k] for k in ("folder", "file", "file_int8") if isinstance(record.get(k), str)]
    names += [f"{n}.json" for n in names]
    names = [n for n in names if "/" not in n and "\\" not in n and not n.startswith(".")]
    path = await run_in_threadpool(_zip, studio, f"{run}.{fmt}", run_dir, names)
    return FileResponse(path, media_type="application/zip", filename=f"{run}-{fmt}.zip")
