"""End to end on small synthetic folders: train -> bundle -> device runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from PIL import Image

from edgetl.cli import main
from edgetl.runtime import Predictor
from edgetl.training import train

SIZE = 64


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import make_shapes_folder

    root = tmp_path_factory.mktemp("e2e")
    data = make_shapes_folder(root / "shapes", num_per_class=14)
    (root / "shapes" / "disc" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    result = train(data, root / "run", image_size=SIZE, val_split=0.3, seed=0)
    return data, str(root / "run"), result


def test_bundle_contents(trained):
    data, run, result = trained
    assert sorted(os.listdir(run)) == [".edgetl-run", "README.md", "config.toml", "features.int8.onnx",
                                       "features.onnx", "head.safetensors", "labels.txt", "metrics.json",
                                       "model.int8.onnx", "model.onnx", "plots", "report.html", "search.png",
                                       "train_step.onnx"]
    assert open(os.path.join(run, "labels.txt")).read().split() == ["bars", "checker", "disc"]
    for name in ("model.onnx", "model.int8.onnx"):
        model = onnx.load(os.path.join(run, name))
        meta = {p.key: p.value for p in model.metadata_props}
        assert json.loads(meta["edgetl.labels"]) == ["bars", "checker", "disc"]
        assert json.loads(meta["edgetl.input_spec"])["image_size"] == SIZE
    int8 = onnx.load(os.path.join(run, "model.int8.onnx"))
    assert any(n.op_type == "QuantizeLinear" for n in int8.graph.node)
    int8_weights = [t for t in int8.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert int8_weights and os.path.getsize(os.path.join(run, "model.int8.onnx")) < os.path.getsize(
        os.path.join(run, "model.onnx"))
    # No temporary folder left beside the run.
    assert not [n for n in os.listdir(os.path.dirname(run)) if ".tmp-" in n]


def test_metrics(trained):
    data, run, result = trained
    m = json.load(open(os.path.join(run, "metrics.json")))
    assert m == json.loads(json.dumps(result.metrics))
    assert m["val_accuracy"] >= 0.9
    assert m["agreement_fp32"] >= 0.99 and m["agreement_int8"] >= 0.8
    assert set(m["per_class"]) == {"bars", "checker", "disc"}
    assert {"precision", "recall"} <= set(m["per_class"]["disc"])
    cm = np.asarray(m["confusion_matrix"])
    assert cm.shape == (3, 3) and cm.sum() == m["counts"]["val"]
    assert m["counts"]["images_found"] == 43 and m["counts"]["images_used"] == 42
    assert [s["path"] for s in m["skipped"]] == [os.path.join(data, "disc", "broken.jpg")]
    assert m["counts"]["train"] + m["counts"]["val"] == 42
    assert {"features_s", "head_s", "bundle_s", "total_s"} <= set(m["timings_s"])


def test_predictor_matches_host(trained):
    data, run, result = trained
    pred = Predictor(run)
    paths = result.val_paths
    labels = [p.label for p in pred.predict(paths)]
    truth = [os.path.basename(os.path.dirname(p)) for p in paths]
    assert np.mean([a == b for a, b in zip(labels, truth)]) >= 0.9
    # Arrays and PIL images give the same answer as paths.
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths[:3]]
    assert [p.label for p in pred.predict(arrays)] == labels[:3]
    batch = pred.preprocess(paths[:2])
    assert batch.shape == (2, 3, SIZE, SIZE) and batch.dtype == np.float32
    assert pred.predict_proba(paths[:2]).sum(axis=1) == pytest.approx([1.0, 1.0], abs=1e-5)


def test_cli_predict_and_evaluate_json(trained, capsys):
    data, run, result = trained
    paths = result.val_paths[:4]
    assert main(["predict", run, *paths, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [o["path"] for o in out] == paths
    assert all(set(o) == {"path", "label", "probability"} and 0 <= o["probability"] <= 1 for o in out)
    assert main(["evaluate", run, data, "--json", "--int8"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["n"] == 42 and 0.8 <= ev["accuracy"] <= 1.0
    assert len(ev["skipped"]) == 1
    assert main(["evaluate", run, data]) == 0
    assert "confusion matrix" in capsys.readouterr().out


def test_second_train_extracts_nothing(trained, tmp_path):
    data, run, result = trained
    again = train(data, tmp_path / "run2", image_size=SIZE, val_split=0.3, seed=0)
    assert again.metrics["features"]["extracted"] == 0
    assert again.metrics["features"]["from_cache"] == 42
    assert again.metrics["val_accuracy"] == result.metrics["val_accuracy"]


def test_killed_extraction_resumes(tmp_path, monkeypatch):
    from conftest import make_shapes_folder

    from edgetl.features import extract

    data = make_shapes_folder(tmp_path / "shapes", num_per_class=12, seed=7)
    calls = {"n": 0}
    real = extract.FeatureExtractor.run_batch

    def dying(self, batch):
        calls["n"] += 1
        if calls["n"] > 2:  # the first batch ran at both sizes (64 px and the baseline's 224 px), then death
            raise KeyboardInterrupt  # stands in for the process being killed
        return real(self, batch)

    monkeypatch.setattr(extract.FeatureExtractor, "run_batch", dying)
    monkeypatch.setattr(extract.FeatureCache, "__init__", _small_flush(extract.FeatureCache.__init__))
    with pytest.raises(KeyboardInterrupt):
        train(data, tmp_path / "run", image_size=SIZE, search="off")
    assert not (tmp_path / "run").exists()
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]
    monkeypatch.setattr(extract.FeatureExtractor, "run_batch", real)
    result = train(data, tmp_path / "run", image_size=SIZE, search="off")
    assert result.metrics["features"]["from_cache"] == 32  # the one batch that finished
    assert result.metrics["features"]["extracted"] == 36 - 32


def _small_flush(init):
    def patched(self, folder, flush_rows=512, **kwargs):
        init(self, folder, flush_rows=1, **kwargs)

    return patched


def test_runtime_never_imports_torch():
    code = "import sys, edgetl.runtime; assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_predict_cli_runs_without_torch(trained):
    data, run, result = trained
    code = (
        "import sys; from edgetl.cli import main; rc = main(['predict', sys.argv[1], sys.argv[2], '--json']);"
        "assert 'torch' not in sys.modules; sys.exit(rc)"
    )
    out = subprocess.run([sys.executable, "-c", code, run, result.val_paths[0]], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["label"] in ("bars", "checker", "disc")


def test_imagenet_cli(tmp_path, capsys):
    from skimage import data

    Image.fromarray(data.chelsea()).save(tmp_path / "cat.jpg", quality=92)
    Image.fromarray(data.coffee()).save(tmp_path / "coffee.png")
    assert main(["imagenet", str(tmp_path / "cat.jpg"), str(tmp_path / "coffee.png"), "--top", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [o["path"] for o in out] == [str(tmp_path / "cat.jpg"), str(tmp_path / "coffee.png")]
    assert out[0]["top"][0]["index"] in range(281, 286) and "cat" in out[0]["top"][0]["label"]
    assert out[1]["top"][0] == {"index": 967, "label": "espresso", "probability": pytest.approx(out[1]["top"][0]["probability"])}
    assert len(out[0]["top"]) == 3 and out[0]["top"][0]["probability"] >= out[0]["top"][1]["probability"]


def test_overwrite_replaces_only_when_complete(trained, tmp_path):
    data, run, result = trained
    out = tmp_path / "run"
    train(data, out, image_size=SIZE, search="off")
    stamp = os.path.getmtime(out / "metrics.json")
    assert main(["train", data, "--out", str(out), "--image-size", str(SIZE)]) == 2  # exists, no --overwrite
    assert os.path.getmtime(out / "metrics.json") == stamp
    assert main(["train", data, "--out", str(out), "--image-size", str(SIZE), "--overwrite", "--epochs", "3",
                 "--search", "off"]) == 0
    assert json.load(open(out / "metrics.json"))["config"]["epochs"] == 3


def test_public_api_names_are_functions():
    import edgetl
    import edgetl.evaluation  # noqa: F401  importing submodules must not shadow the API
    import edgetl.training  # noqa: F401

    assert callable(edgetl.train) and edgetl.train.__module__ == "edgetl.training"
    assert callable(edgetl.evaluate) and edgetl.evaluate.__module__ == "edgetl.evaluation"
    assert callable(edgetl.create_backbone) and callable(edgetl.classify_imagenet)


def test_a_run_whose_graphs_are_cached_never_imports_torch(shared_run, tmp_path):
    """The backbone runs in ONNX Runtime, the heads in numpy, the zoo's specs
    are data and quantization needs no symbolic shapes: once the graphs are
    exported (the shared run did it), training imports no torch (~1 s and
    ~220 MB per process)."""
    from clitools import run_torch_free

    out = run_torch_free("train", shared_run.data_dir, "--out", str(tmp_path / "again"), "--image-size", "32")
    assert "wrote " in out
    m = json.load(open(tmp_path / "again" / "metrics.json"))
    assert m["features"]["extracted"] == 0 and m["chosen"] == shared_run.metrics["chosen"]
