"""The data endpoints: project, classes, images (list, thumbnail, upload,
move), duplicates. Disk work runs in the threadpool, never on the loop."""

from __future__ import annotations

import hashlib
import os

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..data.image import decode_image
from ..errors import DataError
from .project import Refused
from .security import MAX_FILE_BYTES, MAX_FILES, MAX_REQUEST_BYTES, PAGE, BadName, BodyTooLarge, upload_name

router = APIRouter()
IMAGE_MEDIA = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".bmp": "image/bmp",
               ".gif": "image/gif", ".webp": "image/webp"}


def query(request: Request, name: str, default=None, required: bool = True) -> str:
    value = request.query_params.get(name, default)
    if value is None and required:
        raise Refused(400, f"the query parameter {name!r} is missing")
    return value


def integer(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    try:
        value = default if text is None else int(text)
    except ValueError:
        raise Refused(400, f"{name}={text!r} is not a whole number") from None
    if not low <= value <= high:
        raise Refused(400, f"{name} must be between {low} and {high}, got {value}")
    return value


async def body_json(request: Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        raise Refused(400, "the body is not JSON; send a JSON object") from None
    if not isinstance(body, dict):
        raise Refused(400, "the body must be a JSON object")
    return body


@router.get("/api/project")
async def project_info(request: Request):
    studio = request.app.state.studio
    p = studio.project
    classes = await run_in_threadpool(p.counts)
    job = studio.runner.running()
    return {"name": os.path.basename(p.dir), "source": p.source, "read_only": p.read_only,
            "data_version": p.data_version, "total": sum(c["count"] for c in classes), "classes": classes,
            "runs": [studio.summary(r) for r in studio.runs.all()],
            "training": job.summary() if job else None,
            "limits": {"max_file_mb": MAX_FILE_BYTES // (1024 * 1024), "max_files": MAX_FILES, "page": PAGE,
                       "max_request_mb": MAX_REQUEST_BYTES // (1024 * 1024)}}


@router.post("/api/classes")
async def add_class(request: Request):
    body = await body_json(request)
    name = await run_in_threadpool(request.app.state.studio.project.add_class, body.get("name"))
    return JSONResponse({"name": name}, status_code=201)


@router.patch("/api/classes/{name}")
async def rename_class(request: Request, name: str):
    body = await body_json(request)
    new = await run_in_threadpool(request.app.state.studio.project.rename_class, name, body.get("name"))
    return {"name": new}


@router.delete("/api/classes/{name}")
async def delete_class(request: Request, name: str):
    return {"deleted": await run_in_threadpool(request.app.state.studio.project.delete_class, name)}


def _page(project, cls: str, offset: int, limit: int) -> dict:
    entries = project.images(cls)
    page = entries[offset:offset + limit]
    index = project.known_index()
    images = []
    for entry in page:
        digest = project.hash_of(cls, entry)
        same = [n for n in index.get(digest, ()) if n.split("/", 1)[0] != cls] if digest else []
        images.append({"name": entry.name, "bytes": entry.size, "duplicate_of": sorted(set(project.existing(same)))})
    project.hashes.save()
    return {"class": cls, "total": len(entries), "offset": offset, "images": images}


@router.get("/api/images")
async def list_images(request: Request):
    cls = query(request, "class")
    offset = integer(request, "offset", 0, 0, 10**9)
    limit = integer(request, "limit", 100, 1, PAGE)
    return await run_in_threadpool(_page, request.app.state.studio.project, cls, offset, limit)


@router.get("/api/image")
async def image(request: Request):
    project = request.app.state.studio.project
    cls, name = query(request, "class"), query(request, "name")
    size = query(request, "size", "thumb")
    if size == "thumb":
        data = await run_in_threadpool(project.thumbnail, cls, name)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})
    if size != "full":
        raise Refused(400, f"size={size!r}: use thumb or full")
    path, _ = await run_in_threadpool(project.image_path, cls, name)
    return FileResponse(path, media_type=IMAGE_MEDIA.get(os.path.splitext(path)[1].lower()),
                        headers={"Cache-Control": "private, no-cache"})


async def _read_form(request: Request):
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_REQUEST_BYTES):
        raise Refused(413, f"the upload is over {MAX_REQUEST_BYTES // 2**20} MB; send the files in smaller groups")
    try:
        return await request.form(max_files=MAX_FILES, max_fields=100, max_part_size=1024 * 1024)
    except BodyTooLarge:
        raise Refused(413, f"the upload is over {MAX_REQUEST_BYTES // 2**20} MB; send the files in smaller "
                           f"groups") from None
    except StarletteHTTPException as exc:
        if "Too many files" in str(exc.detail):
            raise Refused(413, f"more than {MAX_FILES} files in one upload; send them in smaller groups") from None
        raise Refused(400, f"the upload is not readable multipart form data ({exc.detail})") from None


def _accept(project, cls: str, files: list) -> dict:
    """Check each file on its own (name, size, decode), keep the good ones."""
    project.class_dir(cls)
    index = project.all_hashes()
    added, refused, duplicates = [], [], []
    for upload in files:
        shown = upload.filename or "(no name)"
        try:
            name = upload_name(upload.filename)
            if (upload.size or 0) > MAX_FILE_BYTES:
                raise BadName(f"over {MAX_FILE_BYTES // 2**20} MB; downscale it")
            upload.file.seek(0)
            data = upload.file.read()
            decode_image(data, name, "native")
        except (BadName, DataError) as exc:
            refused.append({"name": shown, "reason": str(exc).splitlines()[0]})
            continue
        digest = hashlib.sha256(data).hexdigest()
        final = project.store(cls, name, data)
        added.append({"name": final})
        same = [n for n in index.get(digest, ()) if n.split("/", 1)[0] != cls]
        if same:
            duplicates.append({"name": final, "same_as": sorted(same)[0]})
        index.setdefault(digest, []).append(f"{cls}/{final}")
    if added:
        project.bump()
    return {"added": added, "refused": refused, "duplicates": duplicates}


@router.post("/api/images")
async def upload(request: Request):
    project = request.app.state.studio.project
    cls = query(request, "class")
    project.check_writable("add images")
    await run_in_threadpool(project.class_dir, cls)
    form = await _read_form(request)
    try:
        files = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
        if not files:
            raise Refused(400, "no files: send them in the multipart field 'files'")
        return await run_in_threadpool(_accept, project, cls, files)
    finally:
        await form.close()


@router.post("/api/images/move")
async def move(request: Request):
    body = await body_json(request)
    project = request.app.state.studio.project
    new = await run_in_threadpool(project.move, body.get("class"), body.get("name"), body.get("to"))
    return {"class": body.get("to"), "name": new}


@router.get("/api/duplicates")
async def duplicates(request: Request):
    return {"groups": await run_in_threadpool(request.app.state.studio.project.duplicate_groups)}
