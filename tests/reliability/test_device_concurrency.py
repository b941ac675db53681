"""Two writers of one learning state (issue 18, items 4 and 15): real
processes, no timing. A writer is paused inside its change (state read, not
yet saved) while a second one starts; the second must wait for the first
and both changes must be in the state at the end, never one of them lost."""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import time

import pytest

from edgetl.errors import DataError, StorageError
from edgetl.runtime import Personalizer
from edgetl.runtime.personalize import STATE_FILE

# `edgetl device ...` in a process that stops after embedding the images (the
# state read and changed, not saved) until a line arrives on stdin.
_PAUSED_CLI = """
import sys
from edgetl.cli import main
from edgetl.runtime.personalize import Personalizer

add = Personalizer.add_examples
fit = Personalizer.fit

def pause():
    print("paused", flush=True)
    sys.stdin.readline()

def add_then_pause(self, images, label):
    n = add(self, images, label)
    pause()
    return n

def fit_then_pause(self, *args, **kwargs):
    history = fit(self, *args, **kwargs)
    pause()
    return history

Personalizer.add_examples = add_then_pause
Personalizer.fit = fit_then_pause
sys.exit(main(sys.argv[1:]))
"""
_CLI = "import sys; from edgetl.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture(scope="module")
def shared(shared_run):
    images = sorted(glob.glob(os.path.join(shared_run.data_dir, "*", "*.png")))
    return {"run": shared_run.run_dir, "images": images}


def _waiting_for_a_lock(pid: int) -> bool:
    """Whether process ``pid`` is blocked waiting for an flock (Linux's /proc/locks marks waiters '->')."""
    with open("/proc/locks") as fh:
        return re.search(rf"->\s+FLOCK\s+\S+\s+WRITE\s+{pid}\s", fh.read()) is not None


def _until_blocked_or_done(proc: subprocess.Popen, deadline_s: float = 120) -> None:
    """Return once ``proc`` waits for a lock or has exited (a safety deadline only against hanging)."""
    end = time.monotonic() + deadline_s
    while proc.poll() is None and not _waiting_for_a_lock(proc.pid):
        assert time.monotonic() < end, "the second writer neither waited for the lock nor finished"
        time.sleep(0.02)


def _second_writer_while_first_is_paused(first_argv, second_argv):
    """Start ``first`` (paused inside its change), then ``second``; let the first
    go once the second waits for it (or, without a lock, has finished)."""
    first = subprocess.Popen([sys.executable, "-c", _PAUSED_CLI, *first_argv], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert first.stdout.readline().strip() == "paused", first.stderr.read()
    second = subprocess.Popen([sys.executable, "-c", _CLI, *second_argv], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        _until_blocked_or_done(second)
        still_waiting = second.poll() is None
        first.stdin.write("\n")
        first.stdin.flush()
        out1, err1 = first.communicate(timeout=300)
        out2, err2 = second.communicate(timeout=300)
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                proc.kill()
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    return still_waiting, out1, out2


@pytest.mark.skipif(not os.path.exists("/proc/locks"), reason="needs Linux's /proc/locks to see a waiting process")
def test_two_device_adds_at_once_lose_nothing(shared, tmp_path):
    run, images, state = shared["run"], shared["images"], str(tmp_path / "state")
    still_waiting, out1, out2 = _second_writer_while_first_is_paused(
        ["device", "add", run, state, "--label", "first", *images[:3]],
        ["device", "add", run, state, "--label", "second", *images[3:5]])
    assert still_waiting  # the second writer waited for the first one's lock
    base = len(Personalizer(run, tmp_path / "fresh").labels)
    assert f"{base + 1} classes" in out1 and f"{base + 2} classes" in out2
    counts = Personalizer(None, state).counts()
    assert counts["first"] == 3 and counts["second"] == 2
    assert os.listdir(state) == [STATE_FILE]  # the lock file goes with the lock


@pytest.mark.skipif(not os.path.exists("/proc/locks"), reason="needs Linux's /proc/locks to see a waiting process")
def test_device_fit_and_add_at_once_lose_nothing(shared, tmp_path):
    """A fit that read the state before an add saved it would save the state
    without the added examples."""
    run, images, state = shared["run"], shared["images"], str(tmp_path / "state")
    assert subprocess.run([sys.executable, "-c", _CLI, "device", "add", run, state, "--label", "new", *images[:2]],
                          capture_output=True).returncode == 0
    still_waiting, out1, _ = _second_writer_while_first_is_paused(
        ["device", "fit", state, "--epochs", "1"],
        ["device", "add", run, state, "--label", "later", *images[2:5]])
    assert still_waiting and "loss" in out1
    p = Personalizer(None, state)
    assert p.counts()["new"] == 2 and p.counts()["later"] == 3 and len(p.history) == 1


def test_save_refuses_to_overwrite_a_state_saved_meanwhile(shared, tmp_path):
    """The API without edit(): two Personalizers opened on one state; the
    second save would drop the first one's examples, so it is refused."""
    run, images, state = shared["run"], shared["images"], tmp_path / "state"
    one, two = Personalizer(run, state), Personalizer(run, state)
    one.add_examples(images[:2], "one")
    one.save()
    two.add_examples(images[2:3], "two")
    before = (state / STATE_FILE).read_bytes()
    with pytest.raises(DataError, match="saved by another process after it was opened here") as info:
        two.save()
    assert "\n" not in str(info.value)
    assert (state / STATE_FILE).read_bytes() == before
    one.add_examples(images[3:4], "one")
    one.save()  # its own earlier save is not "another process"
    with Personalizer.edit(run, state) as three:  # read under the lock: nothing can change it meanwhile
        three.add_examples(images[2:3], "two")
        three.save()
    counts = Personalizer(None, state).counts()
    assert counts["one"] == 3 and counts["two"] == 1
    assert os.listdir(state) == [STATE_FILE]


def test_a_failed_first_edit_leaves_no_folder(shared, tmp_path):
    with pytest.raises(DataError, match="no images"):
        with Personalizer.edit(shared["run"], tmp_path / "state") as p:
            p.add_examples([], "x")
    assert not (tmp_path / "state").exists()


def test_temporary_file_removed_while_saving_is_named(shared, tmp_path, monkeypatch):
    """Item 15: what another program deleting the temporary file looks like
    (the lock keeps edgetl's own writers from doing it): said as it is, not
    'check the disk'."""
    state = tmp_path / "state"
    p = Personalizer(shared["run"], state)
    p.add_examples(shared["images"][:1], "new")
    p.save()
    before = (state / STATE_FILE).read_bytes()
    p.add_examples(shared["images"][1:2], "new")
    real_fsync = os.fsync

    def fsync_then_removed(fd):
        real_fsync(fd)
        for tmp in glob.glob(str(state / f".{STATE_FILE}.tmp-*")):
            os.unlink(tmp)

    monkeypatch.setattr(os, "fsync", fsync_then_removed)
    with pytest.raises(StorageError) as info:
        p.save()
    message = str(info.value)
    assert "was removed by another process" in message and "check the disk" not in message
    assert "\n" not in message
    assert (state / STATE_FILE).read_bytes() == before
