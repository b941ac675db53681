"""User errors on the command line: one line on stderr, exit code 2, no
traceback (unless --verbose), and nothing written or left half-written.

Every case fails before any model work, so no backbone is exported here."""

from __future__ import annotations

import os
import subprocess
import sys

import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from edgetl.cli import main
from imagefiles import snapshot


def make_image(path, color=(120, 40, 200), size=(20, 16)) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, color).save(path)


def make_folder(root, classes=("cat", "dog"), per_class=3) -> str:
    for c, cls in enumerate(classes):
        for i in range(per_class):
            make_image(os.path.join(root, cls, f"{i}.png"), color=(40 * c, 10 * i, 90))
    return str(root)


def run_main(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_user_error(code, out, err, *needles):
    assert code == 2, (code, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("edgetl: error: "), err
    assert "Traceback" not in err
    assert out == ""
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def assert_no_run_left(out_dir) -> None:
    out_dir = os.fspath(out_dir)
    parent, base = os.path.dirname(os.path.abspath(out_dir)), os.path.basename(os.path.abspath(out_dir))
    assert not os.path.exists(out_dir)
    if os.path.isdir(parent):
        leftovers = [n for n in os.listdir(parent) if n.startswith(f".{base}.tmp-") or n.startswith(f"{base}.old-")]
        assert leftovers == []


# --------------------------------------------------------------------------- train: the data folder


def _train_fails(capsys, tmp_path, data, *needles, extra=()):
    out_dir = tmp_path / "run"
    before = snapshot(data) if os.path.isdir(data) else None
    code, out, err = run_main(capsys, ["train", str(data), "--out", str(out_dir), *extra])
    line = assert_user_error(code, out, err, *needles)
    if before is not None:
        assert snapshot(data) == before
    assert_no_run_left(out_dir)
    return line


def test_train_missing_data_folder(capsys, tmp_path):
    missing = tmp_path / "no-such-photos"
    _train_fails(capsys, tmp_path, missing, "does not exist", str(missing))
    assert not missing.exists()


def test_train_data_is_a_file(capsys, tmp_path):
    f = tmp_path / "photo.png"
    make_image(f)
    before = f.read_bytes()
    _train_fails(capsys, tmp_path, f, "is a file", "photo.png")
    assert f.read_bytes() == before


def test_train_empty_folder(capsys, tmp_path):
    data = tmp_path / "photos"
    data.mkdir()
    _train_fails(capsys, tmp_path, data, "no class sub-folders")
    assert os.listdir(data) == []


def test_train_loose_images_no_classes(capsys, tmp_path):
    data = tmp_path / "photos"
    for i in range(3):
        make_image(data / f"{i}.jpg")
    _train_fails(capsys, tmp_path, data, "no class sub-folders", "3 loose files")


def test_train_one_class(capsys, tmp_path):
    data = make_folder(tmp_path / "photos", classes=("cat",))
    _train_fails(capsys, tmp_path, data, "1 class", "'cat'", "at least 2")


def test_train_empty_class_folder(capsys, tmp_path):
    data = make_folder(tmp_path / "photos")
    os.makedirs(os.path.join(data, "empty_class"))
    _train_fails(capsys, tmp_path, data, "empty_class", "has no images")


def test_train_class_with_only_non_images(capsys, tmp_path):
    data = make_folder(tmp_path / "photos")
    docs = os.path.join(data, "docs")
    os.makedirs(docs)
    with open(os.path.join(docs, "notes.txt"), "w") as fh:
        fh.write("not an image")
    Image.new("RGB", (8, 8)).save(os.path.join(docs, "scan.tiff"))
    before = snapshot(data)
    out_dir = tmp_path / "run"
    code = main(["train", data, "--out", str(out_dir)])
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.splitlines()
    # one warning per skipped file, then the error as the last line
    assert lines[-1].startswith("edgetl: error: ")
    assert "docs" in lines[-1] and "has no images" in lines[-1]
    assert all(line.startswith("edgetl: warning: skipped") for line in lines[:-1])
    assert len(lines) == 3
    assert "Traceback" not in captured.err
    assert snapshot(data) == before
    assert_no_run_left(out_dir)


# --------------------------------------------------------------------------- train: options


@pytest.mark.parametrize("name,suggestion", [("efficientnet-lite0", "efficientnet_lite0"),
                                             ("EfficientNet_Lite0", "efficientnet_lite0"),
                                             ("efficientnet_lite", "efficientnet_lite"),
                                             ("resnet-50", "resnet50")])
def test_train_unknown_backbone_suggests(capsys, tmp_path, name, suggestion):
    data = make_folder(tmp_path / "photos")
    line = _train_fails(capsys, tmp_path, data, f"'{name}'", f"Did you mean '{suggestion}",
                        extra=["--backbone", name])
    assert "edgetl models" in line


def test_train_unknown_backbone_without_close_match(capsys, tmp_path):
    data = make_folder(tmp_path / "photos")
    line = _train_fails(capsys, tmp_path, data, "Unknown backbone 'transformer9000'",
                        extra=["--backbone", "transformer9000"])
    assert "Did you mean" not in line


@pytest.mark.parametrize("value", ["0", "1", "-0.2", "1.5"])
def test_train_val_split_out_of_range(capsys, tmp_path, value):
    data = make_folder(tmp_path / "photos")
    _train_fails(capsys, tmp_path, data, "--val-split", "between 0 and 1", extra=["--val-split", value])


def test_train_bad_epochs_and_image_size(capsys, tmp_path):
    data = make_folder(tmp_path / "photos")
    _train_fails(capsys, tmp_path, data, "--epochs", extra=["--epochs", "0"])
    _train_fails(capsys, tmp_path, data, "--image-size", extra=["--image-size", "8"])


@pytest.mark.parametrize("inside", [".", "run", os.path.join("cat", "run")])
def test_train_out_inside_data_folder(capsys, tmp_path, inside):
    data = make_folder(tmp_path / "photos")
    before = snapshot(data)
    out_dir = os.path.normpath(os.path.join(data, inside))
    code, out, err = run_main(capsys, ["train", data, "--out", out_dir, "--overwrite"])
    assert_user_error(code, out, err, "inside the data folder")
    assert snapshot(data) == before


def test_train_out_containing_data_folder(capsys, tmp_path):
    # --overwrite would have replaced the project folder, photos and all.
    project = tmp_path / "project"
    data = make_folder(project / "photos")
    before = snapshot(project)
    code, out, err = run_main(capsys, ["train", data, "--out", str(project), "--overwrite"])
    assert_user_error(code, out, err, "contains the data folder")
    assert snapshot(project) == before


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_train_out_inside_data_folder_through_symlink(capsys, tmp_path):
    data = make_folder(tmp_path / "photos")
    link = tmp_path / "link"
    os.symlink(data, link)
    before = snapshot(data)
    code, out, err = run_main(capsys, ["train", data, "--out", str(link / "run")])
    assert_user_error(code, out, err, "inside the data folder")
    assert snapshot(data) == before


def test_train_out_exists_without_overwrite(capsys, tmp_path):
    data = make_folder(tmp_path / "photos")
    out_dir = tmp_path / "run"
    out_dir.mkdir()
    (out_dir / "keep.txt").write_text("previous run")
    before_data, before_out = snapshot(data), snapshot(out_dir)
    code, out, err = run_main(capsys, ["train", data, "--out", str(out_dir)])
    assert_user_error(code, out, err, "already exists", "--overwrite")
    assert snapshot(data) == before_data
    assert snapshot(out_dir) == before_out
    assert [n for n in os.listdir(tmp_path) if ".tmp-" in n or ".old-" in n] == []


def test_train_out_is_a_file(capsys, tmp_path):
    data = make_folder(tmp_path / "photos")
    out_file = tmp_path / "run"
    out_file.write_text("not a folder")
    code, out, err = run_main(capsys, ["train", data, "--out", str(out_file)])
    assert_user_error(code, out, err, "already exists")
    code, out, err = run_main(capsys, ["train", data, "--out", str(out_file), "--overwrite"])
    assert_user_error(code, out, err, "is a file")
    assert out_file.read_text() == "not a folder"


def test_train_missing_weights_file(capsys, tmp_path):
    data = make_folder(tmp_path / "photos")
    missing = tmp_path / "nope.pth"
    _train_fails(capsys, tmp_path, data, "nope.pth", "does not exist", extra=["--weights", str(missing)])


# --------------------------------------------------------------------------- predict / evaluate: RUN_DIR


def _bundle_cases(tmp_path):
    """RUN_DIR variants that are not bundles -> the phrase the error names."""
    cases = {}
    cases["missing"] = (tmp_path / "no-run", "does not exist")
    empty = tmp_path / "empty-run"
    empty.mkdir()
    cases["empty"] = (empty, "model.onnx is missing")
    no_labels = tmp_path / "no-labels"
    no_labels.mkdir()
    (no_labels / "model.onnx").write_bytes(b"\x08\x07")
    cases["no_labels"] = (no_labels, "labels.txt is missing")
    garbage = tmp_path / "garbage-run"
    garbage.mkdir()
    (garbage / "model.onnx").write_bytes(b"definitely not protobuf" * 10)
    (garbage / "labels.txt").write_text("cat\ndog\n")
    cases["garbage"] = (garbage, "not a readable ONNX model")
    plain = tmp_path / "plain-onnx"
    plain.mkdir()
    node = helper.make_node("Identity", ["input"], ["probabilities"])
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 2])],
    )
    onnx.save(helper.make_model(graph), str(plain / "model.onnx"))
    (plain / "labels.txt").write_text("cat\ndog\n")
    cases["plain_onnx"] = (plain, "no edgetl metadata")
    return cases


CASES = ["missing", "empty", "no_labels", "garbage", "plain_onnx"]


@pytest.mark.parametrize("case", CASES)
def test_predict_bad_run_dir(capsys, tmp_path, case):
    run_dir, needle = _bundle_cases(tmp_path)[case]
    img = tmp_path / "x.png"
    make_image(img)
    before = snapshot(run_dir) if run_dir.exists() else None
    code, out, err = run_main(capsys, ["predict", str(run_dir), str(img)])
    assert_user_error(code, out, err, needle, os.path.basename(run_dir))
    if before is not None:
        assert snapshot(run_dir) == before
    else:
        assert not run_dir.exists()


@pytest.mark.parametrize("case", CASES)
def test_evaluate_bad_run_dir(capsys, tmp_path, case):
    run_dir, needle = _bundle_cases(tmp_path)[case]
    data = make_folder(tmp_path / "photos")
    before = snapshot(data)
    code, out, err = run_main(capsys, ["evaluate", str(run_dir), data])
    assert_user_error(code, out, err, needle)
    assert snapshot(data) == before


def test_predict_int8_missing(capsys, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "model.onnx").write_bytes(b"x")
    (run_dir / "labels.txt").write_text("a\nb\n")
    img = tmp_path / "x.png"
    make_image(img)
    code, out, err = run_main(capsys, ["predict", str(run_dir), str(img), "--int8"])
    assert_user_error(code, out, err, "model.int8.onnx is missing")


# --------------------------------------------------------------------------- argparse and the real script


def test_no_command_prints_help_and_returns_2(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out.lower()


def test_argparse_errors_exit_2(capsys):
    assert main(["train", "photos"]) == 2  # --out is required (on the command line or in --config)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out" in err[0]
    with pytest.raises(SystemExit) as exc:
        main(["train", "photos", "--out", "run", "--epochs", "many"])
    assert exc.value.code == 2
    assert "--epochs" in capsys.readouterr().err


def test_console_script_one_line_no_traceback(tmp_path):
    data = make_folder(tmp_path / "photos", classes=("only",))
    before = snapshot(data)
    out_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "edgetl.cli", "train", data, "--out", str(out_dir)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("edgetl: error:")
    assert "at least 2" in lines[0]
    assert "Traceback" not in proc.stderr
    assert snapshot(data) == before
    assert_no_run_left(out_dir)
    assert sorted(os.listdir(tmp_path)) == ["photos"]


def test_console_script_verbose_shows_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "edgetl.cli", "predict", str(tmp_path / "no-run"), "x.png", "--verbose"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr
    assert "BundleError" in proc.stderr
    assert "does not exist" in proc.stderr
    assert os.listdir(tmp_path) == []
