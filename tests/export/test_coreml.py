"""``edgetl export --format coreml``: converted, and its spec inspected
(Core ML predictions need macOS)."""

from __future__ import annotations

import json
import os

import pytest

from edgetl.export import export_model
from edgetl.export.coreml import inspect_coreml


@pytest.mark.slow  # a Core ML conversion: the full suite
def test_coreml_image_classifier_spec(bundle):
    run_dir, _ = bundle
    record = export_model(run_dir, "coreml", int8=True)
    labels = open(os.path.join(run_dir, "labels.txt")).read().split()
    for name in ("model.mlpackage", "model.int8.mlpackage"):
        info = inspect_coreml(os.path.join(run_dir, name))
        (image,) = info["inputs"]
        assert image == {"name": "image", "type": "imageType", "width": 32, "height": 32, "color_space": "RGB"}
        assert {o["name"] for o in info["outputs"]} == {"classLabel", "classLabel_probs"}
        assert info["predicted_feature"] == "classLabel"
        assert info["labels"] == labels
        spec = json.loads(info["metadata"]["edgetl.input_spec"])
        assert spec["mean"] == [127.0, 127.0, 127.0] and spec["image_size"] == 32
    assert record["labels_ok"] and record["labels_ok_int8"]
    assert record["model_mb_int8"] < record["model_mb"]
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    assert metrics["exports"]["coreml"]["file"] == "model.mlpackage"
    assert not [f for f in os.listdir(run_dir) if ".tmp" in f]


def test_coreml_normalisation_is_inside_the_program(bundle):
    """The (pixel - mean) / std step is in the ML Program, so an app feeds raw pixels."""
    import coremltools as ct

    run_dir, _ = bundle
    if not os.path.isdir(os.path.join(run_dir, "model.mlpackage")):
        export_model(run_dir, "coreml")
    spec = ct.utils.load_spec(os.path.join(run_dir, "model.mlpackage"))
    ops = [op for fn in spec.mlProgram.functions.values() for block in fn.block_specializations.values()
           for op in block.operations]
    first = [op.type for op in ops if op.type not in ("const", "cast")][:3]
    assert first[:2] == ["sub", "mul"], first


@pytest.mark.slow  # a second conversion (~4 s): the full suite
def test_coreml_export_over_an_earlier_one(bundle):
    """A second export replaces the package folder whole (no stale files, no debris)."""
    run_dir, _ = bundle
    if not os.path.isdir(os.path.join(run_dir, "model.mlpackage")):
        export_model(run_dir, "coreml")
    stale = os.path.join(run_dir, "model.mlpackage", "stale.txt")
    open(stale, "w").close()
    export_model(run_dir, "coreml")
    assert not os.path.exists(stale)
    assert inspect_coreml(os.path.join(run_dir, "model.mlpackage"))["predicted_feature"] == "classLabel"
    assert not [f for f in os.listdir(run_dir) if ".tmp" in f or ".old" in f]
