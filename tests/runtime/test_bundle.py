"""``runtime.bundle``, the one reader of a run folder: the device's checked
bundle (read_bundle, read_device_files) and the host's view of the folder
(read_run, read_metrics) that export and report use."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgetl.errors import BundleError
from edgetl.runtime import Predictor
from edgetl.runtime.bundle import read_bundle, read_device_files, read_metrics, read_run
from clitools import one_line_refusal


@pytest.fixture
def run(shared_run, tmp_path):
    dst = str(tmp_path / "run")
    shutil.copytree(shared_run.run_dir, dst)
    return dst


def test_read_run_is_the_folder_as_export_and_report_see_it(shared_run):
    got = read_run(shared_run.run_dir)
    metrics = json.load(open(os.path.join(shared_run.run_dir, "metrics.json")))
    assert got.labels == ["bars", "checker", "disc"] and got.metrics == metrics
    assert got.input_spec == metrics["input_spec"] and got.run_dir == shared_run.run_dir
    bundle = read_bundle(shared_run.run_dir)
    assert bundle.labels == got.labels and bundle.input_spec.image_size == got.input_spec["image_size"] == 32


def test_read_run_refusals(run, tmp_path):
    fix = "pass the RUN_DIR written by 'edgetl train'"
    with pytest.raises(BundleError, match=f"is not a folder: {fix}"):
        read_run(str(tmp_path / "nope"))
    with pytest.raises(BundleError, match=f"has no metrics.json: {fix}"):  # the report's message for no folder
        read_run(str(tmp_path / "nope"), complete=False)
    with open(os.path.join(run, "metrics.json"), "w") as fh:
        fh.write("{not json")
    with pytest.raises(BundleError, match=r"metrics.json is not valid JSON \(.*\); re-run 'edgetl train'"):
        read_metrics(run)
    for name in ("metrics.json", "labels.txt", "model.onnx"):
        os.remove(os.path.join(run, name))
        with pytest.raises(BundleError, match=f"has no {name}: {fix}"):
            read_run(run)


def test_read_run_for_a_report_takes_labels_from_metrics_and_spec_from_the_model(run):
    metrics = json.load(open(os.path.join(run, "metrics.json")))
    spec = metrics.pop("input_spec")
    with open(os.path.join(run, "metrics.json"), "w") as fh:
        json.dump(metrics, fh)
    assert read_run(run).input_spec == spec  # an older run: the InputSpec in model.onnx's metadata
    os.remove(os.path.join(run, "labels.txt"))
    assert read_run(run, complete=False).labels == metrics["labels"]
    metrics.pop("labels")
    with open(os.path.join(run, "metrics.json"), "w") as fh:
        json.dump(metrics, fh)
    with pytest.raises(BundleError, match="has no labels.txt"):
        read_run(run, complete=False)


def _external(name: str, location: str) -> TensorProto:
    t = numpy_helper.from_array(np.ones(2, np.float32), name)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    entry = t.external_data.add()
    entry.key, entry.value = "location", location
    return t


@pytest.mark.parametrize("where", ["constant", "subgraph"])
def test_external_data_hidden_in_the_graph_is_refused(run, where):
    """Not only initializers: a Constant node or a branch of an If may name a side file too."""
    path = os.path.join(run, "model.onnx")
    model = onnx.load(path)
    tensor = _external("hidden", "../../secret.bin")
    if where == "constant":
        node = helper.make_node("Constant", [], ["unused"], value=tensor)
    else:
        branch = helper.make_graph([helper.make_node("Identity", ["hidden"], ["o"])], "b", [],
                                   [helper.make_tensor_value_info("o", TensorProto.FLOAT, [2])], [tensor])
        node = helper.make_node("If", ["cond"], ["unused"], then_branch=branch, else_branch=branch)
    model.graph.node.append(node)
    onnx.save(model, path)
    with pytest.raises(BundleError, match="reads tensor 'hidden' from '../../secret.bin', outside its own folder"):
        Predictor(run)


def test_device_files_that_are_not_onnx(run):
    with open(os.path.join(run, "train_step.onnx"), "wb") as fh:
        fh.write(b"\x3a\xff\xff\xff")
    with pytest.raises(BundleError, match="train_step.onnx' is not a readable ONNX model; train it again"):
        read_device_files(run)


def test_model_that_is_not_onnx(run):
    with open(os.path.join(run, "model.onnx"), "wb") as fh:
        fh.write(b"\x08" + b"\xff" * 12)
    with pytest.raises(BundleError, match="model.onnx' is not a readable ONNX model; pass a folder written by"):
        read_bundle(run)


def test_metadata_that_is_not_utf8_is_damaged(run):
    path = os.path.join(run, "model.onnx")
    data = open(path, "rb").read().replace(b'"bars"', b'"b\xffrs"', 1)
    with open(path, "wb") as fh:
        fh.write(data)
    with pytest.raises(BundleError, match="has damaged edgetl metadata"):
        read_bundle(run)


# ---------------------------------------------------------------- issue 18: numbers and parts that do not fit




def _rewrite_safetensors(path: str, change) -> None:
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(path, framework="numpy") as fh:
        arrays = {key: fh.get_tensor(key) for key in fh.keys()}
        meta = fh.metadata()
    change(arrays)
    save_file(arrays, path, metadata=meta)


@pytest.mark.parametrize("key, value", [("weight", np.nan), ("bias", np.inf), ("mean", -np.inf),
                                        ("exemplar_features", np.nan)])
def test_head_that_is_not_finite_is_refused_when_opened(run, shared_run, tmp_path, capsys, key, value):
    def poison(arrays):
        arrays[key].reshape(-1)[0] = value

    _rewrite_safetensors(os.path.join(run, "head.safetensors"), poison)
    with pytest.raises(BundleError, match=rf"head.safetensors' holds values that are not finite numbers .* '{key}'"):
        read_device_files(run)
    image = os.path.join(shared_run.data_dir, "disc", "000.png")
    one_line_refusal(["device", "add", run, str(tmp_path / "state"), "--label", "x", image], capsys,
                      "head.safetensors", "not finite")
    assert not (tmp_path / "state").exists()


def test_head_that_cannot_be_used_is_refused(run):
    path = os.path.join(run, "head.safetensors")
    _rewrite_safetensors(path, lambda arrays: arrays["scale"].__setitem__(0, 0.0))
    with pytest.raises(BundleError, match="head.safetensors' holds a standardisation 'scale' of 0 or less"):
        read_device_files(run)
    _rewrite_safetensors(path, lambda arrays: arrays["scale"].__setitem__(0, 1.0))
    read_device_files(run)
    _rewrite_safetensors(path, lambda arrays: arrays["exemplar_labels"].__setitem__(0, 99))  # names no class
    with pytest.raises(BundleError, match="head.safetensors' does not match the bundle's 3 labels"):
        read_device_files(run)
    _rewrite_safetensors(path, lambda arrays: arrays["exemplar_labels"].__setitem__(0, 0))
    read_device_files(run)
    # An exemplar_optimism that does not fit the exemplars (one value short).
    _rewrite_safetensors(path, lambda arrays: arrays.__setitem__("exemplar_optimism", arrays["exemplar_optimism"][:-1]))
    with pytest.raises(BundleError, match="head.safetensors' does not match the bundle's 3 labels"):
        read_device_files(run)


def _set_dims(path: str, where: str, name: str, index: int, value: int) -> None:
    model = onnx.load(path)
    for value_info in getattr(model.graph, where):
        if value_info.name == name:
            value_info.type.tensor_type.shape.dim[index].dim_value = value
    onnx.save(model, path)


@pytest.mark.parametrize("int8", [False, True])
def test_features_model_of_another_input_size_is_refused_when_opened(run, shared_run, tmp_path, capsys, int8):
    """Item 14: features.onnx taking 64 px images in a bundle whose model and spec take 32 px
    (the feature model of another run copied in) was an internal error at the first image."""
    name = "features.int8.onnx" if int8 else "features.onnx"
    _set_dims(os.path.join(run, name), "input", "input", 2, 64)
    with pytest.raises(BundleError, match=rf"{name}' does not take 'input' images of \[3, 32, 32\]"):
        read_device_files(run, int8=int8)
    image = os.path.join(shared_run.data_dir, "disc", "000.png")
    one_line_refusal(["device", "add", run, str(tmp_path / "state"), "--label", "x", image]
                      + (["--int8"] if int8 else []), capsys, name, "does not take 'input' images")


def test_features_of_another_width_than_the_head_are_refused(run):
    width = read_device_files(run).head["weight"].shape[1]
    _set_dims(os.path.join(run, "features.onnx"), "output", "features", 1, width + 1)
    with pytest.raises(BundleError, match=rf"features.onnx' does not output 'features' of {width} values"):
        read_device_files(run)
    shutil.copy(os.path.join(run, "features.int8.onnx"), os.path.join(run, "features.onnx"))
    _set_dims(os.path.join(run, "train_step.onnx"), "input", "weight", 1, width + 1)
    with pytest.raises(BundleError, match=rf"train_step.onnx' does not train a head on {width} features"):
        read_device_files(run)


def test_model_with_nan_weights_is_refused_not_printed(run, shared_run, capsys):
    """Item 8: a model.onnx whose weights are NaN gave label 0 with probability
    NaN, and '--json' printed NaN (not JSON)."""
    path = os.path.join(run, "model.onnx")
    model = onnx.load(path)
    for init in model.graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(np.full_like(numpy_helper.to_array(init), np.nan), init.name))
    onnx.save(model, path)
    image = os.path.join(shared_run.data_dir, "disc", "000.png")
    with pytest.raises(BundleError, match="model.onnx' computed probabilities that are not numbers"):
        Predictor(run).predict([image])
    out = one_line_refusal(["predict", run, image, "--json"], capsys, "model.onnx", "not numbers")
    assert "NaN" not in out
