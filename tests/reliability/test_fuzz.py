"""Fuzzing image decoding, bundle loading, ``--config`` files and feature
cache shards (Hypothesis).

The property is the same everywhere: whatever the bytes, edgetl either gives
a usable result or raises its own one-line error (DataError / BundleError /
any EdgetlError for a config file); any other exception, a hang or a crash
of the interpreter is a bug. A cache shard never raises at all: it is either
trusted whole, every row the one its key was written with, or a miss.

Here the run is bounded by ``max_examples`` (a few seconds, derandomized so
CI is repeatable); ``python bench/fuzz.py --seconds 600`` runs the same
targets for longer with fresh randomness. What it found is pinned below as
regression tests (test_found_*)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import struct
import tempfile
import zlib

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import edgetl.data.image as image_mod
from edgetl.data.image import decode_image
from edgetl.data.input_spec import InputSpec
from edgetl.errors import BundleError, DataError, EdgetlError
from edgetl.runtime import Predictor
from edgetl.training.config import NOT_SAVED, TrainConfig

CI = settings(max_examples=150, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
CI_DECODE = settings(CI, max_examples=400)  # decoding is cheap: more examples in the same seconds
FUZZ_PIXEL_LIMIT = 4_000_000  # the same check as the real 120 MP limit, cheaper to hit


# --------------------------------------------------------------------------- seeds and mutations


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def image_seeds() -> list[bytes]:
    """One small valid file per decoder path edgetl allows."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8))
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    exif = Image.Exif()
    exif[0x0112] = 6
    return [
        _encode(rgb, "JPEG", quality=80),
        _encode(rgb, "JPEG", exif=exif),
        _encode(rgb.convert("CMYK"), "JPEG"),
        _encode(rgb, "PNG"),
        _encode(palette, "PNG", transparency=0),
        _encode(Image.fromarray(rng.integers(0, 65535, (6, 5), dtype=np.uint16)), "PNG"),
        _encode(rgb.convert("RGBA"), "PNG"),
        _encode(rgb, "BMP"),
        _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0),
        _encode(rgb, "WEBP", quality=80),
        _encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=50),
    ]


SEEDS = image_seeds()


def fix_png_crcs(data: bytes) -> bytes:
    """Recompute every chunk checksum so a mutation reaches Pillow's PNG
    decoder instead of stopping at edgetl's checksum check."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    out, pos = bytearray(data[:8]), 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        body = data[pos + 4 : pos + 8 + length]
        if pos + 12 + length > len(data):
            break
        out += data[pos : pos + 8 + length] + struct.pack(">I", zlib.crc32(body))
        pos += 12 + length
    return bytes(out + data[pos:])


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "byte", "truncate", "insert", "delete", "overwrite", "big"]))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte":
            data[pos] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[pos : pos + len(chunk)] = chunk
        else:  # a large 16- or 32-bit value, where sizes and lengths live
            data[pos : pos + 2] = draw(st.sampled_from([b"\xff\xff", b"\x7f\xff", b"\x00\x00", b"\x80\x00"]))
    if draw(st.booleans()):
        data = bytearray(fix_png_crcs(bytes(data)))
    return bytes(data)


IMAGE_BYTES = st.one_of(mutated(SEEDS), st.binary(max_size=256))


# --------------------------------------------------------------------------- image decoding


def check_decode(data: bytes) -> None:
    """The property: an upright RGB image that preprocesses to finite
    numbers, or DataError. Nothing else."""
    try:
        image = decode_image(data, "fuzz.img")
    except DataError as exc:
        assert str(exc).startswith("fuzz.img: ") and "\n" not in str(exc)
        return
    assert image.mode == "RGB" and image.size[0] >= 1 and image.size[1] >= 1
    assert image.size[0] * image.size[1] <= image_mod.MAX_IMAGE_PIXELS
    batch = InputSpec(image_size=16).batch([image])
    assert batch.shape == (1, 3, 16, 16) and np.isfinite(batch).all()


@pytest.fixture
def low_pixel_limit(monkeypatch):
    monkeypatch.setattr(image_mod, "MAX_IMAGE_PIXELS", FUZZ_PIXEL_LIMIT)


def test_seeds_decode():
    """The seeds themselves are valid, so mutations start from real files."""
    for data in SEEDS:
        assert decode_image(data).size[0] >= 5


@CI_DECODE
@given(data=IMAGE_BYTES)
def test_fuzz_decode_image(low_pixel_limit, data):
    check_decode(data)


# --------------------------------------------------------------------------- bundle loading


LABELS = ["cat", "dog", "mug"]


def tiny_model(labels=LABELS, size: int = 16) -> onnx.ModelProto:
    """A real edgetl-shaped classifier in a few hundred bytes: mean colour ->
    linear -> softmax, with the bundle's metadata."""
    w = numpy_helper.from_array(np.arange(3 * len(labels), dtype=np.float32).reshape(3, -1) / 10, "w")
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", len(labels)])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    spec = InputSpec(image_size=size)
    for key, value in (("edgetl.format_version", "1"), ("edgetl.labels", json.dumps(labels)),
                       ("edgetl.input_spec", spec.to_json()), ("edgetl.backbone", "tiny")):
        model.metadata_props.add(key=key, value=value)
    return model


MODEL_BYTES = tiny_model().SerializeToString()
PROBE = [np.full((5, 7, 3), 90, np.uint8)]


def check_bundle(model_bytes: bytes, labels_bytes: bytes) -> None:
    """The property: a working predictor with one probability per label,
    or BundleError."""
    with tempfile.TemporaryDirectory() as run:
        with open(os.path.join(run, "model.onnx"), "wb") as fh:
            fh.write(model_bytes)
        with open(os.path.join(run, "labels.txt"), "wb") as fh:
            fh.write(labels_bytes)
        try:
            predictor = Predictor(run)
            proba = predictor.predict_proba(PROBE)
        except BundleError as exc:
            assert "\n" not in str(exc)
            return
        assert proba.shape == (1, len(predictor.labels))


def test_tiny_bundle_works():
    with tempfile.TemporaryDirectory() as run:
        onnx.save(tiny_model(), os.path.join(run, "model.onnx"))
        with open(os.path.join(run, "labels.txt"), "w") as fh:
            fh.write("cat\ndog\nmug\n")
        assert Predictor(run).predict(PROBE)[0].label in LABELS


LABELS_TEXT = b"cat\ndog\nmug\n"


@CI
@given(model=mutated([MODEL_BYTES]))
def test_fuzz_bundle_model_bytes(model):
    check_bundle(model, LABELS_TEXT)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8,
)
SPEC_FIELDS = {"image_size": 16, "crop_fraction": 0.875, "mean": [127.0] * 3, "std": [128.0] * 3, "channels": "RGB",
               "resample": "bilinear"}


@st.composite
def metadata_model(draw) -> tuple[bytes, bytes]:
    """Well-formed ONNX whose edgetl metadata (labels, input spec) and
    labels.txt are fuzzed: the JSON a stranger's bundle could carry."""
    model = tiny_model()
    meta = {p.key: p for p in model.metadata_props}
    which = draw(st.sampled_from(["labels", "spec_field", "spec_json", "raw"]))
    labels_bytes = LABELS_TEXT
    if which == "labels":
        labels = draw(st.lists(st.text(max_size=6), max_size=4) | JSONISH)
        meta["edgetl.labels"].value = json.dumps(labels)
        labels_bytes = draw(st.sampled_from([
            LABELS_TEXT,
            "".join(f"{x}\n" for x in labels).encode("utf-8", "surrogatepass") if isinstance(labels, list) else b"",
            draw(st.binary(max_size=24)),
        ]))
    elif which == "spec_field":
        key = draw(st.sampled_from(sorted(SPEC_FIELDS)))
        meta["edgetl.input_spec"].value = json.dumps({**SPEC_FIELDS, key: draw(JSONISH)})
    elif which == "spec_json":
        meta["edgetl.input_spec"].value = json.dumps(draw(JSONISH))
    else:
        key = draw(st.sampled_from(["edgetl.labels", "edgetl.input_spec"]))
        meta[key].value = draw(st.text(max_size=24))
    return model.SerializeToString(), labels_bytes


@CI
@given(case=metadata_model())
def test_fuzz_bundle_metadata(case):
    check_bundle(*case)


# --------------------------------------------------------------------------- --config files


def config_seeds() -> list[bytes]:
    """What a run saves (every kind of field set), and hand-written files."""
    full = TrainConfig(data_dir="/data/photos", out="/runs/r1", backbone="mobilenet_v3_small", image_sizes=(112, 56),
                       crop_fraction=0.9, tap="block5", heads=("softmax", "ncm"), max_latency_ms=12.5,
                       max_macs="40M", max_model_mb=4.0, epochs=20, learning_rate=0.01, patience=4, seed=3,
                       grayscale=True, strategy="last-2", batch_size=16, max_memory_mb=512.0)
    return [
        full.to_toml().encode(),
        TrainConfig(data_dir="d", out="o").to_toml().encode(),
        b'data_dir = "d"\nout = "o"\nimage-size = 64\nsearch = false\nheads = "softmax,mlp"\nmax_macs = 4e7\n',
        b'[train]\nepochs = 3\nlearning_rate = 1e-2\nval_split = 0.25\n[other]\nx = 1\n',
    ]


CONFIG_SEEDS = config_seeds()
_FIELD_NAMES = sorted(f.name for f in dataclasses.fields(TrainConfig))
TOML_SCALAR = (st.booleans() | st.integers() | st.sampled_from([10**400, -(2**63), 2**64]) | st.floats()
               | st.text(max_size=10)
               | st.sampled_from(["on", "off", "head", "last-2", "last-0", "auto", "softmax,ncm", "40M", "0.5G", "-3M",
                                  "112,56", "²", "efficientnet_lite0", "", " ", "/tmp", "final", "block7"]))
TOML_VALUE = st.recursive(TOML_SCALAR, lambda children: st.lists(children, max_size=4)
                          | st.dictionaries(st.text(max_size=5), children, max_size=3), max_leaves=6)


def toml_value(value) -> str:
    """``value`` as TOML (inline): what a user or a tool could write."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}" for k, v in value.items()) + "}"


@st.composite
def generated_config(draw) -> bytes:
    """A well-formed TOML file of settings: known names (either spelling) and
    unknown ones, values of every TOML type, at the top level or under [train]."""
    names = st.sampled_from(_FIELD_NAMES + [n.replace("_", "-") for n in _FIELD_NAMES]) | st.text(max_size=6)
    settings = draw(st.dictionaries(names, TOML_VALUE, max_size=6))
    body = "\n".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}" for k, v in settings.items())
    header = draw(st.sampled_from(["", "[train]\n", "train = 3\n", "[train.sub]\n"]))
    return (header + body + "\n").encode("utf-8", "surrogatepass")


CONFIG_BYTES = st.one_of(generated_config(), mutated(CONFIG_SEEDS), st.binary(max_size=64))


def check_config(data: bytes) -> None:
    """The property: a TrainConfig, or one line of edgetl's own error (exit 2
    from 'edgetl train --config'); a config with both paths is saved as a
    config.toml that reads back as the same settings."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "config.toml")
        with open(path, "wb") as fh:
            fh.write(data)
        try:
            config = TrainConfig.from_toml(path)
        except EdgetlError as exc:
            assert str(exc) and "\n" not in str(exc), str(exc)
            return
        assert isinstance(config, TrainConfig)
        if config.data_dir and config.out:  # what a run saves repeats the run
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(config.to_toml())
            saved = config.replace(data_dir=os.path.abspath(config.data_dir), out=os.path.abspath(config.out),
                                   **{name: TrainConfig.__dataclass_fields__[name].default for name in NOT_SAVED})
            assert TrainConfig.from_toml(path) == saved


def test_config_seeds_read():
    for data in CONFIG_SEEDS[:3]:
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "config.toml")
            with open(path, "wb") as fh:
                fh.write(data)
            assert TrainConfig.from_toml(path).data_dir
        check_config(data)  # and what it saves reads back the same


@settings(CI, max_examples=300)
@given(data=CONFIG_BYTES)
def test_fuzz_config_file(data):
    check_config(data)


# --------------------------------------------------------------------------- feature cache shards

SHARD_DIM = 3


def shard_seed() -> tuple[bytes, dict[bytes, np.ndarray]]:
    """A real shard (5 rows) as FeatureCache writes it, and the row each key was written with."""
    from edgetl.features.cache import FeatureCache

    with tempfile.TemporaryDirectory() as folder:
        cache = FeatureCache(folder)
        keys = [hashlib.sha256(bytes([i])).digest() for i in range(5)]
        feats = np.arange(5 * SHARD_DIM, dtype=np.float32).reshape(5, SHARD_DIM) / 7
        cache.put(keys, feats)
        cache.flush()
        (name,) = [n for n in os.listdir(folder) if n.startswith("shard-")]
        with open(os.path.join(folder, name), "rb") as fh:
            return fh.read(), dict(zip(keys, feats))


SHARD_BYTES, SHARD_ROWS = shard_seed()


@st.composite
def edited_shard(draw) -> bytes:
    """The seed shard's arrays edited (rows reordered, cut, retyped, NaN,
    members dropped or added, single values changed) and saved as a well-formed npz:
    what the zip's own checksum cannot catch."""
    with np.load(io.BytesIO(SHARD_BYTES)) as data:
        arrays = {k: data[k] for k in data.files}
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(sorted(arrays) or ["keys"]))
        if name not in arrays:
            continue
        a = arrays[name]
        op = draw(st.sampled_from(["permute", "cut", "retype", "nan", "poke", "drop", "add", "reshape", "swap_all"]))
        if op == "permute" and a.ndim and len(a) > 1:
            arrays[name] = a[np.roll(np.arange(len(a)), draw(st.integers(1, len(a) - 1)))]
        elif op == "cut":
            arrays[name] = a[: draw(st.integers(0, max(0, len(a) - 1)))] if a.ndim else a
        elif op == "retype":
            arrays[name] = a.astype(draw(st.sampled_from([np.float64, np.float16, np.int64, np.uint8, ">f4"])))
        elif op == "nan" and a.size and a.dtype.kind == "f":
            a = a.copy()
            a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
            arrays[name] = a
        elif op == "poke" and a.size:
            a = a.copy()
            a.flat[draw(st.integers(0, a.size - 1))] = draw(st.integers(0, 200))
            arrays[name] = a
        elif op == "drop":
            arrays.pop(name)
        elif op == "add":
            arrays[draw(st.sampled_from(["extra", "keys", "features", "digest"]))] = np.zeros(draw(st.integers(0, 4)))
        elif op == "reshape" and a.size:
            arrays[name] = a.reshape(-1)
        elif op == "swap_all" and {"keys", "features"} <= set(arrays) and arrays["keys"].ndim \
                and arrays["features"].ndim and len(arrays["keys"]) == len(arrays["features"]) > 1:
            order = np.roll(np.arange(len(arrays["keys"])), 1)  # rows and keys together, digest unchanged
            arrays["keys"], arrays["features"] = arrays["keys"][order], arrays["features"][order]
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


SHARD_FILES = st.one_of(edited_shard(), mutated([SHARD_BYTES]), st.binary(max_size=64))


def check_shard(data: bytes) -> None:
    """The property: opening a cache over the file never raises, and every
    row it then serves is the one its key was written with (else a miss)."""
    from edgetl.features.cache import FeatureCache

    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "shard-fuzz.npz"), "wb") as fh:
            fh.write(data)
        cache = FeatureCache(folder, dim=SHARD_DIM)
        for key in list(cache._index):
            assert key in SHARD_ROWS, "a key that was never written"
            np.testing.assert_array_equal(cache.get([key])[0], SHARD_ROWS[key])
        if not len(cache):
            assert os.listdir(folder) == []  # a miss is removed, not re-read (and warned about) on every run


def test_shard_seed_is_trusted():
    from edgetl.features.cache import FeatureCache

    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "shard-seed.npz"), "wb") as fh:
            fh.write(SHARD_BYTES)
        assert len(FeatureCache(folder, dim=SHARD_DIM)) == len(SHARD_ROWS)


@CI
@given(data=SHARD_FILES)
def test_fuzz_cache_shard(data):
    check_shard(data)


# --------------------------------------------------------------------------- found by fuzzing: regressions


def _bundle_with(labels_meta: str | None = None, labels_bytes: bytes = LABELS_TEXT) -> tuple[bytes, bytes]:
    model = tiny_model()
    if labels_meta is not None:
        next(p for p in model.metadata_props if p.key == "edgetl.labels").value = labels_meta
    return model.SerializeToString(), labels_bytes


@pytest.mark.parametrize("labels_meta", ["null", "{}", '"cat"', "[1, 2, 3]", "[]", "[[]]"])
def test_found_labels_metadata_that_is_not_a_list_of_names(labels_meta):
    """bench/fuzz.py: edgetl.labels = null raised TypeError (len of None)."""
    with pytest.raises(BundleError, match="damaged edgetl metadata"):
        check_bundle_strict(*_bundle_with(labels_meta))


def test_found_labels_txt_not_utf8():
    """test_fuzz_bundle_metadata: a labels.txt of b'\\x80' raised UnicodeDecodeError."""
    with pytest.raises(BundleError, match="not readable UTF-8"):
        check_bundle_strict(*_bundle_with(labels_bytes=b"\x80"))


def check_bundle_strict(model_bytes: bytes, labels_bytes: bytes) -> None:
    """check_bundle, but the BundleError reaches the test."""
    with tempfile.TemporaryDirectory() as run:
        with open(os.path.join(run, "model.onnx"), "wb") as fh:
            fh.write(model_bytes)
        with open(os.path.join(run, "labels.txt"), "wb") as fh:
            fh.write(labels_bytes)
        Predictor(run).predict_proba(PROBE)


def _config_error(text: bytes) -> str:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "config.toml")
        with open(path, "wb") as fh:
            fh.write(text)
        with pytest.raises(DataError) as info:
            TrainConfig.from_toml(path)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_found_config_file_not_utf8():
    """test_fuzz_config_file: a --config file of b'\\x80' raised UnicodeDecodeError (internal error)."""
    assert "is not valid TOML" in _config_error(b"\x80")


@pytest.mark.parametrize("text, phrase", [
    ('image_sizes = "²"', "--image-sizes must be a whole number"),  # '²'.isdigit(), int('²') raised ValueError
    ("crop_fraction = 1" + "0" * 400, "--crop-fraction must be a finite number"),  # OverflowError in isfinite
    ("max_macs = 1" + "0" * 400, "--max-macs must be a finite number"),  # OverflowError in float()
])
def test_found_config_values_that_crashed(text, phrase):
    assert phrase in _config_error(text.encode())

