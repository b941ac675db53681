"""The head trained from Parquet features streamed from disk
(``heads.streaming``, ``training.parquet_path``): ``edgetl extract`` then
``edgetl train FEATURES``, on real digits through the real backbone."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("pyarrow")

from clitools import one_line_refusal  # noqa: E402

from edgetl.data.folder import stratified_split  # noqa: E402
from edgetl.heads.softmax import SoftmaxHead  # noqa: E402

PARAMS = dict(epochs=40, learning_rate=1e-3, l2=1e-3, patience=8, seed=0)


def _sorted_digits():
    """sklearn's digits, one class after another (as a folder's Parquet rows come)."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    order = np.argsort(y, kind="stable")
    return X[order].astype(np.float32), y[order]


def _blocks(X, rows: int, dtype=np.float32):
    return lambda: ((s, X[s : s + rows].astype(dtype)) for s in range(0, len(X), rows))


def test_streamed_head_learns_what_the_in_memory_head_learns(tmp_path, monkeypatch):
    """Class-sorted blocks, many shuffle parts, float16 storage: the streamed
    head standardises as the in-memory one and is as accurate."""
    import edgetl.heads.streaming as streaming

    X, y = _sorted_digits()
    train, val = stratified_split(y, 0.25, 0)
    split = np.full(len(y), -1, np.int8)
    split[train], split[val] = 0, 1
    in_memory = SoftmaxHead(**PARAMS).fit(X[train], y[train], X[val], y[val])
    expected = (in_memory.predict(X[val]) == y[val]).mean()
    monkeypatch.setattr(streaming, "SPILL_PART_BYTES", 40_000)  # ~10 parts of ~150 rows
    seen = []
    real_part = streaming._Spill.part

    def part(self, p, mean, scale):
        X_part, y_part = real_part(self, p, mean, scale)
        seen.append(len(y_part))
        return X_part, y_part

    monkeypatch.setattr(streaming._Spill, "part", part)
    for dtype in (np.float32, np.float16):
        head = streaming.fit_streamed(_blocks(X, 100, dtype), y, split, dtype=dtype, workdir=str(tmp_path), **PARAMS)
        np.testing.assert_allclose(head.mean_, in_memory.mean_, atol=2e-2 if dtype == np.float16 else 1e-5)
        np.testing.assert_allclose(head.scale_, in_memory.scale_, rtol=1e-2 if dtype == np.float16 else 1e-5)
        accuracy = (head.predict(X[val]) == y[val]).mean()
        assert accuracy >= expected - 0.02 and accuracy > 0.9, (dtype, accuracy, expected)
        assert head.n_epochs_ == len(head.history_) and 1 <= head.best_epoch_ <= head.n_epochs_
        # Every training row once per epoch, never more than a part at a time, and nothing left on disk.
        assert max(seen) < 1.5 * 40_000 / (64 * np.dtype(dtype).itemsize) + 20
        assert os.listdir(tmp_path) == []
        seen.clear()


def test_the_shuffle_mixes_classes_into_every_part(tmp_path, monkeypatch):
    import edgetl.heads.streaming as streaming

    X, y = _sorted_digits()
    split = np.zeros(len(y), np.int8)
    monkeypatch.setattr(streaming, "SPILL_PART_BYTES", 80_000)
    train, val, mean, std = streaming._spill(_blocks(X, 128)(), y, split, str(tmp_path), np.float32,
                                            np.random.default_rng(0))
    assert train.num_parts > 3 and val.rows.sum() == 0 and train.rows.sum() == len(y)
    for p in range(train.num_parts):
        _, labels = train.part(p, mean, std)
        assert len(set(labels.tolist())) == 10  # a part is not one class's block


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """30 digits per class, extracted at 32 px (final tap) by 'edgetl extract'."""
    from edgetl.cli import main
    from edgetl.demo import write_digits_folder

    root = tmp_path_factory.mktemp("pq")
    every, data = root / "every", root / "data"
    write_digits_folder(str(every))
    for cls in sorted(os.listdir(every)):
        os.makedirs(data / cls)
        for name in sorted(os.listdir(every / cls))[:30]:
            shutil.copyfile(every / cls / name, data / cls / name)
    settings = [str(data), "--image-size", "32", "--search", "off", "--tap", "final"]
    assert main(["extract", *settings, "--out", str(root / "feats")]) == 0
    assert json.loads((root / "feats" / "manifest.json").read_text())["data_dir"] == str(data)
    return root, settings


def test_train_from_features_gives_a_working_bundle(extracted, capsys):
    from edgetl.cli import main
    from edgetl.runtime import Predictor

    root, settings = extracted
    feats = "file://" + str(root / "feats")  # any pyarrow.fs location (the S3 case: test_extract_locations)
    assert main(["train", feats, "--out", str(root / "run"), "--image-size", "32"]) == 0
    assert "0 extracted" in capsys.readouterr().out
    m = json.loads((root / "run" / "metrics.json").read_text())
    assert m["counts"]["train"] + m["counts"]["val"] == 300 and m["chosen"]["tap"] == "final"
    assert m["chosen"]["image_size"] == 32 and m["features"]["dtype"] == "float32"
    assert m["val_accuracy"] > 0.75 and m["agreement_fp32"] == 1.0
    # What metrics.json says the head predicted is what the shipped model predicts.
    rows = m["val_predictions"]
    assert len(rows) == m["counts"]["val"]
    proba = Predictor(str(root / "run")).predict_proba([r["path"] for r in rows])
    labels = (root / "run" / "labels.txt").read_text().split()
    assert [labels[i] for i in proba.argmax(axis=1)] == [r["predicted"] for r in rows]


@pytest.mark.slow  # a second whole run: the full suite
def test_train_from_features_is_as_accurate_as_the_folder_run(extracted):
    from edgetl.cli import main

    root, settings = extracted
    assert main(["train", str(root / "feats"), "--out", str(root / "streamed"), "--image-size", "32"]) == 0
    assert main(["train", *settings, "--out", str(root / "ram")]) == 0
    streamed, ram = (json.loads((root / run / "metrics.json").read_text()) for run in ("streamed", "ram"))
    assert ram["features"]["extracted"] == 0  # extract filled the cache train uses
    assert streamed["counts"]["val"] == ram["counts"]["val"]
    assert abs(ram["val_accuracy"] - streamed["val_accuracy"]) <= 0.06


def test_train_from_features_refusals(extracted, capsys, tmp_path):
    root, _ = extracted
    feats = str(root / "feats")
    one_line_refusal(["train", feats, "--out", str(tmp_path / "a"), "--image-size", "64"], capsys, "32 px",
                     "--image-size")
    one_line_refusal(["train", feats, "--out", str(tmp_path / "b"), "--image-size", "32", "--tap", "stage2"], capsys,
                     "'stage2'", "--tap")
    one_line_refusal(["train", feats, "--out", str(tmp_path / "c"), "--strategy", "full"], capsys, "fine-tunes")
    moved = tmp_path / "feats"
    shutil.copytree(feats, moved)
    manifest = json.loads((moved / "manifest.json").read_text())
    manifest["data_dir"] = str(tmp_path / "gone")
    (moved / "manifest.json").write_text(json.dumps(manifest))
    one_line_refusal(["train", str(moved), "--out", str(tmp_path / "d"), "--image-size", "32"], capsys,
                     "not there")
    assert not any(os.path.exists(tmp_path / name) for name in "abcd")


@pytest.mark.slow  # every tap at two sizes extracted, then a search: the full suite
def test_train_from_features_searches_what_was_extracted_on_a_sample(extracted, capsys):
    """Every tap at two sizes extracted: the folder path's search picks among
    them on a stratified sample (stated), then the chosen head is streamed."""
    from edgetl.cli import main

    root, _ = extracted
    data = str(root / "data")
    assert main(["extract", data, "--image-sizes", "32", "--out", str(root / "all"), "--feature-dtype",
                 "float16"]) == 0
    assert main(["train", str(root / "all"), "--out", str(root / "searched"), "--sample-images", "120"]) == 0
    m = json.loads((root / "searched" / "metrics.json").read_text())
    search = m["search"]
    assert search["enabled"] and len(search["candidates"]) > 4 and search["protocol"]["sampled_from"] == 300
    assert m["sample"]["search"]["train"] + m["sample"]["search"]["val"] == 120
    scored = [c for c in search["candidates"] if c["val_accuracy"] is not None]
    assert {c["image_size"] for c in scored} == {224, 32}
    chosen = m["chosen"]
    assert any((c["image_size"], c["tap"]) == (chosen["image_size"], chosen["tap"]) for c in scored)
    assert m["features"]["dtype"] == "float16" and m["counts"]["val"] == 60 and m["agreement_fp32"] >= 0.9
    assert m["val_accuracy"] > 0.6
