"""Crash safety: real processes killed with SIGKILL at the worst moment, and
full disks. Nothing half-written is ever read back; a rerun resumes.

The third crash of the issue (a checkpoint: the on-device learning state,
killed during ``Personalizer.save``) is test_personalize.py's
test_killed_during_save_leaves_loadable_state; not repeated here.

The child processes pause at a chosen moment (inside a shard write, inside a
model file write, at the rename that publishes the bundle) and say so on
stdout; the parent then kills them for real, so what is on disk is exactly
what a power cut or the OOM killer would leave."""

from __future__ import annotations

import errno
import inspect
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import onnx
import pytest

from edgetl.cli import main
from edgetl.errors import StorageError
from edgetl.runtime import Personalizer, Predictor
from imagefiles import snapshot

SIZE = 32


def _fast() -> dict:
    """Train with the layer / size / head search off when train has one: one
    forward pass at SIZE px is all these tests need."""
    from edgetl.training import train

    return {"search": False} if "search" in inspect.signature(train).parameters else {}


CLI_FAST = ["--search", "off"] if _fast() else []


def error_line(err: str) -> str:
    """The CLI's one error line (info lines may come before it), no traceback."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith(("edgetl: error:", "edgetl: internal error:"))]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0], err
    return errors[0]


def run_until_paused(code: str, *args, timeout: float = 240) -> tuple[str, subprocess.Popen]:
    """Start ``code`` in a fresh interpreter; wait for the line it prints when
    it reaches the moment to kill it; SIGKILL it there."""
    proc = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line and not line.startswith("finished"), (line, proc.stderr.read() if proc.poll() is not None else "")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return line, proc


@pytest.fixture(scope="module")
def graph():
    from edgetl.export.backbone_onnx import export_backbone
    from edgetl.zoo import get_spec

    # taps=True: the graph train() extracts with (exported once for both); features are every tap's, concatenated
    return export_backbone("efficientnet_lite0", input_spec=get_spec("efficientnet_lite0").input_spec.replace(
        image_size=SIZE), taps=True)


@pytest.fixture(scope="module")
def previous(tmp_path_factory, graph):
    """A data folder and a finished bundle of it: the 'previous run'."""
    from conftest import make_shapes_folder

    from edgetl.training import train

    root = tmp_path_factory.mktemp("crash")
    data = make_shapes_folder(root / "shapes", num_per_class=6, size=40, seed=3)
    train(data, root / "run", image_size=SIZE, progress=False, **_fast())
    return {"data": data, "run": str(root / "run"), "snapshot": snapshot(root / "run")}


# --------------------------------------------------------------------------- feature extraction

_EXTRACT = """
import os, sys, time
import numpy as np
from edgetl.export.backbone_onnx import export_backbone
from edgetl.features.extract import FeatureExtractor
from edgetl.zoo import get_spec

cache_dir, size, kill_at, *paths = sys.argv[1:]
graph = export_backbone("efficientnet_lite0", input_spec=get_spec("efficientnet_lite0").input_spec.replace(
    image_size=int(size)), taps=True)
real_savez, calls = np.savez, [0]

def savez(path, **arrays):
    calls[0] += 1
    real_savez(path, **arrays)
    if calls[0] == int(kill_at):  # half of this shard is on disk, not yet renamed
        with open(path, "r+b") as fh:
            fh.truncate(os.path.getsize(path) // 2)
        print("mid-write", path, flush=True)
        time.sleep(600)

np.savez = savez
extractor = FeatureExtractor(graph, cache_dir=cache_dir, batch_size=4, num_workers=1)
extractor.cache.flush_rows = 4
extractor.extract(paths, progress=False)
print("finished", flush=True)
"""


def test_killed_during_feature_extraction_resumes(tmp_path, graph):
    from conftest import make_shapes_folder

    from edgetl.features.extract import FeatureExtractor

    data = make_shapes_folder(tmp_path / "shapes", num_per_class=8, size=40, seed=5)
    paths = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(data) for f in fs)
    cache_dir = tmp_path / "cache"
    line, proc = run_until_paused(_EXTRACT, cache_dir, SIZE, 3, *paths)
    assert line.startswith("mid-write")
    shard_dir = os.path.dirname(line.split(" ", 1)[1])
    names = sorted(os.listdir(shard_dir))
    assert len([n for n in names if n.startswith("shard-")]) == 2  # two whole shards of 4
    assert [n for n in names if n.endswith(".tmp.npz")] == [os.path.basename(line.split(" ", 1)[1])]

    extractor = FeatureExtractor(graph, cache_dir=str(cache_dir))
    assert not [n for n in os.listdir(shard_dir) if n.endswith(".tmp.npz")]  # the dead writer's half shard swept
    resumed = extractor.extract(paths, progress=False)
    assert (resumed.num_cached, resumed.num_extracted) == (8, len(paths) - 8)
    fresh = FeatureExtractor(graph, cache_dir=str(tmp_path / "fresh")).extract(paths, progress=False)
    assert fresh.num_cached == 0
    np.testing.assert_array_equal(resumed.ok, fresh.ok)
    np.testing.assert_allclose(resumed.features, fresh.features, atol=1e-5)


# --------------------------------------------------------------------------- writing a bundle

_TRAIN = """
import os, sys, time
import onnx
from edgetl.training import train

data, out, size, mode, fast = sys.argv[1:]
out = os.path.abspath(out)
parent = os.path.dirname(out)
if mode == "model-file":
    real_save, calls = onnx.save_model, [0]

    def save(proto, f, *args, **kwargs):
        path = os.path.abspath(os.fspath(f))
        if path.startswith(parent + os.sep):
            calls[0] += 1
            if calls[0] == 2:  # the second model file of the bundle, half written
                blob = proto.SerializeToString()
                with open(path, "wb") as fh:
                    fh.write(blob[: len(blob) // 2])
                print("mid-write", path, flush=True)
                time.sleep(600)
        return real_save(proto, f, *args, **kwargs)

    onnx.save = onnx.save_model = save
else:  # "publish": at the rename that puts the new bundle in place
    for name in ("replace", "rename"):
        def hooked(src, dst, *args, _real=getattr(os, name), **kwargs):
            if os.path.abspath(os.fspath(dst)) == out:
                print("publishing", src, flush=True)
                time.sleep(600)
            return _real(src, dst, *args, **kwargs)
        setattr(os, name, hooked)
train(data, out, image_size=int(size), overwrite=True, progress=False, **({"search": False} if fast else {}))
print("finished", flush=True)
"""


def _bundle_complete(run: str) -> bool:
    predictor = Predictor(run)  # raises on a half bundle
    Predictor(run, int8=True)
    return len(predictor.labels) == 3


def test_killed_while_writing_a_bundle(tmp_path, previous):
    """Killed half-way through a model file, then (another run) at the rename
    that publishes the bundle: RUN_DIR only ever holds the previous bundle,
    whole, or nothing while it is set aside; the next run sweeps what the
    killed ones left and completes."""
    out = tmp_path / "run"
    shutil.copytree(previous["run"], out)
    fast = "1" if _fast() else ""

    line, _ = run_until_paused(_TRAIN, previous["data"], out, SIZE, "model-file", fast)
    assert line.startswith("mid-write"), line
    half = line.split(" ", 1)[1]
    assert not half.startswith(str(out) + os.sep)  # the new bundle is built beside RUN_DIR, never in it
    assert os.path.getsize(half) > 0 and snapshot(out) == previous["snapshot"]
    assert _bundle_complete(str(out))

    line, _ = run_until_paused(_TRAIN, previous["data"], out, SIZE, "publish", fast)
    assert line.startswith("publishing"), line
    assert not os.path.exists(half)  # the second run swept the first one's temp folder
    if out.exists():  # a publish that swaps atomically
        assert snapshot(out) == previous["snapshot"]
    else:  # set aside as RUN.old-PID, whole; the error says where
        aside = [tmp_path / n for n in os.listdir(tmp_path) if n.startswith("run.old-")]
        assert len(aside) == 1 and snapshot(aside[0]) == previous["snapshot"]
        with pytest.raises(Exception, match="run.old-"):
            Predictor(out)

    assert main(["train", previous["data"], "--out", str(out), "--image-size", str(SIZE), "--overwrite",
                 *CLI_FAST]) == 0
    assert _bundle_complete(str(out))
    assert sorted(os.listdir(tmp_path)) == ["run"]


# --------------------------------------------------------------------------- full disk


def _disk_full_after_half(real, path_arg: int):
    """A writer that gets half of its bytes onto the disk, then ENOSPC."""

    def write(*args, **kwargs):
        path = os.fspath(args[path_arg])
        real(*args, **kwargs)
        with open(path, "r+b") as fh:
            fh.truncate(os.path.getsize(path) // 2)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    return write


def test_full_disk_in_the_feature_cache(tmp_path, monkeypatch, capsys, previous):
    from conftest import make_shapes_folder

    data = make_shapes_folder(tmp_path / "new-shapes", num_per_class=4, size=40, seed=11)  # cache misses
    cache = os.path.join(os.environ["EDGETL_CACHE_DIR"], "features")
    before = {n: set(os.listdir(os.path.join(cache, n))) for n in os.listdir(cache)}
    monkeypatch.setattr(np, "savez", _disk_full_after_half(np.savez, 0))
    code = main(["train", data, "--out", str(tmp_path / "run"), "--image-size", str(SIZE), *CLI_FAST])
    err = capsys.readouterr().err
    assert code == 2, err
    line = error_line(err)
    assert "disk is full" in line and "feature cache" in line
    assert not (tmp_path / "run").exists()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".run")]
    after = {n: set(os.listdir(os.path.join(cache, n))) for n in os.listdir(cache)}
    assert after == before  # no half shard, no temporary file: the next run starts from a sound cache


def test_full_disk_while_writing_a_bundle(tmp_path, monkeypatch, capsys, previous):
    out = tmp_path / "run"
    shutil.copytree(previous["run"], out)
    monkeypatch.setattr(onnx, "save", _disk_full_after_half(onnx.save, 1))
    monkeypatch.setattr(onnx, "save_model", onnx.save)
    code = main(["train", previous["data"], "--out", str(out), "--image-size", str(SIZE), "--overwrite", *CLI_FAST])
    err = capsys.readouterr().err
    assert code == 2
    line = error_line(err)
    assert line.startswith("edgetl: error: ") and "disk is full" in line
    assert snapshot(out) == previous["snapshot"]  # the previous bundle, untouched
    assert sorted(os.listdir(tmp_path)) == ["run"]  # no half bundle beside it


def test_full_disk_while_saving_the_learning_state(tmp_path, monkeypatch, previous):
    from edgetl.runtime.personalize import STATE_FILE

    state = tmp_path / "state"
    p = Personalizer(previous["run"], state)
    p.add_examples([os.path.join(previous["data"], "disc", n) for n in ("000.png", "001.png")], "mine")
    p.save()
    saved = (state / STATE_FILE).read_bytes()
    p.add_examples([os.path.join(previous["data"], "bars", "000.png")], "mine")

    def fsync(fd):  # where a full disk shows itself with delayed allocation
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(StorageError, match="disk is full") as exc:
        p.save()
    assert "\n" not in str(exc.value) and str(state) in str(exc.value)
    monkeypatch.undo()
    assert os.listdir(state) == [STATE_FILE] and (state / STATE_FILE).read_bytes() == saved
    assert Personalizer(None, state).counts()["mine"] == 2
    p.save()
    assert Personalizer(None, state).counts()["mine"] == 3
