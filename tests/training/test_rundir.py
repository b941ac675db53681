"""The run folder's life (``edgetl.training.rundir``): only a folder edgetl
made is ever replaced or swept, whatever its name; --out is checked to be
writable before any work. Every case is refused before a model is touched,
so nothing here trains (the concurrent runs and signals are in
tests/reliability/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from edgetl.cli import main
from edgetl.errors import RunExistsError
from edgetl.training.rundir import (RUN_MARKER, check_out_dir, is_run_folder, publish, read_run_marker,
                                    staging, sweep_dead_runs, write_run_marker)
from imagefiles import snapshot


def make_folder(root, classes=("cat", "dog"), per_class=3) -> str:
    from PIL import Image

    for c, cls in enumerate(classes):
        os.makedirs(os.path.join(root, cls), exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (20, 16), (40 * c, 10 * i, 90)).save(os.path.join(root, cls, f"{i}.png"))
    return str(root)


def one_error_line(capsys, code: int, *needles: str) -> str:
    captured = capsys.readouterr()
    assert code == 2, captured.err
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgetl: error: ") and "Traceback" not in captured.err, lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def fake_run(folder, marker: bool = True) -> str:
    """A run folder as edgetl leaves it (the files these checks look at)."""
    os.makedirs(folder)
    with open(os.path.join(folder, "metrics.json"), "w") as fh:
        json.dump({"edgetl_version": "0.1.0", "labels": ["a", "b"]}, fh)
    open(os.path.join(folder, "model.onnx"), "wb").close()
    if marker:
        write_run_marker(folder)
    return str(folder)


def dead_pid() -> int:
    """The PID of a process that has ended (reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def no_scan(monkeypatch):
    """Any refusal here must come before the data folder is even scanned."""
    import edgetl.data.folder

    def scan(*args, **kwargs):
        raise AssertionError("the data folder was scanned before --out was checked")

    monkeypatch.setattr(edgetl.data.folder, "scan_folder", scan)


# --------------------------------------------------------------------------- what is a run


def test_the_marker_is_what_makes_a_run(tmp_path):
    run = fake_run(tmp_path / "run")
    marker = read_run_marker(run)
    assert marker["format"] == "edgetl-run" and marker["version"] == 1 and marker["edgetl_version"]
    assert is_run_folder(run)
    # A run made before the marker existed: metrics.json naming the edgetl version, beside model.onnx.
    assert is_run_folder(fake_run(tmp_path / "legacy", marker=False))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "metrics.json").write_text('{"accuracy": 1}')  # someone else's metrics.json
    (docs / "model.onnx").write_bytes(b"")
    assert not is_run_folder(str(docs))
    (docs / RUN_MARKER).write_text("not json")
    assert not is_run_folder(str(docs))
    assert not is_run_folder(str(tmp_path / "missing"))


def test_staging_marks_the_run_first_thing(tmp_path):
    out = tmp_path / "run"
    with staging(str(out)) as tmp_dir:
        assert os.listdir(tmp_dir) == [RUN_MARKER]  # before any bundle file
        publish(tmp_dir, str(out))
    assert is_run_folder(str(out)) and os.listdir(tmp_path) == ["run"]


# --------------------------------------------------------------------------- 1: --overwrite replaces only runs


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path, capsys, no_scan):
    data = make_folder(tmp_path / "photos")
    docs = tmp_path / "mydocs"
    docs.mkdir()
    (docs / "thesis.txt").write_text("three years of work")
    (docs / "metrics.json").write_text('{"edgetl_version": "0.1.0"}')  # looks half like a run: still not one
    before = snapshot(docs)
    line = one_error_line(capsys, main(["train", data, "--out", str(docs), "--overwrite"]),
                          "not an edgetl run", RUN_MARKER, "choose another --out")
    assert "--overwrite" in line
    assert snapshot(docs) == before
    assert sorted(os.listdir(tmp_path)) == ["mydocs", "photos"]  # no lock, probe or staging folder left


def test_overwrite_refuses_the_cache_folder(tmp_path, capsys, no_scan, edgetl_cache):
    data = make_folder(tmp_path / "photos")
    before = snapshot(edgetl_cache)
    one_error_line(capsys, main(["train", data, "--out", edgetl_cache, "--overwrite"]), "not an edgetl run")
    assert snapshot(edgetl_cache) == before


def test_overwrite_accepts_runs_old_and_new(tmp_path):
    data = make_folder(tmp_path / "photos")
    for run in (fake_run(tmp_path / "new"), fake_run(tmp_path / "old", marker=False)):
        check_out_dir(run, data, overwrite=True)
        with pytest.raises(RunExistsError, match="pass --overwrite"):
            check_out_dir(run, data, overwrite=False)


def test_publish_never_removes_what_is_not_a_run(tmp_path):
    """A folder that appeared at --out while the run trained (not a run) is kept."""
    out = tmp_path / "run"
    with pytest.raises(RunExistsError, match="not an edgetl run"):
        with staging(str(out)) as tmp_dir:
            out.mkdir()
            (out / "notes.txt").write_text("keep me")
            publish(tmp_dir, str(out))
    assert (out / "notes.txt").read_text() == "keep me" and sorted(os.listdir(tmp_path)) == ["run"]


# --------------------------------------------------------------------------- 2: leftovers by marker, not by name


def test_sweep_takes_only_its_own_leftovers(tmp_path):
    pid = dead_pid()
    out = tmp_path / "exp"
    users = tmp_path / f"exp.old-{pid}"  # the user's, named like a leftover of a dead PID
    users.mkdir()
    (users / "results.csv").write_text("1,2,3")
    hidden = tmp_path / f".exp.tmp-{pid}"
    hidden.mkdir()
    (hidden / "notes.txt").write_text("mine too")
    before = snapshot(tmp_path)
    sweep_dead_runs(str(out))
    assert snapshot(tmp_path) == before and not out.exists()

    # What a killed run did leave (marked): its staging folder is removed, the bundle it set aside put back.
    staged = fake_run(tmp_path / f".exp.tmp-{dead_pid()}")
    aside = fake_run(tmp_path / f"exp.old-{dead_pid()}")
    sweep_dead_runs(str(out))
    assert not os.path.exists(staged) and not os.path.exists(aside)
    assert is_run_folder(str(out))
    assert (users / "results.csv").read_text() == "1,2,3" and (hidden / "notes.txt").read_text() == "mine too"


def test_train_leaves_a_users_leftover_named_folder_alone(tmp_path, capsys):
    """`mkdir exp.old-NNNN`, then `edgetl train --out exp`: the folder is the user's, before and after."""
    pid = dead_pid()
    users = tmp_path / f"exp.old-{pid}"
    users.mkdir()
    (users / "results.csv").write_text("1,2,3")
    out = tmp_path / "exp"
    with staging(str(out)) as tmp_dir:  # what train does just before writing the bundle
        publish(tmp_dir, str(out))
    assert (users / "results.csv").read_text() == "1,2,3"
    assert sorted(os.listdir(tmp_path)) == ["exp", f"exp.old-{pid}"]


# --------------------------------------------------------------------------- 12: --out checked before any work


@pytest.mark.parametrize("case", ["proc", "long-name", "read-only"])
def test_unwritable_out_is_refused_before_any_work(tmp_path, capsys, no_scan, case):
    data = make_folder(tmp_path / "photos")
    if case == "proc":
        out, needle = "/proc/edgetl-run", "cannot create files in '/proc'"
    elif case == "long-name":
        out, needle = str(tmp_path / ("r" * 250)), "bytes"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into a read-only folder; /proc stands in for it")
        locked = tmp_path / "locked"
        locked.mkdir()
        os.chmod(locked, 0o555)
        out, needle = str(locked / "run"), "not writable"
    before = snapshot(tmp_path)
    one_error_line(capsys, main(["train", data, "--out", out]), needle, "--out")
    assert snapshot(tmp_path) == before


def test_missing_parent_of_out_is_created(tmp_path):
    from edgetl.training.rundir import check_out_writable

    out = tmp_path / "a" / "b" / "run"
    check_out_writable(str(out))
    assert os.listdir(tmp_path / "a" / "b") == []  # the probe file is gone, nothing else made
