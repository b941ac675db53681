"""``edgetl export --format onnx``, and what every format shares: the
bundle check, the check images, a missing converter extra."""

from __future__ import annotations

import json
import os
import sys

import pytest

from edgetl.cli import main
from edgetl.errors import BundleError, DataError, MissingExtraError
from edgetl.export import export_model
from edgetl.export.agreement import check_images


def test_onnx_format_checks_metadata(bundle, capsys):
    run_dir, _ = bundle
    assert main(["export", run_dir, "--format", "onnx", "--int8", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["file"] == "model.onnx" and record["file_int8"] == "model.int8.onnx"
    assert json.load(open(os.path.join(run_dir, "metrics.json")))["exports"]["onnx"] == record
    assert main(["export", run_dir, "--format", "onnx"]) == 0
    assert capsys.readouterr().out.strip() == f"onnx: wrote model.onnx in {run_dir}"
    assert not [f for f in os.listdir(run_dir) if ".tmp" in f]


def test_onnx_format_refuses_labels_that_differ(bundle, tmp_path):
    import shutil

    run_dir = str(tmp_path / "run")
    shutil.copytree(bundle[0], run_dir)
    with open(os.path.join(run_dir, "labels.txt"), "w") as fh:
        fh.write("a\nb\nc\n")
    with pytest.raises(BundleError, match="metadata labels differ from labels.txt"):
        export_model(run_dir, "onnx")


def test_check_images_uses_val_predictions_and_skips_missing(bundle, tmp_path):
    run_dir, images = bundle
    fake = tmp_path / "run"
    fake.mkdir()
    metrics = {"val_predictions": [{"path": images[0]}, {"path": str(tmp_path / "gone.png")}]}
    (fake / "metrics.json").write_text(json.dumps(metrics))
    assert check_images(str(fake)) == [images[0]]
    (fake / "metrics.json").write_text("{}")
    with pytest.raises(DataError, match="--images"):
        check_images(str(fake))


def test_check_images_from_files_and_folders(bundle, tmp_path):
    _, images = bundle
    folder = os.path.dirname(images[0])
    got = check_images(str(tmp_path), [folder, images[-1]], limit=1000)
    assert got[:-1] == sorted(p for p in images if os.path.dirname(p) == folder) and got[-1] == images[-1]
    assert len(check_images(str(tmp_path), [folder], limit=3)) == 3
    with pytest.raises(DataError, match="does not exist: pass image files or folders to --images"):
        check_images(str(tmp_path), [str(tmp_path / "nope")])


def test_missing_extra_is_one_line_naming_it(bundle, monkeypatch, capsys):
    run_dir, images = bundle
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # import raises ImportError
    with pytest.raises(MissingExtraError, match=r'pip install "edgetl\[tflite\]"'):
        export_model(run_dir, "tflite", images=images)
    monkeypatch.setitem(sys.modules, "coremltools", None)
    assert main(["export", run_dir, "--format", "coreml"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and 'pip install "edgetl[coreml]"' in err and "Traceback" not in err


def test_not_a_bundle(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), "--format", "tflite"]) == 2
    assert "RUN_DIR" in capsys.readouterr().err
    (tmp_path / "run").mkdir()
    with pytest.raises(BundleError, match="has no model.onnx: pass the RUN_DIR"):
        export_model(tmp_path / "run", "onnx")
