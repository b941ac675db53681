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
