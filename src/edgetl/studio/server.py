"""``edgetl studio``'s server: ``create_app`` (the FastAPI app) and ``run``
(bind, print the URL with the token, serve until Ctrl-C).

The routes live in ``api_data`` (project, classes, images), ``api_runs``
(options, plan, training, runs, exports) and ``api_files`` (the page, its
static files, the web runtime, the preview bundle). Nothing here imports
torch: training, planning and exports run in ``python -m
edgetl.studio.worker`` (``jobs``)."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .jobs import RunStore, Runner
from .project import Project, Refused
from .security import BadName, Guard, new_token


@dataclass
class Settings:
    token: str
    host: str
    port: int


class Studio:
    """What every route reaches through ``request.app.state.studio``."""

    def __init__(self, project_dir: str, source: str | None, settings: Settings, cache_dir: str | None):
        self.project = Project(project_dir, source)
        self.settings = settings
        self.cache_dir = os.path.abspath(cache_dir) if cache_dir else None
        self.runs = RunStore(self.project.state, os.path.join(self.project.dir, "runs"))
        self.runner = Runner(self._job_ended)
        self.start_lock = threading.Lock()

    def worker_env(self) -> dict:
        env = dict(os.environ)
        if self.cache_dir:
            env["EDGETL_CACHE_DIR"] = self.cache_dir
        return env

    def _job_ended(self, job, final: dict) -> None:
        accuracy = final.get("val_accuracy") if final["event"] == "done" else None
        self.runs.update(job.run_id, status=job.status, error=job.error, val_accuracy=accuracy,
                         finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def summary(self, run: dict) -> dict:
        return {"id": run["id"], "status": run.get("status"),
                "stale": int(run.get("data_version", 0)) < self.project.data_version,
                "error": run.get("error"), "val_accuracy": run.get("val_accuracy"),
                "settings": run.get("settings", {}), "started": run.get("started"),
                "finished": run.get("finished")}


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused):
        return error(exc.status, exc.message)

    @app.exception_handler(BadName)
    async def bad_name(request: Request, exc: BadName):
        return error(400, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else "bad request"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        if exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return error(exc.status_code, message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return error(400, f"bad request: {where}: {first.get('msg', 'invalid')}")


def create_app(project_dir: str, source: str | None = None, token: str | None = None, cache_dir: str | None = None,
               host: str = "127.0.0.1", port: int = 0) -> FastAPI:
    """The studio app for ``project_dir`` (created if needed; ``source``: a
    read-only ``--from`` data folder). ``port``: the bound port, which the
    Host check needs (``app.state.studio.settings.port`` may be set later)."""
    from . import api_data, api_files, api_runs

    settings = Settings(token or new_token(), host, int(port))
    studio = Studio(project_dir, source, settings, cache_dir)
    app = FastAPI(title="edgetl studio", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.studio = studio
    _handlers(app)
    for module in (api_files, api_data, api_runs):
        app.include_router(module.router)
    app.add_middleware(Guard, settings=settings)
    threading.Thread(target=_hash_quietly, args=(studio.project,), name="studio-hashes", daemon=True).start()
    return app


def _hash_quietly(project: Project) -> None:
    try:
        project.all_hashes()
    except Exception:  # a folder changing under the scan: the next request hashes again
        pass


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def run(project_dir: str, source: str | None = None, host: str = "127.0.0.1", port: int = 0,
        open_browser: bool = True, token: str | None = None, cache_dir: str | None = None) -> None:
    """Serve ``project_dir`` until Ctrl-C (then return normally; a training
    still running is cancelled); prints ``edgetl studio: URL``."""
    import uvicorn

    sock = _bind(host, port)
    port = sock.getsockname()[1]
    token = token or new_token()
    app = create_app(project_dir, source, token=token, cache_dir=cache_dir, host=host, port=port)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/?token={token}"
    print(f"edgetl studio: {url}", flush=True)
    if not is_loopback(host):
        print(f"edgetl studio: warning: listening on {host}, not only this computer: anyone who can reach it "
              f"and has the token can change the project", file=sys.stderr, flush=True)
    if open_browser:
        import webbrowser

        threading.Timer(0.5, webbrowser.open, args=(url,)).start()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    try:
        server.run(sockets=[sock])  # uvicorn re-raises the Ctrl-C it handled once it has shut down
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
        job = app.state.studio.runner.cancel()
        if job is not None:
            job.finished.wait(15)
