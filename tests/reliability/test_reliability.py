"""Bad input, end to end: what edgetl skips (with a warning, listed in
metrics.json) and what it refuses (one line, exit code 2, no traceback).

Every file is made here. Cases already covered elsewhere are not repeated:
zero-byte / truncated JPEG / text-as-JPEG / TIFF / bomb-by-lowered-limit /
EXIF / modes / animation in test_data.py; missing / empty / one-class /
empty-class folders and bundle folders without labels in test_cli_errors.py;
pickle and wrong-architecture checkpoints in test_zoo.py and
test_weights_fetch.py."""

from __future__ import annotations

import inspect
import io
import json
import logging
import os
import shutil
import struct
import sys
import tracemalloc
import zlib

import numpy as np
import onnx
import pytest
from PIL import Image

from edgetl.cli import main
from edgetl.data.folder import scan_folder
from edgetl.data.image import decode_image, load_image
from edgetl.errors import BundleError, DataError, WeightsError
from edgetl.runtime import Personalizer, Predictor
from edgetl.runtime.bundle import read_bundle

SIZE = 32
NON_UTF8 = b"caf\xe9.png"  # Latin-1 bytes, as old cameras and zip files write them


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def noise(size=(24, 20), seed=0) -> Image.Image:
    w, h = size
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def png_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, offset, length) of every chunk."""
    pos, out = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        out.append((data[pos + 4 : pos + 8], pos, length))
        pos += 12 + length
    return out


def break_crc(data: bytes, kind: bytes) -> bytes:
    """The chunk's data is intact, only its stored checksum is wrong."""
    out = bytearray(data)
    _, pos, length = next(c for c in png_chunks(data) if c[0] == kind)
    out[pos + 8 + length] ^= 0xFF
    return bytes(out)


def chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png(width=30_000, height=30_000) -> bytes:
    """A few hundred bytes whose header declares width x height pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grey
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
            + chunk(b"IEND", b""))


def executable_bytes() -> bytes:
    with open(sys.executable, "rb") as fh:  # a real program, renamed .jpg below
        return fh.read(8192)


def assert_one_line_error(code, out, err, *needles):
    assert code == 2, (code, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgetl: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# --------------------------------------------------------------------------- the corpus, trained on


def build_corpus(root) -> tuple[str, dict[str, str], list[str]]:
    """shapes + every bad file edgetl must skip + every odd file it must use.
    Returns (folder, {bad path: phrase its reason must contain}, odd good paths)."""
    from conftest import make_shapes_folder

    data = make_shapes_folder(root / "corpus", num_per_class=6, size=48)
    disc = os.path.join(data, "disc")
    png = encode(noise(), "PNG")
    jpeg = encode(noise(), "JPEG")
    bad = {
        "crc.png": (break_crc(png, b"IDAT"), "checksum"),
        "program.jpg": (executable_bytes(), "not a readable image"),
        "letter.jpg": (encode(noise(), "PDF"), "not a readable image"),
        "bomb.png": (bomb_png(), "too large"),
        "half.jpg": (jpeg[: len(jpeg) // 2], ""),
        "empty.png": (b"", "empty"),
        "scan.pdf": (encode(noise(), "PDF"), "not an image file type"),
    }
    expected = {}
    for name, (payload, phrase) in bad.items():
        with open(os.path.join(disc, name), "wb") as fh:
            fh.write(payload)
        expected[os.path.join(disc, name)] = phrase
    dangling = os.path.join(disc, "moved-away.jpg")
    os.symlink(os.path.join(root, "nowhere.jpg"), dangling)  # unreadable by anyone, root included
    expected[dangling] = "cannot read"

    odd = {
        "one-pixel.png": Image.new("RGB", (1, 1), (200, 30, 30)),
        "tall.png": Image.new("RGB", (1, 10_000), (200, 30, 30)),
        "wide.png": Image.new("RGB", (10_000, 1), (200, 30, 30)),
        "cmyk.jpg": Image.new("CMYK", (20, 20), (0, 200, 200, 0)),
        "grey16.png": Image.fromarray(np.full((20, 20), 40_000, np.uint16)),
        "\U0001f431 cat.png": noise(seed=3),
    }
    good = []
    for name, image in odd.items():
        image.save(os.path.join(disc, name))
        good.append(os.path.join(disc, name))
    latin1 = os.path.join(os.fsencode(disc), NON_UTF8)
    noise(seed=4).save(latin1, "PNG")
    good.append(os.fsdecode(latin1))
    # the same photo filed under two classes: used in both, warned
    shutil.copy(os.path.join(data, "bars", "000.png"), os.path.join(data, "checker", "from-bars.png"))
    return data, expected, good


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from edgetl.training import train

    root = tmp_path_factory.mktemp("reliability")
    data, bad, good = build_corpus(root)
    fast = {"search": False} if "search" in inspect.signature(train).parameters else {}  # one pass at SIZE px
    result = train(data, root / "run", image_size=SIZE, val_split=0.3, seed=0, progress=False, **fast)
    return {"root": root, "data": data, "bad": bad, "good": good, "run": str(root / "run"), "result": result}


def test_corpus_bad_files_skipped_and_listed(corpus):
    with open(os.path.join(corpus["run"], "metrics.json")) as fh:
        metrics = json.load(fh)
    skipped = {item["path"]: item["reason"] for item in metrics["skipped"]}
    assert set(skipped) == set(corpus["bad"])
    for path, phrase in corpus["bad"].items():
        assert skipped[path] and phrase in skipped[path], (path, skipped[path])
    assert metrics["counts"]["images_used"] == 3 * 6 + len(corpus["good"]) + 1  # + the duplicate


def test_corpus_duplicate_warned_and_listed(corpus):
    """bars/000.png also filed as checker/from-bars.png: both kept, reported."""
    with open(os.path.join(corpus["run"], "metrics.json")) as fh:
        metrics = json.load(fh)
    [dup] = metrics["duplicates"]
    assert dup["classes"] == ["bars", "checker"]
    assert sorted(os.path.relpath(p, corpus["data"]) for p in dup["paths"]) == [
        os.path.join("bars", "000.png"), os.path.join("checker", "from-bars.png")]
    assert metrics["counts"]["duplicates"] == 1


def test_corpus_odd_images_are_used(corpus):
    """1 x 1, 1 x 10,000, CMYK, 16-bit, emoji and non-UTF-8 names all reach
    the model as finite tensors of the bundle's size."""
    predictor = Predictor(corpus["run"])
    batch = predictor.preprocess(corpus["good"])
    assert batch.shape == (len(corpus["good"]), 3, SIZE, SIZE) and np.isfinite(batch).all()
    proba = predictor.predict_proba(corpus["good"])
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-4)
    # a solid red 1 x 1 pixel is a solid red square once resized
    one = batch[0]
    assert np.ptp(one, axis=(1, 2)).max() < 1e-5 and one[0, 0, 0] > one[1, 0, 0]


def test_predict_cli_refuses_a_bad_image_in_one_line(corpus, capsys):
    good = corpus["good"][0]
    bad = next(p for p in corpus["bad"] if p.endswith("program.jpg"))
    code = main(["predict", corpus["run"], good, bad])
    captured = capsys.readouterr()
    assert_one_line_error(code, captured.out, captured.err, "program.jpg", "not a readable image")


# --------------------------------------------------------------------------- images


def test_png_checksum_errors_follow_libpng():
    png = encode(noise(), "PNG")
    for kind in (b"IHDR", b"IDAT", b"IEND"):  # critical chunks: the file is damaged
        with pytest.raises(DataError) as exc:
            decode_image(break_crc(png, kind), "x.png")
        assert "x.png" in str(exc.value)
    with pytest.raises(DataError, match="checksum error in its IDAT chunk"):
        decode_image(break_crc(png, b"IDAT"), "x.png")
    # an ancillary chunk (text) with a bad checksum does not cost the image
    text = chunk(b"tEXt", b"Comment\0hello")
    iend = png.rindex(b"IEND") - 4
    with_text = png[:iend] + text[:-1] + bytes([text[-1] ^ 0xFF]) + png[iend:]
    assert np.array_equal(np.asarray(decode_image(with_text, "x.png")), np.asarray(noise()))


@pytest.mark.parametrize("fmt", ["PDF", "ICO", "PPM", "TGA", "PCX", "SGI"])
def test_formats_outside_the_allowlist_are_refused(tmp_path, fmt):
    """Pillow reads all of these; edgetl does not open them (each decoder is attack surface)."""
    path = tmp_path / "photo.jpg"
    path.write_bytes(encode(noise(), fmt))
    with pytest.raises(DataError) as exc:
        load_image(path)
    assert "photo.jpg" in str(exc.value)


def test_executable_renamed_jpg_is_refused(tmp_path):
    path = tmp_path / "holiday.jpg"
    path.write_bytes(executable_bytes())
    with pytest.raises(DataError, match="not a readable image") as exc:
        load_image(path)
    assert "holiday.jpg" in str(exc.value)


def test_bomb_header_is_refused_without_allocating():
    data = bomb_png()
    assert len(data) < 1000
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="too large") as exc:
            decode_image(data, "bomb.png")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "bomb.png" in str(exc.value)
    assert peak < 5_000_000  # 900 MP at even 1 bit per pixel would be 112 MB


@pytest.mark.parametrize("size", [(1, 1), (1, 10_000), (10_000, 1)])
def test_extreme_sizes_preprocess(size):
    from edgetl.data.input_spec import InputSpec

    image = decode_image(encode(Image.new("RGB", size, (10, 200, 30)), "PNG"), "x.png")
    batch = InputSpec(image_size=SIZE).batch([image])
    assert batch.shape == (1, 3, SIZE, SIZE)
    expected = (np.array([10, 200, 30], np.float32) - 127) / 128
    np.testing.assert_allclose(batch[0].mean(axis=(1, 2)), expected, atol=1e-5)


# --------------------------------------------------------------------------- folders


def test_duplicate_image_in_two_classes_is_warned(tmp_path, caplog):
    root = tmp_path / "data"
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
    noise(seed=1).save(root / "cat" / "a.png")
    noise(seed=2).save(root / "dog" / "b.png")
    shutil.copy(root / "cat" / "a.png", root / "dog" / "a-copy.png")  # mislabelled copy
    shutil.copy(root / "dog" / "b.png", root / "dog" / "b-again.png")  # same class: harmless
    # same size, different bytes: not a duplicate
    same_size = bytearray((root / "cat" / "a.png").read_bytes())
    same_size[-20] ^= 1
    (root / "cat" / "lookalike.png").write_bytes(bytes(same_size))
    with caplog.at_level(logging.WARNING, logger="edgetl"):
        folder = scan_folder(root)
    assert len(folder) == 5  # kept: the user decides which class is right
    assert [d["classes"] for d in folder.duplicates] == [["cat", "dog"]]
    assert sorted(os.path.basename(p) for p in folder.duplicates[0]["paths"]) == ["a-copy.png", "a.png"]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "a-copy.png" in warned[0] and "'cat' and 'dog'" in warned[0]
    assert folder.subset([0, 1]).duplicates == folder.duplicates


def test_non_utf8_class_folder_is_refused(tmp_path, capsys):
    root = tmp_path / "data"
    for cls in (b"b\xe4rs", b"disc"):
        folder = os.path.join(os.fsencode(root), cls)
        os.makedirs(folder)
        for i in range(2):
            noise(seed=i).save(os.path.join(folder, b"%d.png" % i))
    with pytest.raises(DataError, match=r"b\\xe4rs.*not valid UTF-8"):
        scan_folder(root)
    code = main(["train", str(root), "--out", str(tmp_path / "run")])
    captured = capsys.readouterr()
    assert_one_line_error(code, captured.out, captured.err, "not valid UTF-8", "rename")
    assert not (tmp_path / "run").exists()


def test_emoji_class_folder_and_file_names(tmp_path):
    root = tmp_path / "data"
    for cls in ("\U0001f431 cats", "chiens \u00e9t\u00e9"):
        (root / cls).mkdir(parents=True)
        noise(seed=len(cls)).save(root / cls / "\U0001f4f7 photo.png")
    latin1 = os.path.join(os.fsencode(root / "chiens \u00e9t\u00e9"), NON_UTF8)
    noise(seed=9).save(latin1, "PNG")
    folder = scan_folder(root)
    assert folder.classes == ["chiens \u00e9t\u00e9", "\U0001f431 cats"]  # sorted by code point
    assert os.fsdecode(latin1) in folder.paths and len(folder) == 3
    for path in folder.paths:
        assert load_image(path).size == (24, 20)


def test_unreadable_file_mode_000(tmp_path):
    path = tmp_path / "secret.png"
    noise().save(path)
    os.chmod(path, 0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root: mode 000 does not stop root (the dangling symlink in the corpus "
                        "covers an unreadable file for everyone)")
        with pytest.raises(DataError, match="cannot read") as exc:
            load_image(path)
        assert "secret.png" in str(exc.value)
    finally:
        os.chmod(path, 0o644)


# --------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_checkpoint_is_refused(tmp_path, suffix):
    import torch
    from safetensors.torch import save_file

    import edgetl

    model = edgetl.create_backbone("mobilenet_v3_small", weights=None)
    full = tmp_path / f"full{suffix}"
    if suffix == ".pth":
        torch.save(model.state_dict(), full)
    else:
        save_file(model.state_dict(), full)
    data = full.read_bytes()
    assert edgetl.create_backbone("mobilenet_v3_small", weights=str(full)) is not None  # the whole file loads
    for fraction in (0.5, 0.9):
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(data[: int(len(data) * fraction)])
        with pytest.raises(WeightsError, match="incomplete") as exc:
            edgetl.create_backbone("mobilenet_v3_small", weights=str(cut))
        assert str(cut) in str(exc.value) and "\n" not in str(exc.value)


# --------------------------------------------------------------------------- bundles


def copy_run(corpus, tmp_path, name="run") -> str:
    dst = tmp_path / name
    shutil.copytree(corpus["run"], dst)
    return str(dst)


def externalise(model_path: str, location: str, data_path: str) -> str:
    """Move the model's largest initializer into ``data_path`` and point the
    model at it through ``location``; returns the tensor's name."""
    model = onnx.load(model_path)
    tensor = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    with open(data_path, "wb") as fh:
        fh.write(tensor.raw_data)
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", "0"), ("length", str(os.path.getsize(data_path)))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    onnx.save(model, model_path)
    return tensor.name


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_external_data_outside_the_bundle_is_refused(corpus, tmp_path, capsys, how):
    run = copy_run(corpus, tmp_path)
    model_path = os.path.join(run, "model.onnx")
    outside = str(tmp_path / "elsewhere.bin")  # the real bytes: only the check stops the read
    if how == "dotdot":
        location = "../elsewhere.bin"
    elif how == "absolute":
        location = outside
    else:
        os.symlink(outside, os.path.join(run, "weights.bin"))
        location = "weights.bin"
    externalise(model_path, location, outside)
    with pytest.raises(BundleError, match="outside its own folder"):
        Predictor(run)
    code = main(["predict", run, corpus["good"][0]])
    captured = capsys.readouterr()
    assert_one_line_error(code, captured.out, captured.err, "outside its own folder", location)


def test_external_data_inside_the_bundle_loads(corpus, tmp_path):
    """The control for the test above: a side file next to the model is fine."""
    run = copy_run(corpus, tmp_path)
    externalise(os.path.join(run, "model.onnx"), "model.weights", os.path.join(run, "model.weights"))
    expected = Predictor(corpus["run"]).predict_proba(corpus["good"][:3])
    np.testing.assert_allclose(Predictor(run).predict_proba(corpus["good"][:3]), expected, atol=1e-6)


def test_device_files_with_external_data_outside_are_refused(corpus, tmp_path):
    run = copy_run(corpus, tmp_path)
    externalise(os.path.join(run, "features.onnx"), "../stolen.bin", str(tmp_path / "stolen.bin"))
    with pytest.raises(BundleError, match="features.onnx.*outside its own folder"):
        Personalizer(run, tmp_path / "state")
    assert not (tmp_path / "state").exists()


def _set_meta(model_path: str, **changes) -> None:
    model = onnx.load(model_path)
    for prop in model.metadata_props:
        if prop.key in changes:
            prop.value = changes[prop.key]
    onnx.save(model, model_path)


def test_labels_not_matching_the_model(corpus, tmp_path, capsys):
    run = copy_run(corpus, tmp_path)
    labels_path = os.path.join(run, "labels.txt")
    with open(labels_path, "w") as fh:
        fh.write("bars\ndisc\n")  # one class lost
    with pytest.raises(BundleError, match="does not match the model's own labels"):
        Predictor(run)
    # labels.txt and the metadata agree with each other, but not with the graph's 3 outputs
    _set_meta(os.path.join(run, "model.onnx"), **{"edgetl.labels": json.dumps(["bars", "disc"])})
    with pytest.raises(BundleError, match="does not output 2 class probabilities"):
        Predictor(run)
    code = main(["predict", run, corpus["good"][0]])
    captured = capsys.readouterr()
    assert_one_line_error(code, captured.out, captured.err, "does not output 2 class probabilities")


def test_symbolic_output_checked_when_run(corpus, tmp_path):
    """When the graph leaves the class count symbolic, the check happens on
    the first output instead of handing back probabilities for other labels."""
    run = copy_run(corpus, tmp_path)
    model_path = os.path.join(run, "model.onnx")
    model = onnx.load(model_path)
    out = next(o for o in model.graph.output if o.name == "probabilities")
    out.type.tensor_type.shape.dim[1].dim_param = "classes"
    onnx.save(model, model_path)
    _set_meta(model_path, **{"edgetl.labels": json.dumps(["bars", "disc"])})
    with open(os.path.join(run, "labels.txt"), "w") as fh:
        fh.write("bars\ndisc\n")
    predictor = Predictor(run)  # nothing static to check
    with pytest.raises(BundleError, match="returned \\(3,\\) values per image for 2 labels"):
        predictor.predict(corpus["good"][:1])


def test_input_spec_not_matching_the_model(corpus, tmp_path):
    """A damaged spec must not decide how much memory preprocessing takes."""
    run = copy_run(corpus, tmp_path)
    model_path = os.path.join(run, "model.onnx")
    spec = json.loads(dict((p.key, p.value) for p in onnx.load(model_path).metadata_props)["edgetl.input_spec"])
    for change in ({"image_size": 1_000_000}, {"channels": "L", "mean": [127.0], "std": [128.0]}):
        _set_meta(model_path, **{"edgetl.input_spec": json.dumps({**spec, **change})})
        with pytest.raises(BundleError, match="does not take 'input' images"):
            read_bundle(run)
    _set_meta(model_path, **{"edgetl.input_spec": json.dumps({**spec, "mean": [float("nan")] * 3})})
    with pytest.raises(BundleError, match="damaged edgetl metadata"):
        read_bundle(run)


def test_interrupted_publish_is_named(corpus, tmp_path):
    """A train killed between moving the old bundle aside and moving the new
    one in: the error says where the old one is."""
    shutil.copytree(corpus["run"], tmp_path / "run.old-4242")
    with pytest.raises(BundleError, match="run.old-4242.*rename it back"):
        Predictor(tmp_path / "run")


# --------------------------------------------------------------------------- runtime inputs


@pytest.mark.parametrize("bad, phrase", [
    (np.zeros((8, 8, 3), np.float32), "must be uint8"),
    (np.zeros((8, 8, 3), np.int16), "must be uint8"),
    (np.full((8, 8, 3), np.nan, np.float32), "NaN or Inf"),
    (np.full((8, 8, 3), np.inf, np.float64), "NaN or Inf"),
    (np.zeros(8, np.uint8), "got shape (8,)"),
    (np.zeros((2, 8, 8, 3, 1), np.uint8), "got shape"),
    (np.zeros((8, 8, 2), np.uint8), "got shape (8, 8, 2)"),
    (np.zeros((0, 8, 3), np.uint8), "empty"),
    (b"\x89PNG...", "cannot read an image from bytes"),
    (None, "cannot read an image from NoneType"),
])
def test_predictor_refuses_bad_image_arrays(corpus, bad, phrase):
    predictor = Predictor(corpus["run"])
    with pytest.raises(DataError) as exc:
        predictor.predict([bad])
    assert phrase in str(exc.value) and "\n" not in str(exc.value)


def test_predictor_refuses_one_image_passed_as_the_batch(corpus):
    predictor = Predictor(corpus["run"])
    for one in (corpus["good"][0], np.zeros((8, 8, 3), np.uint8), Image.new("RGB", (8, 8))):
        with pytest.raises(DataError, match="pass a list of images"):
            predictor.predict(one)
    stack = np.zeros((2, 8, 8, 3), np.uint8)  # N x H x W x C is a batch
    assert len(predictor.predict(stack)) == 2


def test_predictor_empty_batch(corpus):
    predictor = Predictor(corpus["run"])
    assert predictor.predict([]) == []
    assert predictor.predict_proba(iter([])).shape == (0, 3)
    assert predictor.predict_proba_tensor(np.zeros((0, 3, SIZE, SIZE), np.float32)).shape == (0, 3)


@pytest.mark.parametrize("change, phrase", [
    (lambda x: x.astype(np.float64), "must be float32"),
    (lambda x: x[0], "got shape (3, 32, 32)"),
    (lambda x: x[None], "got shape (1, 2, 3, 32, 32)"),
    (lambda x: x[:, :1], "got shape (2, 1, 32, 32)"),
    (lambda x: x[:, :, :16], "got shape (2, 3, 16, 32)"),
    (lambda x: np.where(x > 0, np.float32(np.nan), x), "NaN or Inf"),
    (lambda x: np.where(x > 0, np.float32(-np.inf), x), "NaN or Inf"),
    (lambda x: x.tolist(), "numpy array"),
])
def test_predictor_refuses_bad_tensors(corpus, change, phrase):
    predictor = Predictor(corpus["run"])
    batch = predictor.preprocess(corpus["good"][:2])
    np.testing.assert_allclose(predictor.predict_proba_tensor(batch), predictor.predict_proba(corpus["good"][:2]),
                               atol=1e-6)
    with pytest.raises(DataError) as exc:
        predictor.predict_proba_tensor(change(batch))
    assert phrase in str(exc.value)
