"""The ``ray`` extraction engine on a real Ray runtime (2 CPUs, started once
for the module): the same features as in process, bit for bit, the same
cache (either engine reuses what the other extracted), the same skipped
files, and a worker killed mid-run costs nothing: Ray restarts it, retries
its batch, and every image's features are stored exactly once."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import signal

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the 'ray' extra (pip install 'edgetl[ray]'); part of the 'test' extra")

from edgetl.events import listening  # noqa: E402
from edgetl.features.cache import read_shard  # noqa: E402
from edgetl.features.engines import extract_graphs  # noqa: E402

NUM_IMAGES = 240
WORKER = "ray::MapWorker(MapBatches(_Worker))"


@pytest.fixture(scope="module")
def ray_runtime():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A few hundred digits as PNGs, and three files that are not images:
    text named .png, a truncated PNG, an empty file."""
    from edgetl.demo import write_digits_folder

    root = tmp_path_factory.mktemp("digits")
    paths = write_digits_folder(str(root))
    for path in paths[NUM_IMAGES:]:
        os.unlink(path)
    (root / "3" / "notes.png").write_text("not a picture\n")
    whole = open(paths[0], "rb").read()
    (root / "5" / "cut.png").write_bytes(whole[: len(whole) // 2])
    (root / "7" / "empty.png").write_bytes(b"")
    return sorted(glob.glob(os.path.join(root, "*", "*.png")))


@pytest.fixture(scope="module")
def graphs():
    from edgetl.export.backbone_onnx import export_backbone
    from edgetl.zoo import get_spec

    spec = get_spec("efficientnet_lite0").input_spec
    return [export_backbone("efficientnet_lite0", input_spec=spec.replace(image_size=s), taps=True) for s in (48, 32)]


def _shard_keys(cache_dir, graph) -> list[bytes]:
    keys = []
    for path in glob.glob(os.path.join(cache_dir, "features", graph.key, "shard-*.npz")):
        k, _, why = read_shard(path)
        assert why is None, why
        keys += [bytes(row) for row in k]
    return keys


def test_both_engines_give_the_same_features_and_share_the_cache(ray_runtime, digits, graphs, tmp_path):
    on_ray = extract_graphs(graphs, digits, str(tmp_path / "a"), engine="ray", progress=False, batch_size=16)
    local = extract_graphs(graphs, digits, str(tmp_path / "b"), progress=False, batch_size=16)
    for r, loc in zip(on_ray, local):
        assert r.num_extracted == loc.num_extracted == NUM_IMAGES
        np.testing.assert_array_equal(r.ok, loc.ok)
        assert r.features.dtype == np.float32 and r.features.shape == (NUM_IMAGES, loc.features.shape[1])
        assert np.array_equal(r.features, loc.features)  # bit for bit, not close
        assert r.tap_slices == loc.tap_slices
    # Unreadable files: skipped and listed exactly as in process.
    assert on_ray[0].skipped == local[0].skipped
    assert sorted(os.path.basename(s["path"]) for s in local[0].skipped) == ["cut.png", "empty.png", "notes.png"]
    # A rerun on Ray extracts nothing; the in-process engine reuses what Ray stored, and the other way round.
    again = extract_graphs(graphs, digits, str(tmp_path / "a"), engine="ray", progress=False)
    assert [e.num_extracted for e in again] == [0, 0] and again[0].num_cached == NUM_IMAGES
    reuse = extract_graphs(graphs, digits, str(tmp_path / "a"), progress=False)
    assert [e.num_extracted for e in reuse] == [0, 0]
    assert all(np.array_equal(a.features, b.features) for a, b in zip(reuse, local))
    back = extract_graphs(graphs, digits, str(tmp_path / "b"), engine="ray", progress=False)
    assert [e.num_extracted for e in back] == [0, 0]


def test_a_rerun_extracts_only_what_is_missing(ray_runtime, digits, graphs, tmp_path):
    cache = str(tmp_path / "c")
    first = extract_graphs(graphs[1:], digits[:100], cache, progress=False)  # one size, part of the images
    before = set(_shard_keys(cache, graphs[1]))
    assert len(before) == first[0].num_extracted == len(first[0].ok) > 50
    out = extract_graphs(graphs, digits, cache, engine="ray", progress=False, batch_size=16)
    assert out[0].num_extracted == NUM_IMAGES  # distinct images run for some graph: all of them for 48 px
    # 32 px: only what was missing was added, each once.
    after = _shard_keys(cache, graphs[1])
    assert len(after) == len(set(after)) == NUM_IMAGES and before <= set(after)
    again = extract_graphs(graphs, digits, cache, engine="ray", progress=False)
    assert [e.num_extracted for e in again] == [0, 0]
    local = extract_graphs(graphs, digits, str(tmp_path / "d"), progress=False)
    assert all(np.array_equal(a.features, b.features) for a, b in zip(out, local))


def _ray_workers() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if cmd.startswith(WORKER):
            pids.append(int(entry))
    return pids


def test_a_worker_killed_mid_run_costs_nothing(ray_runtime, digits, graphs, tmp_path):
    """SIGKILL a Ray Data actor once the first rows are back: Ray restarts it
    and retries its batches; the run completes with every key stored exactly
    once and the features of the in-process engine."""
    killed = []

    def kill_one(event):
        if event["event"] == "extract" and not killed and 0 < event["done"] < event["total"]:
            pids = _ray_workers()
            assert pids, "no Ray Data worker process found"
            os.kill(pids[0], signal.SIGKILL)
            killed.append((pids[0], event["done"], event["total"]))

    cache = str(tmp_path / "k")
    with listening(kill_one):
        out = extract_graphs(graphs, digits, cache, engine="ray", progress=False, batch_size=4)
    assert killed, "the run ended before a worker could be killed"
    pid, done, total = killed[0]
    assert done < total and not os.path.exists(f"/proc/{pid}/cmdline")
    for graph, extraction in zip(graphs, out):
        keys = _shard_keys(cache, graph)
        assert len(keys) == len(set(keys)) == NUM_IMAGES  # every image's features exactly once
    local = extract_graphs(graphs, digits, str(tmp_path / "l"), progress=False, batch_size=4)
    for a, b in zip(out, local):
        assert np.array_equal(a.features, b.features) and a.skipped == b.skipped


def _own_features_cache(tmp_path) -> str:
    """A cache folder with the session's exported graphs and features of its own."""
    cache = str(tmp_path / "cache")
    os.makedirs(cache)
    models = os.path.join(os.environ["EDGETL_CACHE_DIR"], "models")
    os.makedirs(models, exist_ok=True)
    os.symlink(models, os.path.join(cache, "models"))
    return cache


def _head(run) -> tuple[dict, dict, str]:
    """The head's arrays, its metadata and labels.txt's hash (safetensors
    writes its metadata in no fixed order: the file's bytes may differ)."""
    from safetensors import safe_open

    with safe_open(os.path.join(run, "head.safetensors"), "np") as f:
        arrays = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    return arrays, meta, hashlib.sha256(open(os.path.join(run, "labels.txt"), "rb").read()).hexdigest()


@pytest.mark.slow  # a whole train on Ray: the full suite (the default one keeps the engine's own tests)
def test_train_on_ray_gives_the_local_run(ray_runtime, digits, tmp_path, capsys):
    from edgetl.cli import main

    data = tmp_path / "data"
    for path in digits:
        cls = os.path.basename(os.path.dirname(path))
        os.makedirs(data / cls, exist_ok=True)
        if len(os.listdir(data / cls)) < 15:  # 150 images and, in class 3, notes.png
            shutil.copyfile(path, data / cls / os.path.basename(path))
    cache = _own_features_cache(tmp_path)
    common = [str(data), "--image-size", "32", "--search", "off", "--cache-dir", cache]
    assert main(["train", *common, "--out", str(tmp_path / "ray"), "--engine", "ray"]) == 0
    shutil.rmtree(os.path.join(cache, "features"))  # the exported graphs stay; every feature is extracted again
    assert main(["train", *common, "--out", str(tmp_path / "local")]) == 0
    a = json.loads((tmp_path / "ray" / "metrics.json").read_text())
    b = json.loads((tmp_path / "local" / "metrics.json").read_text())
    assert a["features"]["extracted"] == b["features"]["extracted"] > 0
    assert a["val_accuracy"] == b["val_accuracy"] and a["chosen"] == b["chosen"] and a["skipped"] == b["skipped"]
    (ray_arrays, *ray_rest), (local_arrays, *local_rest) = _head(tmp_path / "ray"), _head(tmp_path / "local")
    assert ray_rest == local_rest and sorted(ray_arrays) == sorted(local_arrays)
    assert all(np.array_equal(ray_arrays[k], local_arrays[k]) for k in ray_arrays)
    assert 'engine = "ray"' in (tmp_path / "ray" / "config.toml").read_text()


def test_ray_engine_refuses_what_it_cannot_do(tmp_path):
    from edgetl.errors import DataError
    from edgetl.training import train

    with pytest.raises(DataError, match="--ray-address names the Ray cluster"):
        train(str(tmp_path), str(tmp_path / "run"), ray_address="auto")
    with pytest.raises(DataError, match="--engine ray extracts the frozen base"):
        train(str(tmp_path), str(tmp_path / "run"), engine="ray", strategy="full")


@pytest.mark.slow  # a whole train on Ray: the full suite (the default one keeps the engine's own tests)
def test_extract_writes_parquet_from_the_cache_a_train_then_reuses(ray_runtime, digits, tmp_path, capsys):
    """``edgetl extract --engine ray``: Parquet rows equal to the cache's rows
    of the same keys (the graph key in the metadata names its folder), and a
    later in-process ``train`` with the same settings extracts nothing."""
    import pyarrow.parquet as pq

    from edgetl.cli import main

    data = tmp_path / "data"
    for path in digits:
        cls = os.path.basename(os.path.dirname(path))
        os.makedirs(data / cls, exist_ok=True)
        if len(os.listdir(data / cls)) < 6 or not os.path.basename(path)[0].isdigit():  # and the 3 bad files
            shutil.copyfile(path, data / cls / os.path.basename(path))
    cache, out = _own_features_cache(tmp_path), tmp_path / "feats"
    settings = [str(data), "--image-size", "32", "--search", "off", "--tap", "final", "--cache-dir", cache]
    assert main(["extract", *settings, "--out", str(out), "--engine", "ray"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [f["image_size"] for f in manifest["files"]] == [224, 32]  # the naive baseline's size and the pinned one
    assert sorted(os.path.basename(s["path"]) for s in manifest["skipped"]) == ["cut.png", "empty.png", "notes.png"]
    table = pq.read_table(out / "features-32px.parquet")
    meta = json.loads(table.schema.metadata[b"edgetl"])
    assert table.num_rows == manifest["num_images"] == 60 and list(meta["taps"]) == ["final"]
    assert sorted(set(table.column("label").to_pylist())) == [str(d) for d in range(10)]
    keys = [bytes.fromhex(k) for k in table.column("key").to_pylist()]
    feats = np.asarray(table.column("features").to_pylist(), np.float32)
    from edgetl.features.cache import FeatureCache

    cached = FeatureCache(os.path.join(cache, "features", meta["graph_key"])).get(keys)
    lo, hi = meta["taps"]["final"]
    assert feats.shape[1] == hi - lo and np.array_equal(feats, cached[:, -feats.shape[1]:])
    capsys.readouterr()
    assert main(["train", *settings, "--out", str(tmp_path / "run")]) == 0
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["features"]["extracted"] == 0 and m["features"]["from_cache"] == 60


@pytest.mark.slow
def test_a_killed_driver_resumes_from_what_it_wrote(ray_runtime, tmp_path):
    """SIGKILL ``edgetl extract --engine ray`` (a driver joined to this Ray)
    once each graph's first shard is on disk; the rerun extracts only the rest, and
    the cache ends with every image's features exactly once."""
    import subprocess
    import sys
    import time

    from edgetl.demo import write_digits_folder

    data = tmp_path / "digits"
    n = len(write_digits_folder(str(data)))
    cache = _own_features_cache(tmp_path)
    argv = [sys.executable, "-m", "edgetl.cli", "extract", str(data), "--image-size", "32", "--search", "off",
            "--tap", "final", "--cache-dir", cache, "--engine", "ray",
            "--ray-address", ray.get_runtime_context().gcs_address]
    driver = subprocess.Popen(argv + ["--out", str(tmp_path / "first")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300

    def every_graph_has_a_shard() -> bool:  # 224 px (the baseline's) and 32 px
        folders = glob.glob(os.path.join(cache, "features", "*"))
        return len(folders) == 2 and all(glob.glob(os.path.join(f, "shard-*.npz")) for f in folders)

    while not every_graph_has_a_shard() and driver.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    driver.kill()
    assert driver.wait() == -signal.SIGKILL, "the driver finished before a shard was written"
    assert not (tmp_path / "first").exists()
    written = sum(len(_shard_keys(cache, type("G", (), {"key": os.path.basename(f)})))
                  for f in glob.glob(os.path.join(cache, "features", "*")))
    assert written > 0
    rerun = subprocess.run(argv + ["--out", str(tmp_path / "second")], capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    manifest = json.loads((tmp_path / "second" / "manifest.json").read_text())
    assert 0 < manifest["extracted"] < n and manifest["num_images"] == n
    for folder in glob.glob(os.path.join(cache, "features", "*")):
        keys = _shard_keys(cache, type("G", (), {"key": os.path.basename(folder)}))
        assert len(keys) == len(set(keys)) == n


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _end_leftovers(marker: bytes) -> None:
    """SIGKILL the processes whose environment holds ``marker`` (the agents
    a stopped node may leave behind), each by its id."""
    import time

    time.sleep(3)
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/environ", "rb") as fh:
                    if marker in fh.read().split(b"\0"):
                        os.kill(int(entry), signal.SIGKILL)
            except OSError:
                continue


@pytest.mark.slow
def test_two_nodes_give_the_local_features(digits, tmp_path):
    """A head node and a worker node (``ray start``, 1 CPU each: one actor
    on each), a driver joining them by address: the Parquet export is the
    in-process one, row for row and bit for bit."""
    import subprocess
    import sys
    import time

    import pyarrow.parquet as pq

    import uuid

    marker = uuid.uuid4().hex  # in the environment of every process the two nodes start: found and ended after
    env = dict(os.environ, RAY_AUTH_MODE="token", EDGETL_TEST_RAY_NODES=marker)  # token: nodes and drivers agree
    port = _free_port()
    address = f"127.0.0.1:{port}"
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    import tempfile

    temp_dir = tempfile.mkdtemp(prefix="ray2n", dir="/tmp")  # short (socket paths), and not /tmp/ray's global state
    nodes = [subprocess.Popen([ray_cli, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                               f"--temp-dir={temp_dir}", "--block"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)]
    try:
        time.sleep(8)
        nodes.append(subprocess.Popen([ray_cli, "start", f"--address={address}", "--num-cpus=1", "--block"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
        check = f"import ray, time\nray.init(address={address!r})\n" \
                "while ray.cluster_resources().get('CPU', 0) < 2: time.sleep(0.5)\nprint(len(ray.nodes()))"
        joined = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120, env=env)
        assert joined.returncode == 0 and joined.stdout.split()[-1] == "2", joined.stderr[-2000:]
        cache = _own_features_cache(tmp_path)
        settings = [sys.executable, "-m", "edgetl.cli", "extract", os.path.dirname(os.path.dirname(digits[0])),
                    "--image-size", "32", "--search", "off", "--tap", "final", "--cache-dir", cache]
        on_ray = subprocess.run(settings + ["--out", str(tmp_path / "ray"), "--engine", "ray", "--ray-address", address],
                                capture_output=True, text=True, timeout=600, env=env)
        assert on_ray.returncode == 0, on_ray.stderr[-2000:]
    finally:
        for node in reversed(nodes):  # ray start --block stops most of its node's processes on SIGTERM
            node.terminate()
            node.wait(timeout=60)
        _end_leftovers(f"EDGETL_TEST_RAY_NODES={marker}".encode())
        shutil.rmtree(temp_dir, ignore_errors=True)
    shutil.rmtree(os.path.join(cache, "features"))
    local = subprocess.run(settings + ["--out", str(tmp_path / "local")], capture_output=True, text=True, timeout=600)
    assert local.returncode == 0, local.stderr[-2000:]
    for name in ("features-32px.parquet", "features-224px.parquet"):
        a, b = pq.read_table(tmp_path / "ray" / name), pq.read_table(tmp_path / "local" / name)
        assert a.column("key").to_pylist() == b.column("key").to_pylist() and a.num_rows == NUM_IMAGES
        assert np.array_equal(np.asarray(a.column("features").to_pylist(), np.float32),
                              np.asarray(b.column("features").to_pylist(), np.float32))
