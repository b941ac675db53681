"""Data sets larger than ``sample_images`` (issue 16): the search's
selection and the raw-pixel baseline on a stratified sample, stated in
metrics.json; the chosen head still trained on every image and validated on
the whole validation split."""

from __future__ import annotations

import functools
import json
import os
import shutil
import tomllib

import numpy as np
import pytest

from clitools import one_line_refusal
from edgetl.data.folder import stratified_sample, stratified_split
from edgetl.errors import DataError
from edgetl.training.config import TrainConfig
from edgetl.training.sampling import sample_splits


# -- the sampler ---------------------------------------------------------------------------

def test_sample_keeps_each_class_share():
    y = np.repeat([0, 1, 2, 3], [600, 300, 90, 10])
    idx = stratified_sample(y, 100, seed=0)
    assert len(idx) == 100 and len(set(idx.tolist())) == 100
    assert np.all(np.diff(idx) > 0)  # sorted indices into y
    assert np.bincount(y[idx]).tolist() == [60, 30, 9, 1]
    # Shares that do not divide evenly: the largest remainders round up, the total is exact.
    odd = stratified_sample(np.repeat([0, 1, 2], [50, 30, 20]), 7, seed=1)
    assert len(odd) == 7 and np.bincount(np.repeat([0, 1, 2], [50, 30, 20])[odd]).tolist() == [4, 2, 1]


def test_every_class_keeps_at_least_one():
    y = np.repeat([0, 1, 2], [990, 9, 1])
    counts = np.bincount(y[stratified_sample(y, 20, seed=0)], minlength=3)
    assert counts.tolist() == [18, 1, 1]
    # More classes than the sample: one of each, nothing more.
    many = np.repeat(np.arange(6), 10)
    assert np.bincount(many[stratified_sample(many, 3, seed=0)]).tolist() == [1] * 6
    # Labels need not be 0..k-1: a class absent from targets gets nothing.
    sparse = np.repeat([2, 7], [40, 4])
    assert sorted(set(sparse[stratified_sample(sparse, 5, seed=0)].tolist())) == [2, 7]


def test_sample_is_deterministic_by_seed():
    y = np.random.default_rng(3).integers(0, 5, 1000)
    a, b = stratified_sample(y, 100, seed=7), stratified_sample(y, 100, seed=7)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, stratified_sample(y, 100, seed=8))


@pytest.mark.parametrize("n", [50, 51, 10_000])
def test_a_sample_as_large_as_the_set_is_all_of_it(n):
    y = np.repeat([0, 1], [30, 20])
    assert np.array_equal(stratified_sample(y, n, seed=0), np.arange(50))


def test_splits_sampled_in_their_proportions():
    y = np.repeat(np.arange(4), 250)
    train_idx, val_idx = stratified_split(y, 0.2, seed=0)
    s = sample_splits(y, train_idx, val_idx, 100, seed=0)
    assert s.sampled and (len(s.train), len(s.val)) == (80, 20)
    assert set(s.train) <= set(train_idx) and set(s.val) <= set(val_idx)
    assert np.bincount(y[s.train]).tolist() == [20] * 4 and np.bincount(y[s.val]).tolist() == [5] * 4
    record = s.record()
    assert record["threshold"] == 100 and record["labeled_images"] == 1000
    assert record["search"] == record["raw_pixel_baseline"] == {"train": 80, "val": 20}
    # At or below the threshold: the whole splits, nothing to state.
    whole = sample_splits(y, train_idx, val_idx, 1000, seed=0)
    assert not whole.sampled and whole.record() is None
    assert whole.train is train_idx and whole.val is val_idx


# -- the setting ------------------------------------------------------------------------------

@pytest.mark.parametrize("value, words", [(0, "--sample-images must be at least 1, got 0"),
                                          (-5, "--sample-images must be at least 1, got -5"),
                                          (2.5, "--sample-images must be a whole number, got 2.5")])
def test_a_wrong_sample_images_is_one_line(tmp_path, capsys, value, words):
    with pytest.raises(DataError, match=words):
        TrainConfig(data_dir="photos", out="run", sample_images=value)
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f'data_dir = "{tmp_path}"\nout = "{tmp_path / "run"}"\nsample_images = {value}\n')
    one_line_refusal(["train", "--config", str(cfg)], capsys, words)
    assert not (tmp_path / "run").exists()


def test_sample_images_flag(tmp_path, capsys):
    from edgetl.cli import build_parser
    from edgetl.cli.train import train_config

    one_line_refusal(["train", str(tmp_path), "--out", str(tmp_path / "run"), "--sample-images", "0"], capsys,
                     "--sample-images must be at least 1, got 0")
    assert not (tmp_path / "run").exists()
    args = build_parser().parse_args(["train", "photos", "--out", "run", "--sample-images", "500"])
    assert train_config(args).sample_images == 500
    assert TrainConfig(data_dir="photos", out="run").sample_images == 20000


# -- one real run above the threshold ---------------------------------------------------------

@pytest.mark.slow  # a whole run: the full suite (the sampler and the split sample stay in the default one)
def test_a_run_above_sample_images_samples_the_search_and_the_raw_pixel_baseline(tmp_path, monkeypatch, capsys):
    """Digit scans, 4 classes x 30, sample_images 40: the search and the
    raw-pixel baseline see 40 images, the head all 120. The search's k-fold
    threshold is lowered to 20 so the sample takes the holdout protocol, as
    20,000 of a million images would (above KFOLD_BELOW_IMAGES)."""
    from edgetl.cli import main
    from edgetl.demo import write_digits_folder
    from edgetl.search import scoring, searcher, search_summary

    every = tmp_path / "all"
    write_digits_folder(str(every))
    data = tmp_path / "digits"
    for digit in "0123":
        (data / digit).mkdir(parents=True)
        for name in sorted(os.listdir(every / digit))[:30]:
            shutil.copy(every / digit / name, data / digit / name)
    monkeypatch.setattr(searcher, "make_scorer", functools.partial(scoring.make_scorer, kfold_below=20))
    run = tmp_path / "run"
    assert main(["train", str(data), "--out", str(run), "--image-size", "32", "--sample-images", "40"]) == 0
    out = capsys.readouterr().out
    m = json.loads((run / "metrics.json").read_text())

    assert m["counts"]["images_used"] == 120 and (m["counts"]["train"], m["counts"]["val"]) == (96, 24)
    sample = m["sample"]
    assert sample["threshold"] == 40 and sample["labeled_images"] == 120
    assert sample["search"] == sample["raw_pixel_baseline"] == {"train": 32, "val": 8}
    assert "stratified sample of 40" in sample["description"]
    protocol = m["search"]["protocol"]
    assert protocol["kind"] == "holdout" and (protocol["train"], protocol["val"]) == (32, 8)
    assert protocol["sampled_from"] == 120 and "sample" in protocol["description"]
    scored = [c for c in m["search"]["candidates"] if c["val_accuracy"] is not None]
    assert scored and all(round(c["val_accuracy"] * 8) == pytest.approx(c["val_accuracy"] * 8) for c in scored)
    raw = m["baselines"]["raw_pixels"]
    assert raw["sampled"] is True and (raw["train_images"], raw["val_images"]) == (32, 8)
    # The model itself: trained on every training image, validated on the whole validation split.
    assert len(m["val_predictions"]) == 24 == sum(m["per_class"][c]["support"] for c in m["labels"])
    assert np.asarray(m["confusion_matrix"]).sum() == 24
    assert m["config"]["sample_images"] == 40
    assert tomllib.loads((run / "config.toml").read_text())["train"]["sample_images"] == 40
    # Told on the console and in the report.
    assert "a stratified sample of the 120 labeled images" in out
    assert "raw-pixel baseline on a stratified sample of 8" in out
    assert any("stratified sample of 8" in line for line in search_summary(m))
    assert "Sampled:" in (run / "report.html").read_text() and "Sampled:" in (run / "README.md").read_text()
