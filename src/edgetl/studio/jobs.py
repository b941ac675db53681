"""Runs and the one training job: ``.studio/runs.json`` (atomic writes), the
worker subprocess (``python -m edgetl.studio.worker``, the job as JSON on
stdin, never a shell), its events kept for replay, cancel by SIGTERM then
SIGKILL. Also the short worker jobs (plan, export) the API waits for."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

from .._files import write_json

FINAL_EVENTS = ("done", "error", "cancelled")
KILL_GRACE_S = 10.0
RUN_ID = re.compile(r"run-\d{3,6}")
WORKER = [sys.executable, "-m", "edgetl.studio.worker"]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class RunStore:
    """``.studio/runs.json``: ``{"runs": [{"id", "status", "error", "settings",
    "data_version", "started", "finished", "val_accuracy"}]}``."""

    def __init__(self, state_dir: str, runs_dir: str):
        self.path, self.runs_dir = os.path.join(state_dir, "runs.json"), runs_dir
        self.lock = threading.Lock()
        self.runs: list[dict] = []
        try:
            with open(self.path, encoding="utf-8") as fh:
                self.runs = [r for r in json.load(fh).get("runs", []) if RUN_ID.fullmatch(str(r.get("id")))]
        except (OSError, ValueError, AttributeError):
            self.runs = []
        changed = False
        for run in self.runs:  # a server that stopped during a run
            if run.get("status") == "running":
                run.update(status="failed", error="the studio stopped during this run", finished=_now())
                changed = True
        if changed:
            self._save()

    def _save(self) -> None:
        write_json(self.path, {"runs": self.runs})

    def next_id(self) -> str:
        used = [int(r["id"].split("-")[1]) for r in self.runs]
        try:
            used += [int(n.split("-")[1]) for n in os.listdir(self.runs_dir) if RUN_ID.fullmatch(n)]
        except OSError:
            pass
        return f"run-{max(used, default=0) + 1:03d}"

    def add(self, record: dict) -> None:
        with self.lock:
            self.runs.append(record)
            self._save()

    def update(self, run_id: str, **changes) -> None:
        with self.lock:
            for run in self.runs:
                if run["id"] == run_id:
                    run.update(changes)
            self._save()

    def get(self, run_id: str) -> dict | None:
        with self.lock:
            return next((dict(r) for r in self.runs if r["id"] == run_id), None)

    def all(self) -> list[dict]:
        with self.lock:
            return [dict(r) for r in self.runs]


class Job:
    """One worker process and its events (each with its index as SSE id)."""

    def __init__(self, run_id: str, proc: subprocess.Popen, stderr_path: str):
        self.run_id, self.proc, self.stderr_path = run_id, proc, stderr_path
        self.events: list[dict] = []
        self.status = "running"
        self.error: str | None = None
        self.cancel_requested = False
        self.finished = threading.Event()

    def summary(self) -> dict:
        return {"run": self.run_id, "status": self.status, "error": self.error, "events": len(self.events)}


class Runner:
    """One training at a time. ``on_end(job)`` runs in the reader thread
    after the worker exited and before the final event is published, so a
    client that saw the final event finds runs.json up to date."""

    def __init__(self, on_end):
        self.on_end = on_end
        self.lock = threading.Lock()
        self.job: Job | None = None

    def running(self) -> Job | None:
        job = self.job
        return job if job is not None and not job.finished.is_set() else None

    def start(self, run_id: str, payload: dict, stderr_path: str, cwd: str, env: dict | None = None) -> Job:
        with self.lock:
            if self.running():
                raise RuntimeError(self.job.run_id)
            os.makedirs(os.path.dirname(stderr_path), exist_ok=True)
            with open(stderr_path, "wb") as err:
                proc = subprocess.Popen(WORKER, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                        cwd=cwd, env=env, close_fds=True)
            job = Job(run_id, proc, stderr_path)
            self.job = job
        threading.Thread(target=self._feed, args=(job, payload), daemon=True).start()
        threading.Thread(target=self._read, args=(job,), name=f"studio-{run_id}", daemon=True).start()
        return job

    @staticmethod
    def _feed(job: Job, payload: dict) -> None:
        try:
            job.proc.stdin.write(json.dumps(payload).encode())
            job.proc.stdin.close()
        except OSError:
            pass  # the worker died at once: the reader reports it

    def _read(self, job: Job) -> None:
        final = None
        for raw in job.proc.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                event = json.loads(line)
                if not isinstance(event, dict) or "event" not in event:
                    raise ValueError
            except ValueError:
                event = {"event": "log", "level": "info", "message": line}
            if event["event"] in FINAL_EVENTS:
                final = event  # published after on_end
            else:
                job.events.append(event)
        code = job.proc.wait()
        final = self._final(job, code, final)
        job.status = {"done": "done", "cancelled": "cancelled"}.get(final["event"], "failed")
        job.error = final.get("message") if job.status == "failed" else None
        try:
            self.on_end(job, final)
        finally:
            job.events.append(final)
            job.finished.set()

    @staticmethod
    def _final(job: Job, code: int, final: dict | None) -> dict:
        if job.cancel_requested and not (final is not None and final["event"] == "done" and code == 0):
            # SIGTERM may land anywhere (even inside an import): asked to stop, it stopped
            return {"event": "cancelled"}
        if final is not None and not (final["event"] == "done" and code != 0):
            return final
        return {"event": "error", "message": _last_line(job.stderr_path)
                or f"the worker stopped with exit status {code} without saying why"}

    def cancel(self) -> Job | None:
        job = self.running()
        if job is None:
            return None
        job.cancel_requested = True
        try:
            job.proc.send_signal(signal.SIGTERM)
        except OSError:
            return job
        threading.Thread(target=_kill_later, args=(job,), daemon=True).start()
        return job


def _kill_later(job: Job) -> None:
    if not job.finished.wait(KILL_GRACE_S) and job.proc.poll() is None:
        try:
            job.proc.kill()
        except OSError:
            pass


def _last_line(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.path.getsize(path) - 4096))
            lines = [l.strip() for l in fh.read().decode("utf-8", "replace").splitlines() if l.strip()]
    except OSError:
        return None
    return f"the worker failed: {lines[-1]}" if lines else None


def run_worker(payload: dict, cwd: str, env: dict | None = None, timeout: float = 1800.0) -> dict:
    """A short job (plan, export): the worker's final event (or plan answer)."""
    try:
        done = subprocess.run(WORKER, input=json.dumps(payload).encode(), capture_output=True, cwd=cwd,
                              env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"event": "error", "message": f"the worker took over {timeout:.0f} s and was stopped"}
    answer = None
    for raw in done.stdout.decode("utf-8", "replace").splitlines():
        try:
            event = json.loads(raw)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") in ("plan", "done", "error"):
            answer = event
    if answer is None:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        answer = {"event": "error", "message": f"the worker failed: {lines[-1] if lines else done.returncode}"}
    return answer
