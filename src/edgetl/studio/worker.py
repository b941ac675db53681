"""``python -m edgetl.studio.worker``: one job of the studio, in its own process.

The studio's server never trains, plans or converts in its own process: a
failed or killed job cannot take it down, its memory stays that of a web
server (no torch), and cancelling is a signal. The job arrives as one JSON
object on stdin (never through a shell) and reports on stdout, one JSON
object per line (``edgetl.events`` plus ``start``/``log``/``done``/
``error``/``cancelled``; docs/studio-api.md lists them). Exit status: 0 done,
1 failed (an ``error`` line says why, in one line), 130 cancelled (SIGTERM;
whatever the feature cache holds is kept, so the next run resumes).

    {"command": "train", "data_dir": D, "out": RUN_DIR, "cache_dir": null, "settings": {...}}
    {"command": "plan", "data_dir": D, "settings": {"backbone", "image_size", "batch_size",
                                                  "strategies", "max_memory_mb"}}
    {"command": "export", "run_dir": RUN_DIR, "format": "web", "options": {}}
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import threading
import traceback

from ..errors import EdgetlError
from ..events import listening

EXIT_FAILED, EXIT_CANCELLED = 1, 130


class Cancelled(BaseException):
    """SIGTERM, raised where the job is: every cleanup on the way up runs
    (temporary run folders removed, claims released), like Ctrl-C."""


class _Out:
    """JSON lines on stdout, whole lines only (events can come from threads)."""

    def __init__(self, stream):
        self.stream, self.lock = stream, threading.Lock()

    def __call__(self, record: dict) -> None:
        line = json.dumps(_plain(record), allow_nan=False)
        with self.lock:
            self.stream.write(line + "\n")
            self.stream.flush()


def _plain(value):
    """JSON-safe: NaN and infinities become null, numpy scalars numbers."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class _LogEvents(logging.Handler):
    def __init__(self, out: _Out):
        super().__init__(logging.INFO)
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.out({"event": "log", "level": record.levelname.lower(), "message": record.getMessage()})
        except Exception:
            self.handleError(record)


def run_train(job: dict, out: _Out) -> None:
    from ..training import train
    from ..training.config import TrainConfig

    config = TrainConfig.from_mapping({**job.get("settings", {}), "data_dir": job["data_dir"], "out": job["out"]},
                                      source="the studio's settings")
    out({"event": "start", "run": os.path.basename(job["out"]), "settings": config.to_dict()})
    result = train(config, cache_dir=job.get("cache_dir"), progress=False)
    m = result.metrics
    out({"event": "done", "run": os.path.basename(result.run_dir), "val_accuracy": m["val_accuracy"],
         "seconds": m.get("timings_s", {}).get("total_s")})


def run_plan(job: dict, out: _Out) -> None:
    from ..training.planning import plan_strategies

    s = job.get("settings", {})
    report = plan_strategies(job["data_dir"], s.get("backbone") or "efficientnet_lite0", s.get("image_size"),
                             int(s.get("batch_size") or 32), tuple(s["strategies"]) if s.get("strategies") else None,
                             s.get("max_memory_mb"))
    out({"event": "plan", **report})


def run_export(job: dict, out: _Out) -> None:
    from ..export import export_model

    record = export_model(job["run_dir"], job["format"], **job.get("options", {}))
    out({"event": "done", "record": record})


COMMANDS = {"train": run_train, "plan": run_plan, "export": run_export}


_terminated = threading.Event()


def _on_sigterm(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup short
    _terminated.set()
    raise Cancelled()


def main(stdin=None, stdout=None) -> int:
    out = _Out(stdout or sys.stdout)
    handler = _LogEvents(out)
    root = logging.getLogger("edgetl")
    root.handlers[:], root.propagate = [handler], False
    root.setLevel(logging.INFO)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        job = _read_job(stdin or sys.stdin)
        with listening(out):
            COMMANDS[job["command"]](job, out)
        return 0
    except Cancelled:
        out({"event": "cancelled"})
        return EXIT_CANCELLED
    except Exception as exc:
        if _terminated.is_set():  # Cancelled raised inside an import or a library comes out as its error
            out({"event": "cancelled"})
            return EXIT_CANCELLED
        if isinstance(exc, EdgetlError):
            out({"event": "error", "message": _one_line(exc)})
            return EXIT_FAILED
        traceback.print_exc(file=sys.stderr)
        out({"event": "error", "message": f"internal error: {type(exc).__name__}: {_one_line(exc)}"})
        return EXIT_FAILED


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read_job(stream) -> dict:
    try:
        job = json.loads(stream.read())
    except ValueError as exc:
        raise EdgetlError(f"the job is not JSON ({exc})") from None
    if not isinstance(job, dict) or job.get("command") not in COMMANDS:
        raise EdgetlError(f"not a studio job: give {{\"command\": one of {', '.join(COMMANDS)}, ...}}")
    need = {"train": ("data_dir", "out"), "plan": ("data_dir",), "export": ("run_dir", "format")}[job["command"]]
    missing = [k for k in need if not isinstance(job.get(k), str)]
    if missing:
        raise EdgetlError(f"the {job['command']} job lacks {', '.join(missing)}")
    return job

if __name__ == "__main__":
    sys.exit(main())
