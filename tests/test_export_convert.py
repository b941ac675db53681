"""edgetl export: TFLite executed with the LiteRT interpreter against ONNX
Runtime on real images; Core ML converted and its spec inspected."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from edgetl.cli import main
from edgetl.errors import BundleError, DataError, MissingExtraError
from edgetl.export.convert import check_images, export_model, inspect_coreml, run_tflite
from edgetl.export.onnx_torch import load_torch_model


def _shapes(root, num_per_class=14, size=40, seed=1):
    """Three visually distinct RGB classes (discs, bars, checkers) on noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for i in range(num_per_class):
        for cls in ("disc", "bars", "checker"):
            os.makedirs(os.path.join(root, cls), exist_ok=True)
            img = np.clip(rng.normal(rng.integers(60, 200), 20, (size, size, 3)), 0, 255)
            if cls == "disc":
                cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
                img[(yy - cy) ** 2 + (xx - cx) ** 2 < (size // 4) ** 2] = (230, 30, 30)
            elif cls == "bars":
                img[(xx // int(rng.integers(3, 5))) % 2 == 0] = (30, 200, 40)
            else:
                cell = int(rng.integers(4, 7))
                img[((xx // cell) + (yy // cell)) % 2 == 0] = (30, 40, 220)
            Image.fromarray(img.astype(np.uint8)).save(os.path.join(root, cls, f"{i:03d}.png"))
    return str(root)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from edgetl.training import train

    root = tmp_path_factory.mktemp("export")
    data = _shapes(root / "shapes")
    result = train(data, str(root / "run"), image_size=32, progress=False)
    all_images = sorted(str(p) for p in (root / "shapes").rglob("*.png"))
    return str(root / "run"), all_images


def _batch(run_dir, paths):
    from edgetl.runtime import Predictor

    return Predictor(run_dir).preprocess(paths)


def test_onnx_graph_in_torch_matches_onnxruntime(bundle):
    import torch

    run_dir, images = bundle
    x = _batch(run_dir, images[:8])
    module = load_torch_model(os.path.join(run_dir, "model.onnx"))
    with torch.no_grad():
        got = module(torch.from_numpy(x)).numpy()
    ref = ort.InferenceSession(os.path.join(run_dir, "model.onnx")).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_tflite_fp32_and_int8_run_and_agree_with_onnx(bundle):
    run_dir, images = bundle
    record = export_model(run_dir, "tflite", int8=True, images=images)
    assert record["num_check_images"] == len(images)
    assert record["agreement"] >= 0.99
    assert record["agreement_int8"] >= 0.97
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    assert metrics["exports"]["tflite"]["agreement"] == record["agreement"]
    assert 0.0 <= metrics["exports"]["tflite"]["agreement_int8"] <= 1.0
    assert metrics["val_accuracy"] > 0  # the rest of metrics.json is kept

    # Independently of the exporter: run both .tflite files here and compare
    # probabilities with ONNX Runtime on the same preprocessed images.
    x = _batch(run_dir, images)
    ref = ort.InferenceSession(os.path.join(run_dir, "model.onnx")).run(None, {"input": x})[0]
    got = run_tflite(os.path.join(run_dir, "model.tflite"), x)
    np.testing.assert_allclose(got, ref, atol=1e-3)
    ref8 = ort.InferenceSession(os.path.join(run_dir, "model.int8.onnx")).run(None, {"input": x})[0]
    got8 = run_tflite(os.path.join(run_dir, "model.int8.tflite"), x)
    assert (got8.argmax(1) == ref8.argmax(1)).mean() >= 0.97

    # The int8 file really holds int8 kernels, not float ones.
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    num_conv = sum(n.op_type == "Conv" for n in onnx.load(os.path.join(run_dir, "model.onnx")).graph.node)
    interp = Interpreter(model_path=os.path.join(run_dir, "model.int8.tflite"),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    int8_tensors = [t for t in interp.get_tensor_details() if t["dtype"] == np.int8]
    assert num_conv > 0 and len(int8_tensors) >= 2 * num_conv  # int8 weights and outputs per convolution
    assert interp.get_input_details()[0]["shape"].tolist() == [1, 32, 32, 3]
    assert os.path.getsize(os.path.join(run_dir, "model.int8.tflite")) < os.path.getsize(
        os.path.join(run_dir, "model.tflite"))

    sidecar = json.load(open(os.path.join(run_dir, "model.tflite.json")))
    labels = open(os.path.join(run_dir, "labels.txt")).read().split()
    assert sidecar["labels"] == labels == ["bars", "checker", "disc"]
    assert sidecar["input"]["layout"] == "NHWC"
    assert sidecar["input_spec"] == metrics["input_spec"]
    assert not [f for f in os.listdir(run_dir) if ".tmp" in f]


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


def test_onnx_format_checks_metadata(bundle, capsys):
    run_dir, _ = bundle
    assert main(["export", run_dir, "--format", "onnx", "--int8", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["file"] == "model.onnx" and record["file_int8"] == "model.int8.onnx"
    assert json.load(open(os.path.join(run_dir, "metrics.json")))["exports"]["onnx"] == record


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


def test_missing_extra_is_one_line_naming_it(bundle, monkeypatch, capsys):
    run_dir, images = bundle
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # import raises ImportError
    with pytest.raises(MissingExtraError, match=r'pip install "edgetl\[tflite\]"'):
        export_model(run_dir, "tflite", images=images)
    monkeypatch.setitem(sys.modules, "coremltools", None)
    assert main(["export", run_dir, "--format", "coreml"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and 'pip install "edgetl[coreml]"' in err and "Traceback" not in err


def test_not_a_bundle_and_unsupported_graph(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), "--format", "tflite"]) == 2
    assert "RUN_DIR" in capsys.readouterr().err
    node = onnx.helper.make_node("Erf", ["input"], ["probabilities"])
    graph = onnx.helper.make_graph(
        [node], "g", [onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 3])],
        [onnx.helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, [1, 3])])
    path = tmp_path / "m.onnx"
    onnx.save(onnx.helper.make_model(graph), path)
    with pytest.raises(BundleError, match="Erf"):
        load_torch_model(str(path))


def test_gather_where_graph_matches_onnxruntime(tmp_path):
    """The index ops AlexNet's and VGG's adaptive pooling export as."""
    import torch
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(np.array([3, 0, 2], np.int64), "idx"),
        numpy_helper.from_array(rng.random((1, 2, 4, 3)) > 0.5, "cond"),
        numpy_helper.from_array(np.array(-1.0, np.float32), "fill"),
        numpy_helper.from_array(np.array([[[0, 1], [0, 0]], [[0, 0], [0, 1]]], np.int64), "nd"),
    ]
    nodes = [
        helper.make_node("Gather", ["input", "idx"], ["g"], axis=3),
        helper.make_node("Where", ["cond", "g", "fill"], ["w"]),
        helper.make_node("GatherND", ["w", "nd"], ["probabilities"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = str(tmp_path / "g.onnx")
    onnx.save(model, path)
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    ref = ort.InferenceSession(path).run(None, {"input": x})[0]
    with torch.no_grad():
        got = load_torch_model(path)(torch.from_numpy(x)).numpy()
    assert got.shape == ref.shape == (2, 2, 4, 3)
    np.testing.assert_array_equal(got, ref)
