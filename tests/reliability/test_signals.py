"""SIGTERM (`kill PID`, a container or a service manager stopping edgetl)
takes Ctrl-C's clean path: every temporary is removed on the way out, one
line says so, exit code 143. Real processes, real signals: each child runs
the CLI and pauses at a chosen moment (inside the run folder's staging, in
the middle of an export into the cache) and says so on stdout; the parent
then signals it. What a killed process (SIGKILL) leaves in the cache is
swept by the next one that opens the folder. `weights fetch` under SIGTERM:
tests/zoo/test_fetch.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

INTERRUPTED = "edgetl: interrupted; nothing half-written was left behind"

# `edgetl ARGS` whose training, once the run folder is claimed and staged, writes
# half a model into the staging folder and waits there.
_IN_STAGING = """
import os, sys, time
import edgetl.training.head_path as head_path
from edgetl.cli import main
from edgetl.training.rundir import staging

def held(config, folder, **kwargs):
    with staging(config.out) as tmp_dir:
        with open(os.path.join(tmp_dir, "model.onnx"), "wb") as fh:
            fh.write(b"half a model")
        print("staged", tmp_dir, flush=True)
        time.sleep(600)

head_path.train_head = held
sys.exit(main(sys.argv[1:]))
"""

# `edgetl ARGS` whose ONNX export into the cache writes half a file and waits there.
_IN_EXPORT = """
import os, sys, time
import torch.onnx
from edgetl.cli import main

to_parent = os.fdopen(os.dup(1), "w")  # the exporter's stdout (file descriptor 1) goes to /dev/null

def export(model, args, f, **kwargs):
    with open(f, "wb") as fh:
        fh.write(b"half a graph")
    print("exporting", f, file=to_parent, flush=True)
    time.sleep(600)

torch.onnx.export = export
sys.exit(main(sys.argv[1:]))
"""

# A real run paused at the rename that publishes its bundle.
_AT_PUBLISH = """
import os, sys, time
from edgetl.cli import main

out = os.path.abspath(sys.argv[sys.argv.index("--out") + 1])
real = os.replace

def replace(src, dst, *args, **kwargs):
    if os.path.abspath(os.fspath(dst)) == out:
        print("publishing", src, flush=True)
        time.sleep(600)
    return real(src, dst, *args, **kwargs)

os.replace = replace
sys.exit(main(sys.argv[1:]))
"""


def terminate_when_paused(code: str, *args, env=None, sig=signal.SIGTERM) -> tuple[str, str, int]:
    """Start ``code``; at the line it prints when paused, send it ``sig``;
    returns (that line, stderr, exit code)."""
    proc = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    watchdog = threading.Timer(600, proc.kill)  # a child that never pauses must not hang the suite
    watchdog.start()
    try:
        line = proc.stdout.readline().strip()
        assert line, proc.communicate()[1]
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=300)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return line, err, proc.returncode


def assert_interrupted(err: str, code: int) -> None:
    assert code == 143, err
    assert "Traceback" not in err and err.splitlines()[-1] == INTERRUPTED, err


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def data(tmp_path):
    from conftest import make_shapes_folder

    return make_shapes_folder(tmp_path / "shapes", num_per_class=4, size=32)


def test_sigterm_in_the_run_folder_staging(tmp_path, data):
    out = tmp_path / "run"
    line, err, code = terminate_when_paused(_IN_STAGING, "train", data, "--out", out, "--image-size", "32",
                                            "--search", "off")
    assert line.startswith("staged ") and os.path.basename(line.split(" ", 1)[1]).startswith(".run.tmp-")
    assert_interrupted(err, code)
    # No staging folder, no lock file, no run: only the data folder.
    assert sorted(os.listdir(tmp_path)) == ["shapes"]


def test_sigterm_during_an_export_into_the_cache(tmp_path, data):
    """The half-exported graph (cache/models/.NAME.onnx.tmp-PID) is removed on
    SIGTERM; what SIGKILLed processes left there and in the weights folder
    (their PIDs dead) was swept when the run opened those folders; a running
    process's temporary, and a file that is not edgetl's, are left alone."""
    cache, weights = tmp_path / "cache", tmp_path / "weights"
    models = cache / "models"
    models.mkdir(parents=True)
    weights.mkdir()
    killed = dead_pid()
    (models / f".efficientnet_lite0-0123abcd.onnx.tmp-{killed}").write_bytes(b"half")
    (weights / f".resnet18-f37072fd.pth.tmp-{killed}").write_bytes(b"part of a download")
    (cache / f".tap-costs.json.tmp-{killed}").write_text("{")
    users = cache / f".notes.txt.tmp-{killed}"  # $EDGETL_CACHE_DIR may be a folder shared with other files
    users.write_text("not edgetl's")
    running = models / f".other.onnx.tmp-{os.getpid()}"
    running.write_bytes(b"being written")
    env = dict(os.environ, EDGETL_CACHE_DIR=str(cache), EDGETL_WEIGHTS_DIR=str(weights))
    line, err, code = terminate_when_paused(_IN_EXPORT, "train", data, "--out", tmp_path / "run", "--image-size",
                                            "32", "--search", "off", env=env)
    assert line.startswith("exporting ") and ".onnx.tmp-" in line
    assert_interrupted(err, code)
    assert sorted(os.listdir(models)) == sorted([running.name, "taps.json"])  # taps.json: recorded before the export
    assert os.listdir(weights) == [] and sorted(os.listdir(cache)) == sorted(["models", users.name])
    assert sorted(os.listdir(tmp_path)) == ["cache", "shapes", "weights"]


@pytest.mark.slow
def test_sigterm_at_publish_of_a_real_run(tmp_path, data):
    """A whole run, signalled at the rename that would publish it: nothing
    of it is left, and the next run completes."""
    from edgetl.cli import main

    out = tmp_path / "run"
    args = ["train", data, "--out", str(out), "--image-size", "32", "--search", "off"]
    line, err, code = terminate_when_paused(_AT_PUBLISH, *args)
    assert line.startswith("publishing ")
    assert_interrupted(err, code)
    assert sorted(os.listdir(tmp_path)) == ["shapes"]
    assert main(args) == 0 and sorted(os.listdir(tmp_path)) == ["run", "shapes"]


def test_ctrl_c_takes_the_same_path_with_exit_130(tmp_path, data):
    line, err, code = terminate_when_paused(_IN_STAGING, "train", data, "--out", tmp_path / "run",
                                            sig=signal.SIGINT)
    assert line.startswith("staged ")
    assert code == 130 and err.splitlines()[-1] == INTERRUPTED and "Traceback" not in err, err
    assert sorted(os.listdir(tmp_path)) == ["shapes"]
