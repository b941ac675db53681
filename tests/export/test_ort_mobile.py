"""``edgetl export --format ort``: every ONNX file of a real bundle in ONNX
Runtime's ORT format, loaded back and run against its .onnx here (not only
by the exporter), and the operators it lists compared with the graphs."""

from __future__ import annotations

import importlib
import json
import os
import shutil

import numpy as np
import onnx
import onnx.defs
import onnxruntime as ort
import pytest
from safetensors.numpy import load_file

import edgetl.export.ort_mobile as ort_mobile  # registers "ort"; Python's module cache keeps it to once
from edgetl.errors import BundleError
from edgetl.export import FORMATS, export_model

PAIRS = {"model.ort": "model.onnx", "model.int8.ort": "model.int8.onnx", "features.ort": "features.onnx",
         "features.int8.ort": "features.int8.onnx", "train_step.ort": "train_step.onnx"}


@pytest.fixture(scope="module")
def exported(bundle):
    run_dir, images = bundle
    record = export_model(run_dir, "ort", int8=True, images=images[::4])
    return run_dir, images[::4], record


def _run(path, feeds):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)


def test_registered_once():
    assert FORMATS["ort"] is ort_mobile.export_ort
    assert importlib.import_module("edgetl.export.ort_mobile") is ort_mobile  # no second registration


def test_ort_files_load_and_agree_with_onnx(exported):
    run_dir, images, record = exported
    assert set(record["files"]) == set(PAIRS) and record["file_int8"] == "model.int8.ort"
    assert record["num_check_images"] == len(images)
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    assert metrics["exports"]["ort"] == json.loads(json.dumps(record)) and metrics["val_accuracy"] > 0
    from edgetl.runtime import Predictor

    x = Predictor(run_dir).preprocess(images)
    for ort_name, onnx_name in PAIRS.items():
        path = os.path.join(run_dir, ort_name)
        assert os.path.getsize(path) == record["files"][ort_name]["bytes"] > 0
        with open(path, "rb") as fh:
            assert fh.read(8)[4:8] == b"ORTM"  # the ORT flatbuffer's file identifier, not ONNX protobuf
        if ort_name == "train_step.ort":
            continue
        ref, got = _run(os.path.join(run_dir, onnx_name), {"input": x})[0], _run(path, {"input": x})[0]
        scale = max(1.0, float(np.abs(ref).max()))
        np.testing.assert_allclose(got, ref, atol=(2e-2 if "int8" in ort_name else 1e-4) * scale, rtol=0)
        if ort_name.startswith("model."):
            assert (got.argmax(1) == ref.argmax(1)).all()

    head = load_file(os.path.join(run_dir, "head.safetensors"))
    feeds = {"weight": head["weight"], "bias": head["bias"], "features": head["exemplar_features"].astype(np.float32),
             "labels": head["exemplar_labels"].astype(np.int64), "learning_rate": np.array(0.5, np.float32),
             "l2": np.array(1e-3, np.float32)}
    ref = _run(os.path.join(run_dir, "train_step.onnx"), feeds)
    got = _run(os.path.join(run_dir, "train_step.ort"), feeds)
    for a, b in zip(ref, got):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    assert float(got[2]) > 0  # a loss, the step really ran


def _optimised_graph_ops(onnx_path: str, tmp_path) -> set[tuple[str, str]]:
    """The op types of the graph ONNX Runtime makes of ``onnx_path`` with the
    converter's settings (level all, no NCHWc, int8 QDQ allowed), saved as ONNX."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(tmp_path / ("opt-" + os.path.basename(onnx_path)))
    so.add_session_config_entry("session.qdqisint8allowed", "1")
    ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"], disabled_optimizers=["NchwcTransformer"])
    return {(n.domain or "ai.onnx", n.op_type) for n in onnx.load(so.optimized_model_filepath).graph.node}


def test_operator_lists_match_the_graphs(exported, tmp_path):
    run_dir, _, record = exported
    doc = json.load(open(os.path.join(run_dir, "ort_operators.json")))
    union = set()
    for ort_name, onnx_name in PAIRS.items():
        info = record["files"][ort_name]
        assert doc["files"][ort_name]["required_operators"] == info["required_operators"]
        src = onnx.load(os.path.join(run_dir, onnx_name))
        # the source graph's own operators and opset
        assert info["onnx_ops"] == sorted({f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in src.graph.node})
        opset = {(o.domain or "ai.onnx"): o.version for o in src.opset_import}["ai.onnx"]
        assert info["onnx_opsets"]["ai.onnx"] == opset
        # the .ort's operators: those of the graph ONNX Runtime optimises it to
        required = {(e["domain"], op) for e in info["required_operators"] for op in e["ops"]}
        assert required == _optimised_graph_ops(os.path.join(run_dir, onnx_name), tmp_path), ort_name
        for e in info["required_operators"]:  # each listed at the schema version the model's opset picks
            if e["domain"] == "ai.onnx":
                for op in e["ops"]:
                    assert onnx.defs.get_schema(op, opset, "").since_version == e["opset"], (ort_name, op)
            union |= {(e["domain"], e["opset"], op) for op in e["ops"]}
        missing = info["mobile_package"]["missing"]
        assert info["mobile_package"]["covered"] == (not missing)
        for m in missing:  # not in the old onnxruntime-mobile list, or newer than its opsets 12-15
            domain, rest = m.split(":", 1)
            op, since = rest.split(" (opset ")
            assert op not in ort_mobile.MOBILE_PACKAGE_OPS.get(domain, ()) or int(since.rstrip(")")) > 15
    assert "ai.onnx:OneHot (opset 11)" in record["files"]["train_step.ort"]["mobile_package"]["missing"]
    config = open(os.path.join(run_dir, "ort.required_operators.config")).read()
    listed = {(d, int(v), op) for line in config.splitlines() if not line.startswith("#")
              for d, v, ops in [line.split(";")] for op in ops.split(",")}
    assert listed == union
    assert record["runs_on_cpu_ep"] and "onnxruntime-android" in doc["full_packages"]["packages"]


def test_int8_needs_the_int8_model(bundle, tmp_path):
    run_dir, _ = bundle
    copy = str(tmp_path / "run")
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("*.ort"))
    os.remove(os.path.join(copy, "model.int8.onnx"))
    with pytest.raises(BundleError, match="model.int8.onnx"):
        export_model(copy, "ort", int8=True)
    assert not [f for f in os.listdir(copy) if f.endswith(".ort")]
