"""The model card's Android (Kotlin) and iOS (Swift) snippets against the
bundle they ship with: every file name they load exists in the folder (or is
the file the named export writes), the input and output names and shapes are
the model's own, every preprocessing number is the bundle's InputSpec, and
the preprocessing they spell out, done here step by step, gives the tensor
edgetl's own preprocessing gives (to a level of rounding, the one-pixel
border apart). Three bundles: the shared RGB one
as 'edgetl train' wrote it; a copy with per-channel ImageNet mean/std, a
0.75 crop and its ORT-format files; a grey ("L") bundle."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from edgetl.export.coreml import COREML_FP32
from edgetl.export.tflite import TFLITE_INT8
from edgetl.report import write_model_card
from edgetl.runtime import Predictor
from edgetl.runtime.bundle import KEY_SPEC, read_bundle

MODEL_EXTENSIONS = (".onnx", ".ort", ".txt", ".tflite", ".mlpackage", ".mlmodelc")


# ---------------------------------------------------------------- reading the card


def code_blocks(card: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", card, re.S)


def _value(text: str):
    """A Kotlin or Swift literal: "string", number, floatArrayOf(...) / [...] of floats."""
    text = text.strip()
    if text.startswith('"'):
        return json.loads(text)
    inner = re.fullmatch(r"(?:floatArrayOf\((.*)\)|\[(.*)\])", text)
    if inner:
        items = (inner.group(1) if inner.group(1) is not None else inner.group(2)).split(",")
        return [float(v.strip().rstrip("f")) for v in items]
    return float(text) if "." in text else int(text)


def constants(block: str) -> dict:
    """``const val NAME = value`` / ``val NAME = floatArrayOf(..)`` (Kotlin) and
    ``let name = value`` / ``let name: [Float] = [..]`` (Swift), comments kept apart."""
    out = {}
    for name, value, comment in re.findall(
            r'^(?:const val|val|let) (\w+)(?:: \[Float\])? = ("[^"]*"|floatArrayOf\([^)]*\)|\[[^\]]*\]|[\d.]+)'
            r'[ \t]*(?://(.*))?$', block, re.M):
        out[name] = _value(value)
        out[name + "#comment"] = comment.strip()
    return out


def _block(card: str, lang: str, marker: str) -> str:
    found = [b for b in code_blocks(card, lang) if marker in b]
    assert len(found) == 1, f"expected one {lang} block with {marker!r}"
    return found[0]


# ---------------------------------------------------------------- the recipe, done here


def snippet_preprocess(path: str, size: int, crop: float, channels: int, mean, std, grey: bool,
                       resample: str) -> np.ndarray:
    """The card's steps: the centre square of round(crop x shorter side)
    (offsets (w - side) / 2, integer), scaled to size x size, pixel values
    (grey: Pillow's fixed-point luma), (v - mean[c]) / std[c], C planes."""
    image = Image.open(path).convert("RGB")
    w, h = image.size
    side = max(1, int(np.floor(crop * min(w, h) + 0.5)))
    left, top = (w - side) // 2, (h - side) // 2
    filt = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}[resample]
    rgb = np.asarray(image.crop((left, top, left + side, top + side)).resize((size, size), filt)).astype(np.int64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    values = [(r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16] if grey else [r, g, b]
    assert len(values) == channels
    return np.stack([(v.astype(np.float32) - np.float32(m)) / np.float32(s) for v, m, s in zip(values, mean, std)])


def _odd_images(folder) -> list[str]:
    """Colour photos that are not square, one landscape and one portrait."""
    rng = np.random.default_rng(3)
    paths = []
    for i, (w, h) in enumerate([(64, 48), (48, 80)]):
        img = (rng.integers(0, 256, (h, w, 3)) // 32 * 32).astype(np.uint8)
        img[h // 4: h // 2, w // 4: w // 2] = (200, 40, 90)
        path = os.path.join(folder, f"odd{i}.png")
        Image.fromarray(img).save(path)
        paths.append(path)
    return paths


# ---------------------------------------------------------------- the checks


def _check_tensor(got: np.ndarray, expected: np.ndarray, std) -> None:
    """The card's recipe against edgetl's preprocessing, in pixel levels: the
    same inside (a level of rounding apart), a few levels on average where the
    one-pixel border differs (Pillow's filter reads just past the crop; a
    crop-then-scale cannot)."""
    levels = np.abs(got - expected) * np.asarray(std, np.float32)[:, None, None]
    assert got.shape == expected.shape
    assert levels[:, 1:-1, 1:-1].max() <= 1.01, levels[:, 1:-1, 1:-1].max()
    assert levels.mean() <= 2.0, levels.mean()


def _check_model_file(run_dir: str, c: dict, names: dict, num_labels: int) -> None:
    """The file the snippet loads is in the bundle and has the input and output it names."""
    path = os.path.join(run_dir, c[names["model"]])
    assert os.path.isfile(path), c[names["model"]]
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    assert inp.name == c[names["input"]] == "input"
    assert inp.shape[1:] == [c[names["channels"]], c[names["size"]], c[names["size"]]]  # N x C x H x W
    out = {o.name: o.shape for o in sess.get_outputs()}
    assert c[names["output"]] == "probabilities" and out["probabilities"][1] == num_labels
    assert f"N x {num_labels}" in c[names["output"] + "#comment"]
    assert c[names["labels"]] == "labels.txt" and os.path.isfile(os.path.join(run_dir, "labels.txt"))


def _check_spec(c: dict, names: dict, spec) -> None:
    assert c[names["size"]] == spec.image_size
    assert c[names["crop"]] == spec.crop_fraction
    assert c[names["channels"]] == spec.num_channels and c[names["channels"] + "#comment"] == spec.channels
    assert c[names["mean"]] == list(spec.mean) and c[names["std"]] == list(spec.std)


KOTLIN = {"model": "MODEL_FILE", "labels": "LABELS_FILE", "input": "INPUT_NAME", "output": "OUTPUT_NAME",
          "size": "IMAGE_SIZE", "crop": "CROP_FRACTION", "channels": "CHANNELS", "mean": "MEAN", "std": "STD"}
SWIFT = {"model": "modelFile", "labels": "labelsFile", "input": "inputName", "output": "outputName",
         "size": "imageSize", "crop": "cropFraction", "channels": "channels", "mean": "mean", "std": "std"}


def check_card(run_dir: str, images: list[str]) -> dict:
    """Every snippet of RUN_DIR/README.md against the bundle; returns the Kotlin constants."""
    card = open(os.path.join(run_dir, "README.md"), encoding="utf-8").read()
    bundle = read_bundle(run_dir)
    spec, labels = bundle.input_spec, bundle.labels
    kotlin, swift = _block(card, "kotlin", "ai.onnxruntime"), _block(card, "swift", "ORTSession")
    kc, sc = constants(kotlin), constants(swift)
    for block, c, names in ((kotlin, kc, KOTLIN), (swift, sc, SWIFT)):
        _check_model_file(run_dir, c, names, len(labels))
        _check_spec(c, names, spec)
        assert f"({spec.resample})" in block
        grey = "19595" in block
        assert grey == (spec.channels == "L")
        assert ("c * plane + i" in block) and ("N, C, H, W" in block)  # channel planes, NCHW
        expected = Predictor(run_dir).preprocess(images)
        for i, path in enumerate(images):
            got = snippet_preprocess(path, c[names["size"]], c[names["crop"]], c[names["channels"]],
                                     c[names["mean"]], c[names["std"]], grey, spec.resample)
            _check_tensor(got, expected[i], c[names["std"]])
    assert kc["MODEL_FILE"] == sc["modelFile"]
    assert "longArrayOf(1, CHANNELS.toLong(), IMAGE_SIZE.toLong(), IMAGE_SIZE.toLong())" in kotlin
    assert "[1, NSNumber(value: channels), NSNumber(value: imageSize), NSNumber(value: imageSize)]" in swift
    _check_litert_and_coreml(card, spec, len(labels))
    _check_file_names(card, run_dir)
    return kc


def _check_litert_and_coreml(card: str, spec, num_labels: int) -> None:
    litert = _block(card, "kotlin", "Interpreter(")
    assert f'loadMappedFile(context, "{TFLITE_INT8}")' in litert
    s, ch = spec.image_size, spec.num_channels
    assert f"allocateDirect(4 * {s} * {s} * {ch})" in litert and f"FloatArray({num_labels})" in litert
    assert f"[1, {s}, {s}, {ch}]" in card  # the NHWC shape model.tflite.json records
    coreml = _block(card, "swift", "VNCoreMLModel")
    cc = constants(coreml)
    assert cc["coreMLPackage"] == COREML_FP32 and cc["cropFraction"] == spec.crop_fraction
    compiled = COREML_FP32.removesuffix(".mlpackage")
    assert f'url(forResource: "{compiled}", withExtension: "mlmodelc")' in coreml
    assert "regionOfInterest = CGRect(x: (1 - cropFraction) / 2, y: (1 - cropFraction) / 2" in coreml
    assert ".centerCrop" in coreml


def _check_file_names(card: str, run_dir: str) -> None:
    """Every file a snippet names: in the bundle, or written by the export the card names for it."""
    exported = {TFLITE_INT8, COREML_FP32, COREML_FP32.replace(".mlpackage", ".mlmodelc")}
    for block in code_blocks(card, "kotlin") + code_blocks(card, "swift"):
        for name in re.findall(r'"([\w.-]+)"', block):
            if name.endswith(MODEL_EXTENSIONS):
                assert name in exported or os.path.isfile(os.path.join(run_dir, name)), name


# ---------------------------------------------------------------- the bundles


def _set_input_spec(run_dir: str, **changes) -> None:
    """Change the InputSpec everywhere a bundle keeps it: metrics.json and each model's metadata."""
    path = os.path.join(run_dir, "metrics.json")
    m = json.load(open(path))
    m["input_spec"].update(changes)
    with open(path, "w") as fh:
        json.dump(m, fh)
    for name in os.listdir(run_dir):
        if name.endswith(".onnx"):
            model = onnx.load(os.path.join(run_dir, name))
            for prop in model.metadata_props:
                if prop.key == KEY_SPEC:
                    prop.value = json.dumps({**json.loads(prop.value), **changes}, sort_keys=True)
            onnx.save(model, os.path.join(run_dir, name))


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory):
    return _odd_images(str(tmp_path_factory.mktemp("odd")))


def test_shared_bundle_card_matches_the_bundle(shared_run, odd_images):
    kc = check_card(shared_run.run_dir, odd_images)
    assert kc["MODEL_FILE"] == "model.int8.onnx"  # no ORT export yet: the int8 ONNX file as trained
    assert kc["CHANNELS#comment"] == "RGB"


def test_imagenet_normalised_copy_with_ort_files(shared_run, odd_images, tmp_path):
    import edgetl.export.ort_mobile as ort_mobile  # registers "ort" once (the module is cached)

    run = str(tmp_path / "run")
    shutil.copytree(shared_run.run_dir, run)
    _set_input_spec(run, mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], crop_fraction=0.75)
    ort_mobile.export_ort(run, int8=True)
    write_model_card(run)
    kc = check_card(run, odd_images)
    assert kc["MODEL_FILE"] == "model.int8.ort" and kc["MEAN"] == [123.675, 116.28, 103.53]
    card = open(os.path.join(run, "README.md"), encoding="utf-8").read()
    assert "ort_operators.json" in card and "`train_step.ort`" in card


@pytest.mark.slow  # a whole grey train: the full suite (the colour card tests stay in the default one)
def test_grey_bundle_card(tmp_path, odd_images):
    from conftest import make_shapes_folder

    from edgetl import train

    shapes = make_shapes_folder(tmp_path / "shapes", num_per_class=6, size=48)
    for root, _dirs, files in os.walk(shapes):
        for f in files:
            Image.open(os.path.join(root, f)).convert("L").save(os.path.join(root, f))
    # 32 px, block2: the grey graph tests/search/test_run.py exports too (one export for both, cached)
    result = train(shapes, str(tmp_path / "run"), image_size=32, tap="block2", progress=False)
    spec = read_bundle(result.run_dir).input_spec
    assert spec.channels == "L"
    kc = check_card(result.run_dir, odd_images)
    assert kc["CHANNELS"] == 1 and len(kc["MEAN"]) == len(kc["STD"]) == 1
