"""Nothing silently wrong (issue 18): a run whose result fails its own
checks is refused in one line, exit 2, nothing published, the previous run
kept. The exported model.onnx must agree with the host (it computes the
host's own arithmetic); weights and outputs must be finite; an image that
disappears mid-run is named; a damaged cached graph is rebuilt.

Each refusal is reproduced for real: the wrong-but-valid cache by handing the
head another image's features (what a shard of swapped rows with a matching
digest would do), divergence by an absurd learning rate, the vanished image
by deleting it just before the step that reads it again."""

from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import onnxruntime as ort
import pytest

import edgetl
from edgetl.cli import main
from edgetl.errors import DataError
from edgetl.features.cache import FeatureCache
from edgetl.training import bundle as bundle_mod
from edgetl.training import head_path
from imagefiles import snapshot

SIZE = 32
FAST = ["--image-size", str(SIZE), "--search", "off"]


def error_line(err: str) -> str:
    """The CLI's one error line, no traceback, no 'internal error'."""
    assert "Traceback" not in err and "internal error" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("edgetl: error:")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    return errors[0]


@pytest.fixture
def previous(shared_run, tmp_path):
    """A copy of a finished run: what must still be there after a refusal."""
    run = tmp_path / "run"
    shutil.copytree(shared_run.run_dir, run)
    return str(run), snapshot(run)


@pytest.fixture
def tiny(tmp_path):
    from conftest import make_shapes_folder

    return make_shapes_folder(tmp_path / "shapes", num_per_class=6, size=SIZE, seed=81)


def refused(tmp_path, previous, capsys, data, *flags) -> str:
    """``edgetl train`` over the previous run (--overwrite): exit 2, one line,
    the previous run untouched, no temporary folder left. Returns the line."""
    run, before = previous
    code = main(["train", data, "--out", run, "--overwrite", *FAST, *flags])
    err = capsys.readouterr().err
    line = error_line(err)
    assert code == 2, err
    assert snapshot(run) == before
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n or ".old-" in n]
    return line


# --------------------------------------------------------------------------- the host's features are not the model's


def test_head_trained_on_other_images_features_is_refused(tmp_path, previous, tiny, capsys, monkeypatch):
    """The cache hands every image the features of the image at the same
    place in the next class (a shard of swapped rows whose digest was made to
    match). Before: 'val accuracy 100 %', exit 0, only 'agree 33 %' to tell."""
    real_get = FeatureCache.get
    per_class = 6

    def next_class_rows(self, keys):
        rows = real_get(self, keys)
        return rows[np.roll(np.arange(len(rows)), per_class)] if len(rows) == 3 * per_class else rows

    monkeypatch.setattr(FeatureCache, "get", next_class_rows)
    line = refused(tmp_path, previous, capsys, tiny)
    assert "model.onnx agrees with the host's predictions on only" in line
    assert "nothing was published" in line and "delete the feature cache" in line


# --------------------------------------------------------------------------- NaN


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0, 0.0])
def test_bad_learning_rate_refused_through_train(tmp_path, tiny, bad):
    with pytest.raises(DataError, match="--learning-rate must be"):
        edgetl.train(tiny, tmp_path / "out", learning_rate=bad)
    assert not (tmp_path / "out").exists()


def test_diverged_training_is_refused(tmp_path, previous, tiny, capsys):
    """Before: a bundle answering NaN for every image (or 'damaged weights', said of a bundle just made)."""
    line = refused(tmp_path, previous, capsys, tiny, "--learning-rate", "1e30")
    assert "training diverged" in line and "NaN or Inf" in line
    assert "lower --learning-rate (now 1e+30)" in line


def test_absurd_learning_rate_diverges_instead_of_overflowing():
    """learning_rate = 1e300 raised torch's RuntimeError ('internal error');
    now the weights diverge to NaN/Inf, which the run refuses (above)."""
    from edgetl.heads.softmax import SoftmaxHead

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 5)).astype(np.float32), np.repeat([0, 1, 2], 20)
    head = SoftmaxHead(epochs=2, learning_rate=1e300).fit(X, y, num_classes=3)
    assert not np.isfinite(head.coef_).all()


def test_check_finite_names_what_is_not_finite():
    bundle_mod.check_finite("fix it", head_weights=np.ones(3))  # finite: nothing happens
    with pytest.raises(edgetl.errors.ResultCheckError, match=r"^training diverged \(NaN or Inf in the head bias\); "
                                                              r"nothing was published; fix it$"):
        bundle_mod.check_finite("fix it", head_weights=np.ones(3), head_bias=np.array([0.0, np.inf]))


# --------------------------------------------------------------------------- an image that disappears mid-run


def test_image_deleted_during_bundle_export_is_named(tmp_path, previous, tiny, capsys, monkeypatch):
    """int8 calibration reads the images again. Before: 'Cannot write the
    bundle (No such file or directory) ... check the disk'."""
    real = head_path.calibration_batches
    gone = []

    def delete_first(paths, *args, **kwargs):
        gone.append(paths[0])
        os.unlink(paths[0])
        return real(paths, *args, **kwargs)

    monkeypatch.setattr(head_path, "calibration_batches", delete_first)
    line = refused(tmp_path, previous, capsys, tiny)
    assert line == f"edgetl: error: image {gone[0]} disappeared during the run (renamed or deleted?); run again"


def test_image_deleted_before_the_agreement_check_is_named(shared_run, tmp_path):
    rows = shared_run.metrics["val_predictions"]
    labels = shared_run.metrics["labels"]
    paths = []
    for i, row in enumerate(rows):  # copies: the shared data folder is never touched
        paths.append(str(tmp_path / f"{i}.png"))
        shutil.copyfile(row["path"], paths[-1])
    y = np.array([labels.index(r["label"]) for r in rows])
    host = np.array([labels.index(r["predicted"]) for r in rows])
    assert bundle_mod.check_agreement(shared_run.run_dir, paths, host, y, seed=0)["agreement_n"] == len(rows)
    os.unlink(paths[1])
    with pytest.raises(DataError, match=r"^image .*1\.png disappeared during the run \(renamed or deleted\?\); "
                                        r"run again$"):
        bundle_mod.check_agreement(shared_run.run_dir, paths, host, y, seed=0)


def test_a_real_read_error_is_not_called_a_disappearance(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(b"not an image")
    with pytest.raises(DataError, match="not a readable image"):
        bundle_mod.calibration_batches([str(path)], edgetl.data.input_spec.InputSpec(image_size=SIZE), seed=0)


# --------------------------------------------------------------------------- a damaged cached graph


@pytest.fixture(scope="module")
def cached_graph():
    from edgetl.export.backbone_onnx import export_backbone
    from edgetl.zoo import get_spec

    return export_backbone("efficientnet_lite0", input_spec=get_spec("efficientnet_lite0").input_spec.replace(
        image_size=SIZE), taps=True)


def _damaged_copy(graph, cache_dir, how: str) -> str:
    from edgetl.export.backbone_onnx import DIGEST_SUFFIX

    folder = os.path.join(cache_dir, "models")
    os.makedirs(folder)
    path = os.path.join(folder, os.path.basename(graph.onnx_path))
    data = open(graph.onnx_path, "rb").read()
    if how.startswith("truncated"):
        data = data[: len(data) // 2]
    else:  # one weight byte flipped: still a valid protobuf, other features
        data = data[: len(data) - 100] + bytes([data[-100] ^ 0x40]) + data[len(data) - 99:]
    open(path, "wb").write(data)
    if "digest" in how:
        shutil.copyfile(graph.onnx_path + DIGEST_SUFFIX, path + DIGEST_SUFFIX)
    return path


@pytest.mark.parametrize("how", ["truncated, cached before digests", "truncated", "a byte flipped"])
def test_damaged_cached_graph_is_detected(cached_graph, tmp_path, how):
    from edgetl.export.backbone_onnx import _cached_outputs

    path = _damaged_copy(cached_graph, str(tmp_path), how if how.startswith("truncated, cached") else how + ", digest")
    outputs, damage = _cached_outputs(path, cached_graph.taps)
    assert outputs is None and damage


def test_whole_graph_cached_before_digests_is_adopted(cached_graph, tmp_path):
    from edgetl.export.backbone_onnx import DIGEST_SUFFIX, _cached_outputs

    path = str(tmp_path / os.path.basename(cached_graph.onnx_path))
    shutil.copyfile(cached_graph.onnx_path, path)
    outputs, damage = _cached_outputs(path, cached_graph.taps)
    assert damage is None and outputs[-1] == "features"
    assert open(path + DIGEST_SUFFIX).read() == open(cached_graph.onnx_path + DIGEST_SUFFIX).read()


def test_truncated_cached_graph_is_rebuilt(cached_graph, tmp_path, caplog):
    """Before: 'internal error: DecodeError' on every run, no hint to clear the cache."""
    from edgetl.export.backbone_onnx import export_backbone

    path = _damaged_copy(cached_graph, str(tmp_path), "truncated, digest")
    with caplog.at_level(logging.WARNING, logger="edgetl"):
        graph = export_backbone("efficientnet_lite0", input_spec=cached_graph.input_spec, cache_dir=str(tmp_path),
                                taps=True)
    assert graph.onnx_path == path
    assert any("is damaged" in r.getMessage() and path in r.getMessage() for r in caplog.records)
    x = np.random.default_rng(0).normal(size=(2, 3, SIZE, SIZE)).astype(np.float32)
    rebuilt = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(["features"], {"input": x})[0]
    original = ort.InferenceSession(cached_graph.onnx_path, providers=["CPUExecutionProvider"]).run(
        ["features"], {"input": x})[0]
    np.testing.assert_allclose(rebuilt, original, atol=1e-4)
    from edgetl.export.backbone_onnx import DIGEST_SUFFIX, _cached_outputs

    assert sorted(os.listdir(os.path.dirname(path))) == sorted([os.path.basename(path), "taps.json",
                                                                os.path.basename(path) + DIGEST_SUFFIX])
    assert _cached_outputs(path, graph.taps)[1] is None  # the new digest is the new file's


def test_a_wrong_record_of_the_taps_only_costs_a_check(cached_graph, tmp_path):
    """taps.json (the tap names recorded so that a cached run needs no torch)
    edited or stale: the graph is found under the real names, and the record
    is corrected."""
    import json

    from edgetl.export.backbone_onnx import EXPORT_VERSION, export_backbone

    folder = os.path.dirname(cached_graph.onnx_path)
    record = os.path.join(folder, "taps.json")
    with open(record, "w") as fh:
        json.dump({f"efficientnet_lite0/v{EXPORT_VERSION}": ["block1", "nonsense"]}, fh)
    graph = export_backbone("efficientnet_lite0", input_spec=cached_graph.input_spec,
                            cache_dir=os.path.dirname(folder), taps=True)
    assert graph.onnx_path == cached_graph.onnx_path and graph.taps == cached_graph.taps
    assert json.load(open(record))[f"efficientnet_lite0/v{EXPORT_VERSION}"] == list(cached_graph.taps)


@pytest.mark.slow
def test_fine_tuning_whose_optimizer_overflows_is_refused(tmp_path, tiny, capsys):
    """--strategy bias, learning rate 1e300: torch's optimizer raised
    'value cannot be converted to type float without overflow' (internal error)."""
    run = tmp_path / "run"
    code = main(["train", tiny, "--out", str(run), *FAST, "--strategy", "bias", "--epochs", "1",
                 "--learning-rate", "1e300"])
    line = error_line(capsys.readouterr().err)
    assert code == 2 and "training diverged" in line and "--overwrite" in line
    assert not run.exists()
