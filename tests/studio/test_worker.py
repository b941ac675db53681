"""The studio's worker process (python -m edgetl.studio.worker): a job on
stdin, JSON lines on stdout, and the three ways a job ends: done, failed
with one line, cancelled by SIGTERM with the extracted features kept."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import make_shapes_folder


def run_job(job: dict, timeout: float = 240) -> tuple[int, list[dict], str]:
    proc = subprocess.run([sys.executable, "-m", "edgetl.studio.worker"], input=json.dumps(job),
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


def test_a_train_job_streams_progress_and_ends_with_the_runs_accuracy(tmp_path):
    data = make_shapes_folder(tmp_path / "shapes", num_per_class=10, seed=811)
    out = tmp_path / "run-001"
    code, lines, err = run_job({"command": "train", "data_dir": data, "out": str(out),
                                "settings": {"image_size": 32}})
    assert code == 0, err
    kinds = [e["event"] for e in lines]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert {"log", "extract", "candidate", "epoch"} <= set(kinds)
    metrics = json.loads((out / "metrics.json").read_text())
    assert lines[-1]["val_accuracy"] == metrics["val_accuracy"] and lines[-1]["run"] == "run-001"
    assert lines[0]["settings"]["image_size"] == 32


def test_a_failing_job_says_why_in_one_line_and_writes_nothing(tmp_path):
    (tmp_path / "data" / "only").mkdir(parents=True)
    make_shapes_folder(tmp_path / "shapes", num_per_class=4)
    for f in sorted((tmp_path / "shapes").rglob("*.png"))[:4]:
        os.replace(f, tmp_path / "data" / "only" / f.name)
    code, lines, err = run_job({"command": "train", "data_dir": str(tmp_path / "data"),
                                "out": str(tmp_path / "run")})
    assert code == 1
    assert lines[-1]["event"] == "error" and "at least 2" in lines[-1]["message"]
    assert "\n" not in lines[-1]["message"] and "Traceback" not in err
    assert not (tmp_path / "run").exists()
    code, lines, _ = run_job({"command": "train", "data_dir": str(tmp_path / "data")})
    assert code == 1 and lines == [{"event": "error", "message": "the train job lacks out"}]
    code, lines, _ = run_job({"command": "export", "run_dir": str(tmp_path), "format": "png"})
    assert code == 1 and "Unknown export format 'png'" in lines[-1]["message"]


def test_sigterm_cancels_keeps_the_cache_and_the_next_run_resumes(tmp_path):
    data = make_shapes_folder(tmp_path / "shapes", num_per_class=150, size=64, seed=97)
    job = json.dumps({"command": "train", "data_dir": data, "out": str(tmp_path / "run"),
                      "settings": {"image_size": 224, "search": "off"}})

    def start():
        p = subprocess.Popen([sys.executable, "-m", "edgetl.studio.worker"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
        p.stdin.write(job)
        p.stdin.close()
        return p

    def first_extract_with_progress(p):
        deadline = time.monotonic() + 180
        for line in p.stdout:
            e = json.loads(line)
            if e["event"] == "extract" and (e["done"] > 0 or e["cached"] > 0):
                return e
            assert time.monotonic() < deadline
        pytest.fail("the worker ended before extracting")

    p = start()
    first = first_extract_with_progress(p)
    assert first["cached"] == 0
    p.send_signal(signal.SIGTERM)
    rest = [json.loads(line) for line in p.stdout]
    assert p.wait(60) == 130 and rest[-1] == {"event": "cancelled"}
    assert not (tmp_path / "run").exists()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".run")]  # no temporary run folder left
    p = start()
    resumed = first_extract_with_progress(p)
    p.send_signal(signal.SIGTERM)
    p.stdout.read()
    p.wait(60)
    assert resumed["cached"] >= first["done"] > 0


def test_without_the_studio_extra_one_line_says_what_to_install(tmp_path):
    code = ("import sys; sys.modules['fastapi'] = None\n"  # as if the extra were not installed
            "from edgetl.cli import main\n"
            f"sys.exit(main(['studio', {str(tmp_path / 'project')!r}, '--no-browser']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("edgetl: error: edgetl studio needs the 'studio' extra (fastapi is not "
                                   "installed): pip install \"edgetl[studio]\"")
    assert not (tmp_path / "project").exists()
