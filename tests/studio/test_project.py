"""The studio's parts below the HTTP layer: the project folder (listing
cache, incremental hashes, runs.json), the name rules, the job runner with
the real worker, and ``run()`` as the CLI calls it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest


def test_listing_is_cached_by_folder_mtime_and_sees_sub_folders(tmp_path, tools):
    from edgetl.studio.project import Project

    tools.write_digits(tmp_path / "p" / "data", classes=("0", "1"), per_class=3)
    p = Project(str(tmp_path / "p"))
    first = p.images("0")
    assert [e.name for e in first] == ["000.png", "001.png", "002.png"]
    assert p.images("0") is first  # nothing changed: the cached list itself
    sub = tmp_path / "p" / "data" / "0" / "sub"
    sub.mkdir()
    assert p.images("0") is not first
    time.sleep(0.01)
    (sub / "deep.png").write_bytes(tools.digit_png(1))  # changes only the sub-folder's mtime
    (sub / ".hidden.png").write_bytes(tools.digit_png(1))
    (sub / "notes.txt").write_text("x")
    assert [e.name for e in p.images("0")] == ["000.png", "001.png", "002.png", "sub/deep.png"]
    assert p.counts() == [{"name": "0", "count": 4}, {"name": "1", "count": 3}]


def test_hashes_are_cached_by_path_size_and_mtime(tmp_path, tools):
    from edgetl.studio.project import Project

    data = tools.write_digits(tmp_path / "p" / "data", classes=("0", "1"), per_class=2)
    Project(str(tmp_path / "p")).all_hashes()
    path = tmp_path / "p" / ".studio" / "hashes.json"
    stored = json.loads(path.read_text())["hashes"]
    assert len(stored) == 4 and all(k.count("|") == 2 for k in stored)
    # A cached digest is trusted while (path, size, mtime) match: prove it with a planted one.
    key = next(k for k in stored if k.startswith("0/000.png|"))
    stored[key] = "planted"
    path.write_text(json.dumps({"hashes": stored}))
    changed = os.path.join(data, "1", "001.png")
    with open(changed, "wb") as fh:
        fh.write(tools.digit_png(500))
    index = Project(str(tmp_path / "p")).all_hashes()
    assert index["planted"] == ["0/000.png"]
    import hashlib

    assert index[hashlib.sha256(tools.digit_png(500)).hexdigest()] == ["1/001.png"]
    kept = json.loads(path.read_text())["hashes"]
    assert len(kept) == 4  # the old key of the changed file is dropped


@pytest.mark.parametrize("filename, expected", [
    ("photo.JPG", "photo.jpg"), ("../../x.png", "x.png"), ("C:\\Users\\me\\cat.png", "cat.png"),
    ("a b(1)-_.png", "a b(1)-_.png"), ("ünï<>|:*?.png", "_n_______.png"),
    (".bashrc.png", "bashrc.png"), ("x.svg", None), ("noext", None), ("", None), ("x.png.exe", None),
])
def test_upload_names(filename, expected):
    from edgetl.studio.security import BadName, upload_name

    if expected is None:
        with pytest.raises(BadName):
            upload_name(filename)
    else:
        assert upload_name(filename) == expected


def test_hosts_and_loopback():
    from edgetl.studio.security import allowed_hosts
    from edgetl.studio.server import is_loopback

    assert allowed_hosts("127.0.0.1", 8000) == {"127.0.0.1:8000", "localhost:8000"}
    assert "[::1]:8000" in allowed_hosts("::1", 8000)
    assert "192.168.1.5:80" in allowed_hosts("192.168.1.5", 80) and "192.168.1.5" in allowed_hosts("192.168.1.5", 80)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def test_runs_json_survives_a_server_that_stopped_mid_run(tmp_path):
    from edgetl.studio.jobs import RunStore

    state, runs = tmp_path / ".studio", tmp_path / "runs"
    state.mkdir()
    (runs / "run-007").mkdir(parents=True)  # a run folder made outside the studio
    store = RunStore(str(state), str(runs))
    assert store.next_id() == "run-008"
    store.add({"id": "run-008", "status": "running", "data_version": 0})
    again = RunStore(str(state), str(runs))
    (run,) = again.all()
    assert run["status"] == "failed" and "stopped" in run["error"]
    assert json.loads((state / "runs.json").read_text())["runs"][0]["status"] == "failed"
    assert [n for n in os.listdir(state) if ".tmp-" in n] == []  # atomic writes leave no temporaries


def test_a_worker_killed_outright_is_a_failed_run(tmp_path, tools):
    """SIGKILL: no final event from the worker; the runner writes one."""
    from edgetl.studio.jobs import Runner

    ended = []
    runner = Runner(lambda job, final: ended.append((job.status, final)))
    data = tools.write_digits(tmp_path / "data", classes=("0", "1"), per_class=5)
    job = runner.start("run-001", {"command": "train", "data_dir": data, "out": str(tmp_path / "run-001"),
                                   "settings": {"image_size": 32}}, str(tmp_path / "err.txt"), str(tmp_path))
    with pytest.raises(RuntimeError):
        runner.start("run-002", {}, str(tmp_path / "err2.txt"), str(tmp_path))  # one at a time
    time.sleep(0.5)
    os.kill(job.proc.pid, signal.SIGKILL)
    assert job.finished.wait(30)
    assert job.status == "failed" and ended[0][0] == "failed"
    assert job.events[-1]["event"] == "error" and "exit status -9" in job.events[-1]["message"]
    assert runner.running() is None


def test_run_prints_the_url_and_serves_until_interrupted(tmp_path):
    import httpx

    code = (f"from edgetl.studio.server import run; run({str(tmp_path / 'p')!r}, open_browser=False, "
            f"token='tok-123')")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("edgetl studio: http://127.0.0.1:") and line.endswith("/?token=tok-123")
        url = line.split(": ", 1)[1]
        with httpx.Client(timeout=30) as client:
            r = client.get(url, follow_redirects=False)
            assert r.status_code == 303 and "edgetl_studio=tok-123" in r.headers["set-cookie"]
            base = url.split("/?")[0]
            assert client.get(base + "/api/project", headers={"X-Edgetl-Token": "tok-123"}).json()["total"] == 0
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    assert os.path.isfile(tmp_path / "p" / "project.json")
