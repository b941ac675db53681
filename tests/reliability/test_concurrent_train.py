"""Two `edgetl train` with the same --out: the first claims the run folder
(an flock on `.RUN.lock` beside it, held for the whole run), the second is
refused at once naming the first, and the folder holds the first run only.
Real processes; the first one is held inside its run (after the claim, before
its bundle) until the test lets it go, so the two overlap for sure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest
from PIL import Image

from edgetl.errors import RunExistsError
from edgetl.training.rundir import claim_run, lock_path, state_dir_for

FAST = ["--image-size", "32", "--search", "off"]

# `edgetl train ARGS`, held once the run folder is claimed and the data scanned, until a line on stdin.
_HELD_TRAIN = """
import sys
import edgetl.training.head_path as head_path
from edgetl.cli import main

real = head_path.train_head

def held(*args, **kwargs):
    print("claimed", flush=True)
    sys.stdin.readline()
    return real(*args, **kwargs)

head_path.train_head = held
sys.exit(main(sys.argv[1:]))
"""

# Claims the run folder and waits (to be killed).
_HOLD = """
import sys, time
from edgetl.training.rundir import claim_run

with claim_run(sys.argv[1]):
    print("claimed", flush=True)
    time.sleep(600)
"""


def _two_class_folder(root) -> str:
    for c, cls in enumerate(("apple", "pear")):
        os.makedirs(os.path.join(root, cls), exist_ok=True)
        for i in range(4):
            Image.new("RGB", (32, 32), (200 * c, 30 * i, 90)).save(os.path.join(root, cls, f"{i}.png"))
    return str(root)


def _start(code: str, *args) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(600, proc.kill)  # a child that never gets there must not hang the suite
    watchdog.start()
    line = proc.stdout.readline().strip()
    watchdog.cancel()
    if line != "claimed":
        proc.kill()
        pytest.fail(f"the first run did not start: {line!r} {proc.communicate()[1]}")
    return proc


def test_second_train_on_the_same_out_is_refused(tmp_path):
    from conftest import make_shapes_folder

    first = make_shapes_folder(tmp_path / "shapes", num_per_class=4, size=32)
    second = _two_class_folder(tmp_path / "fruit")
    out = tmp_path / "run"
    proc = _start(_HELD_TRAIN, "train", first, "--out", out, *FAST)
    try:
        # Another process: refused at once, one line naming the first, exit 2.
        res = subprocess.run([sys.executable, "-m", "edgetl.cli", "train", second, "--out", str(out), *FAST,
                              "--overwrite"], capture_output=True, text=True, timeout=300)
        assert res.returncode == 2, res.stderr
        assert res.stderr.splitlines() == [res.stderr.strip()] and "Traceback" not in res.stderr
        assert res.stderr.startswith("edgetl: error: ") and f"PID {proc.pid}" in res.stderr
        assert str(out) in res.stderr and "another edgetl run" in res.stderr

        # Fine-tuning's state folder belongs to the same claim: --overwrite may not throw it away meanwhile.
        from edgetl.training import train

        state = state_dir_for(str(out))
        os.makedirs(state)
        open(os.path.join(state, "checkpoint.pt"), "wb").close()
        with pytest.raises(RunExistsError, match=f"PID {proc.pid}"):
            train(second, out, strategy="bias", overwrite=True)
        assert os.path.isfile(os.path.join(state, "checkpoint.pt"))
        os.remove(os.path.join(state, "checkpoint.pt"))
        os.rmdir(state)
    finally:
        stdout, stderr = proc.communicate("\n", timeout=600)
    assert proc.returncode == 0, stderr
    assert open(out / "labels.txt").read().split() == ["bars", "checker", "disc"]  # the first run's classes
    assert sorted(os.listdir(tmp_path)) == ["fruit", "run", "shapes"]  # the claim released, its lock file gone


def test_the_claim_dies_with_its_process(tmp_path):
    out = str(tmp_path / "run")
    proc = _start(_HOLD, out)
    try:
        with pytest.raises(RunExistsError, match=f"PID {proc.pid}"):
            with claim_run(out):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert os.path.exists(lock_path(out))  # SIGKILL: no clean-up ran, the file stays...
    with claim_run(out):  # ...but the kernel released the lock with the process
        assert open(lock_path(out)).read().strip() == str(os.getpid())
    assert os.listdir(tmp_path) == []
