"""features.cache: a shard is trusted whole or not at all. A shard whose rows
were swapped, that has fewer feature rows than keys, NaN features, no digest
(an older edgetl), another width, or is not a shard at all, is a miss: removed
with one warning, its images extracted again (issue 18, items 7 and 14).
Through FeatureExtractor, on a real graph: the rows after re-extraction are
exactly those of a fresh cache, and an image replaced while extraction runs
is cached under the hash of what was decoded (item 6)."""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from edgetl.features import extract
from edgetl.features.cache import FeatureCache, read_shard, shard_digest
from edgetl.features.extract import FeatureExtractor

SIZE = 32


def _keys(n: int, salt: str = "") -> list[bytes]:
    return [hashlib.sha256(f"{salt}{i}".encode()).digest() for i in range(n)]


def _one_shard(folder: str, n: int = 6, dim: int = 4) -> tuple[str, list[bytes], np.ndarray]:
    cache = FeatureCache(folder)
    keys, feats = _keys(n), np.arange(n * dim, dtype=np.float32).reshape(n, dim)
    cache.put(keys, feats)
    cache.flush()
    (path,) = glob.glob(os.path.join(folder, "shard-*.npz"))
    return path, keys, feats


def _rewrite(path: str, old_digest: str = "keep", **changes) -> None:
    """The shard at ``path`` saved again with ``changes``; ``old_digest``:
    ``keep``, ``fresh`` (recomputed: a well-formed shard of wrong rows) or ``drop``."""
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays.update(changes)
    if old_digest == "fresh":
        arrays["digest"] = shard_digest(arrays["keys"], arrays["features"])
    elif old_digest == "drop":
        arrays.pop("digest")
    np.savez(path, **arrays)


def _swap_rows(f):
    return f[np.roll(np.arange(len(f)), 1)]


def _nan_row(f):
    f = f.copy()
    f[2, 1] = np.nan
    return f


TAMPERED = {
    "rows swapped": lambda p, k, f: _rewrite(p, features=_swap_rows(f)),
    "keys swapped": lambda p, k, f: _rewrite(p, keys=np.frombuffer(b"".join(k), np.uint8).reshape(-1, 32)[::-1].copy()),
    "fewer rows than keys": lambda p, k, f: _rewrite(p, features=f[:-2]),
    "fewer rows than keys, digest recomputed": lambda p, k, f: _rewrite(p, "fresh", features=f[:-2]),
    "NaN features, digest recomputed": lambda p, k, f: _rewrite(p, "fresh", features=_nan_row(f)),
    "no digest (an older edgetl)": lambda p, k, f: _rewrite(p, "drop"),
    "digest of another shape": lambda p, k, f: _rewrite(p, digest=np.zeros(3, np.uint8)),
    "features as float64": lambda p, k, f: _rewrite(p, "fresh", features=f.astype(np.float64)),
    "an extra member": lambda p, k, f: _rewrite(p, extra=np.zeros(1)),
    "compressed": lambda p, k, f: np.savez_compressed(p, **dict(np.load(p))),
    "not a zip": lambda p, k, f: open(p, "wb").write(b"PK\x03\x04 half"),
    "a pickle": lambda p, k, f: np.save(open(p, "wb"), np.array([{"a": 1}], dtype=object), allow_pickle=True),
}


@pytest.mark.parametrize("how", sorted(TAMPERED))
def test_a_shard_that_cannot_be_trusted_is_a_miss(tmp_path, caplog, how):
    folder = str(tmp_path / "cache")
    path, keys, feats = _one_shard(folder)
    TAMPERED[how](path, keys, feats)
    with caplog.at_level(logging.WARNING, logger="edgetl"):
        cache = FeatureCache(folder)
    assert len(cache) == 0 and not any(k in cache for k in keys)
    assert not os.path.exists(path)  # removed: it neither warns nor costs a read again
    (record,) = [r for r in caplog.records if "could not be trusted" in r.getMessage()]
    assert os.path.basename(path) in record.getMessage() and "extracted again" in record.getMessage()


def test_a_whole_shard_is_trusted_and_a_consistent_reorder_too(tmp_path):
    folder = str(tmp_path / "cache")
    path, keys, feats = _one_shard(folder)
    assert read_shard(path, dim=4)[2] is None
    order = np.roll(np.arange(len(keys)), 2)  # keys and rows reordered together: still right, digest recomputed
    key_array = np.frombuffer(b"".join(keys), np.uint8).reshape(-1, 32)[order]
    _rewrite(path, "fresh", keys=key_array, features=feats[order])
    cache = FeatureCache(folder)
    np.testing.assert_array_equal(cache.get(keys), feats)


def test_a_shard_of_another_width_is_a_miss(tmp_path):
    folder = str(tmp_path / "cache")
    path, keys, _ = _one_shard(folder, dim=4)
    assert len(FeatureCache(folder, dim=5)) == 0 and not os.path.exists(path)


def test_put_refuses_rows_that_do_not_match_the_keys(tmp_path):
    cache = FeatureCache(str(tmp_path / "cache"), dim=3)
    with pytest.raises(ValueError):
        cache.put(_keys(2), np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError):
        cache.put(_keys(2), np.zeros((2, 4), np.float32))


# --------------------------------------------------------------------------- through the extractor, real graph


@pytest.fixture(scope="module")
def graph():
    from edgetl.export.backbone_onnx import export_backbone
    from edgetl.zoo import get_spec

    return export_backbone("efficientnet_lite0", input_spec=get_spec("efficientnet_lite0").input_spec.replace(
        image_size=SIZE), taps=True)


@pytest.fixture
def images(tmp_path):
    from conftest import make_shapes_folder

    data = make_shapes_folder(tmp_path / "shapes", num_per_class=2, size=SIZE, seed=61)
    return sorted(glob.glob(os.path.join(data, "*", "*.png")))


@pytest.mark.parametrize("how", ["rows swapped", "fewer rows than keys", "NaN features, digest recomputed"])
def test_tampered_shard_is_extracted_again(graph, images, tmp_path, caplog, how):
    cache_dir = str(tmp_path / "cache")
    first = FeatureExtractor(graph, cache_dir=cache_dir).extract(images, progress=False)
    (path,) = glob.glob(os.path.join(cache_dir, "features", graph.key, "shard-*.npz"))
    with np.load(path) as data:
        keys, feats = list(data["keys"]), data["features"]
    TAMPERED[how](path, [bytes(k) for k in keys], feats)
    with caplog.at_level(logging.WARNING, logger="edgetl"):
        again = FeatureExtractor(graph, cache_dir=cache_dir).extract(images, progress=False)
    assert any("could not be trusted" in r.getMessage() for r in caplog.records)
    assert (again.num_extracted, again.num_cached) == (len(images), 0)
    np.testing.assert_array_equal(again.features, first.features)
    third = FeatureExtractor(graph, cache_dir=cache_dir).extract(images, progress=False)
    assert (third.num_extracted, third.num_cached) == (0, len(images))


def test_image_replaced_during_extraction_is_cached_as_decoded(graph, images, tmp_path, monkeypatch, caplog):
    """The image is hashed, then replaced before it is decoded: its features
    are those of the new content, cached under the new content's hash; the
    old content's hash (still another file's: a copy) gets that file's own
    features in a second pass, never the new content's."""
    target = images[0]
    copy = os.path.join(os.path.dirname(target), "zz-copy.png")
    shutil.copyfile(target, copy)  # the old content lives on under another name
    paths = images + [copy]
    old_bytes = open(target, "rb").read()
    new_image = Image.fromarray(np.random.default_rng(5).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))
    real = extract._read_and_hash

    def hash_then_replace(path):
        out = real(path)
        if path == target:
            new_image.save(target)  # replaced between hashing and decoding
        return out

    monkeypatch.setattr(extract, "_read_and_hash", hash_then_replace)
    cache_dir = str(tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="edgetl"):
        got = FeatureExtractor(graph, cache_dir=cache_dir).extract(paths, progress=False)
    monkeypatch.setattr(extract, "_read_and_hash", real)
    fresh = FeatureExtractor(graph, cache_dir=str(tmp_path / "fresh")).extract(paths, progress=False)
    assert list(got.ok) == list(range(len(paths)))
    np.testing.assert_allclose(got.features, fresh.features, atol=1e-5)
    assert not np.allclose(got.features[0], got.features[-1])  # the new content, not the old one's copy
    cache = FeatureCache(os.path.join(cache_dir, "features", graph.key))
    new_key = hashlib.sha256(open(target, "rb").read()).digest()
    np.testing.assert_allclose(cache.get([new_key])[0], fresh.features[0], atol=1e-5)
    np.testing.assert_allclose(cache.get([hashlib.sha256(old_bytes).digest()])[0], fresh.features[-1], atol=1e-5)
    assert any(target in r.getMessage() and "changed" in r.getMessage() for r in caplog.records)
    again = FeatureExtractor(graph, cache_dir=cache_dir).extract(paths, progress=False)
    assert again.num_extracted == 0
    np.testing.assert_allclose(again.features, fresh.features, atol=1e-5)


def test_non_finite_features_stop_the_run_and_are_not_cached(graph, images, tmp_path, monkeypatch):
    """Features of NaN (the graph's weights are broken) never enter the
    cache: WeightsError names the first image, and nothing is kept."""
    from edgetl.errors import WeightsError

    real = FeatureExtractor.run_batch

    def nan_rows(self, batch):
        out = real(self, batch)
        out[1:, 3] = np.nan
        return out

    monkeypatch.setattr(FeatureExtractor, "run_batch", nan_rows)
    cache_dir = str(tmp_path / "cache")
    with pytest.raises(WeightsError, match=r"computes NaN or Inf features for '.*' and \d+ more: .*--weights"):
        FeatureExtractor(graph, cache_dir=cache_dir).extract(images, progress=False)
    assert not glob.glob(os.path.join(cache_dir, "features", graph.key, "*.npz"))


@pytest.mark.slow
def test_weights_of_nan_are_refused_in_one_line(tmp_path, capsys):
    """A --weights file holding NaN: the run stops at extraction (exit 2),
    instead of training a head on NaN and shipping it."""
    import torch
    from conftest import make_shapes_folder
    from safetensors.torch import save_file

    from edgetl.cli import main
    from edgetl.zoo import create_backbone

    state = create_backbone("efficientnet_lite0", weights="default").state_dict()
    first = next(k for k, v in state.items() if v.dim() == 4)
    state[first] = torch.full_like(state[first], float("nan"))
    weights = str(tmp_path / "nan.safetensors")
    save_file({k: v.contiguous() for k, v in state.items()}, weights)
    data = make_shapes_folder(tmp_path / "shapes", num_per_class=3, size=SIZE, seed=62)
    code = main(["train", data, "--out", str(tmp_path / "run"), "--weights", weights, "--image-size", str(SIZE),
                 "--search", "off", "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("edgetl: error: efficientnet_lite0 computes NaN or Inf features")
    assert not (tmp_path / "run").exists()
