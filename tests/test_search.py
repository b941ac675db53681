"""The budget-aware transfer search (issue 4) on real weights and real ONNX
Runtime: candidates, budgets, selection on validation data only, baselines,
truncated export, caching. The digits result itself is asserted by the demo
test (tests/test_demo.py)."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from PIL import Image

from edgetl.cli import main
from edgetl.errors import DataError
from edgetl.runtime import Predictor
from edgetl.search import (Budget, Candidate, ScoreCache, choose, make_scorer, parse_count, search_sizes,
                           with_native_size)
from edgetl.training import train

SIZES = [64, 32]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from conftest import make_shapes_folder

    return make_shapes_folder(tmp_path_factory.mktemp("search") / "shapes", num_per_class=12, size=48)


@pytest.fixture(scope="module")
def searched(shapes, tmp_path_factory):
    run = tmp_path_factory.mktemp("search-run") / "run"
    result = train(shapes, run, image_sizes=SIZES, val_split=0.25, seed=0, progress=False)
    return str(run), result


def test_sizes_halve_and_cost_at_most_four_thirds():
    assert search_sizes(224) == [224, 112, 56, 32]
    assert search_sizes(240) == [240, 120, 56, 32]
    assert search_sizes(32) == [32]
    for default in (224, 240, 260, 299):
        sizes = search_sizes(default)
        assert len(sizes) >= 4 and sizes[-1] == 32
        # Compute grows with the pixel count: the whole ladder vs its largest size.
        assert sum(s * s for s in sizes) / sizes[0] ** 2 <= 4 / 3


def test_native_size_joins_the_ladder_when_cheap_and_new():
    ladder = search_sizes(224)
    assert with_native_size(ladder, 80) == [224, 112, 80, 56, 32]
    assert with_native_size(ladder, 28) == ladder  # below the smallest: upsampling is the ladder's job
    assert with_native_size(ladder, 1000) == ladder  # above the default: never cheaper
    assert with_native_size(ladder, 60) == ladder  # within 20 % of 56
    assert with_native_size(ladder, 160) == ladder  # would cost more than 1.5x the largest size
    assert sum(s * s for s in with_native_size(ladder, 80)) <= 1.5 * 224**2


def test_parse_count():
    assert parse_count("40M") == 40e6 and parse_count("0.5G") == 5e8 and parse_count("2k") == 2000
    assert parse_count(1e6) == 1e6 and parse_count(None) is None
    with pytest.raises(DataError, match="--max-macs"):
        parse_count("lots")


def _cand(tap, size, head, macs, acc, mb=1.0):
    return Candidate(size, tap, head, 8, macs, mb, None, val_accuracy=acc)


def test_ties_go_to_the_cheaper_candidate():
    big = _cand("final", 224, "softmax", 300e6, 0.950)
    small = _cand("block7", 32, "softmax", 3e6, 0.947)  # within half a point: a tie
    worse = _cand("block4", 32, "softmax", 1e6, 0.930)
    assert choose([big, small, worse]) is small
    clear = _cand("final", 224, "mlp", 300e6, 0.970)  # a real gain is not a tie
    assert choose([big, small, worse, clear]) is clear
    unscored = _cand("block2", 32, "mlp", 1e5, None)
    over = _cand("block2", 32, "ncm", 1e5, 0.99)
    over.fits_budget = False
    assert choose([big, small, unscored, over]) is small


def test_selection_protocol_kfold_for_small_holdout_for_large():
    rng = np.random.default_rng(0)
    y_small = np.repeat(np.arange(3), 20)
    _, protocol = make_scorer(y_small, np.arange(45), np.arange(45, 60), 3, 0, {}, lambda k, p: p)
    assert protocol["kind"] == "kfold" and protocol["folds"] == 5
    y_large = rng.integers(0, 4, 4000)
    _, protocol = make_scorer(y_large, np.arange(3000), np.arange(3000, 4000), 4, 0, {}, lambda k, p: p)
    assert protocol == {"kind": "holdout", "train": 3000, "val": 1000,
                        "description": "fit on 3000 images, scored on the 1000 held out"}


def test_budget_over():
    b = Budget(max_latency_ms=1.0, max_macs=10e6, max_model_mb=2.0)
    assert b.over(5e6, 1.0, 0.5) == []
    assert len(b.over(50e6, 3.0, 2.0)) == 3
    with pytest.raises(DataError, match="positive"):
        Budget(max_macs=0)


def test_candidates_cover_sizes_taps_heads(searched):
    run, result = searched
    m = json.load(open(os.path.join(run, "metrics.json")))
    cands = m["search"]["candidates"]
    taps = result.searcher.graphs[64].taps
    assert len(cands) == len(SIZES) * len(taps) * 3
    assert {(c["image_size"], c["tap"], c["head"]) for c in cands} == {
        (s, t, h) for s in SIZES for t in taps for h in ("softmax", "ncm", "mlp")}
    for c in cands:
        assert c["macs"] > 0 and c["model_mb"] > 0 and c["latency_ms"] > 0
    # Linear heads are scored everywhere; the hidden-layer head on the best 3 (size, tap) pairs.
    assert all(c["val_accuracy"] is not None for c in cands if c["head"] != "mlp")
    assert sum(c["val_accuracy"] is not None for c in cands if c["head"] == "mlp") == 3
    # Compute grows with depth and with input size.
    soft = {(c["image_size"], c["tap"]): c["macs"] for c in cands if c["head"] == "softmax"}
    for size in SIZES:
        macs = [soft[(size, t)] for t in taps]
        assert macs == sorted(macs)
    assert all(soft[(64, t)] > soft[(32, t)] for t in taps)
    assert m["search"]["protocol"]["kind"] == "kfold"  # 36 images: small
    assert os.path.getsize(os.path.join(run, "search.png")) > 10_000
    assert open(os.path.join(run, "search.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_chosen_and_baselines_in_metrics(searched):
    run, result = searched
    m = json.load(open(os.path.join(run, "metrics.json")))
    ch = m["chosen"]
    assert {"tap", "image_size", "head", "macs", "latency_ms", "model_mb", "val_accuracy"} <= set(ch)
    best = max(c["val_accuracy"] for c in m["search"]["candidates"] if c["val_accuracy"] is not None)
    assert ch["selection_score"] >= best - m["search"]["protocol"]["tie_tolerance"] - 1e-9
    assert ch["val_accuracy"] == m["val_accuracy"]
    raw, naive = m["baselines"]["raw_pixels"], m["baselines"]["final_layer"]
    assert raw["model"] == "logistic_regression" and 0 <= raw["val_accuracy"] <= 1
    assert naive["tap"] == "final" and naive["image_size"] == 224 and naive["head"] == "softmax"
    assert naive["macs"] > ch["macs"]
    assert m["transfer_beats_raw_pixels"] == (ch["val_accuracy"] > raw["val_accuracy"])
    assert len(m["val_predictions"]) == m["counts"]["val"]
    assert {"path", "label", "predicted", "probability"} == set(m["val_predictions"][0])


def test_export_is_cut_at_the_chosen_tap(searched):
    run, result = searched
    m = result.metrics
    tap = m["chosen"]["tap"]
    model = onnx.load(os.path.join(run, "model.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["edgetl.input_spec"])["image_size"] == m["chosen"]["image_size"]
    if tap != "final":
        full = onnx.load(result.searcher.graphs[m["chosen"]["image_size"]].onnx_path)
        assert len(model.graph.initializer) < len(full.graph.initializer)
        assert os.path.getsize(os.path.join(run, "model.onnx")) < os.path.getsize(
            result.searcher.graphs[m["chosen"]["image_size"]].onnx_path)
    # The device runtime on the cut model agrees with the host head.
    assert m["agreement_fp32"] == 1.0
    preds = Predictor(run).predict(result.val_paths)
    truth = [os.path.basename(os.path.dirname(p)) for p in result.val_paths]
    assert np.mean([p.label == t for p, t in zip(preds, truth)]) >= 0.8


def test_pinned_tap_is_truncated(shapes, tmp_path):
    run = tmp_path / "pinned"
    result = train(shapes, run, tap="block4", image_size=32, heads=("softmax",), progress=False)
    m = result.metrics
    assert (m["chosen"]["tap"], m["chosen"]["image_size"], m["chosen"]["head"]) == ("block4", 32, "softmax")
    assert len(m["search"]["candidates"]) == 1
    names = {t.name for t in onnx.load(os.path.join(run, "model.onnx")).graph.initializer}
    assert any("_blocks.4." in n for n in names)
    assert not any(f"_blocks.{i}." in n for n in names for i in range(5, 16))
    assert m["features"]["dim"] == 40


def test_search_off_is_the_naive_recipe(shapes, tmp_path):
    result = train(shapes, tmp_path / "naive", search="off", progress=False)
    m = result.metrics
    assert not m["search"]["enabled"] and len(m["search"]["candidates"]) == 1
    assert (m["chosen"]["tap"], m["chosen"]["image_size"], m["chosen"]["head"]) == ("final", 224, "softmax")
    assert m["features"]["dim"] == 1280
    assert m["chosen"]["macs"] == m["baselines"]["final_layer"]["macs"]


def test_budget_drops_candidates(shapes, tmp_path, searched):
    _, full = searched
    cands = full.metrics["search"]["candidates"]
    budget = sorted(c["macs"] for c in cands)[len(cands) // 3]
    result = train(shapes, tmp_path / "budget", image_sizes=SIZES, max_macs=budget, progress=False)
    m = result.metrics
    assert m["chosen"]["macs"] <= budget
    for c in m["search"]["candidates"]:
        assert c["fits_budget"] == (c["macs"] <= budget)
        if not c["fits_budget"]:
            assert c["val_accuracy"] is None and c["note"].startswith("over budget")
    assert m["search"]["budget"]["max_macs"] == budget


def test_budget_nothing_fits_names_the_cheapest(shapes, tmp_path, capsys):
    with pytest.raises(DataError, match=r"No candidate fits the budget.*cheapest is block\d+ at 32 px"):
        train(shapes, tmp_path / "none", image_sizes=SIZES, max_macs=1000, progress=False)
    assert not (tmp_path / "none").exists()
    code = main(["train", shapes, "--out", str(tmp_path / "cli"), "--image-size", "32", "--max-latency-ms", "1e-6"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "No candidate fits the budget" in err[0] and "ms" in err[0]
    assert not (tmp_path / "cli").exists()


def test_bad_search_flags(shapes, tmp_path, capsys):
    for argv, expected in ((["--tap", "block99"], "Unknown tap 'block99'"), (["--heads", "svm"], "Unknown head 'svm'"),
                           (["--max-macs", "many"], "--max-macs")):
        code = main(["train", shapes, "--out", str(tmp_path / "x"), "--image-size", "32", *argv])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and expected in err[0], err


def test_second_search_is_served_from_the_cache(shapes, tmp_path, monkeypatch, searched):
    """Same folder, same settings: every feature and every score is cached,
    so no head is fitted during the search."""
    import edgetl.heads.selection as selection

    _, first = searched

    def no_fitting(*args, **kwargs):
        raise AssertionError("a candidate was scored again")

    monkeypatch.setattr(selection, "cv_score", no_fitting)
    again = train(shapes, tmp_path / "again", image_sizes=SIZES, val_split=0.25, seed=0, progress=False)
    assert again.metrics["features"]["extracted"] == 0
    assert again.metrics["chosen"] == first.metrics["chosen"]
    assert os.path.isfile(ScoreCache().path)


def test_cli_prints_table_and_baselines(shapes, tmp_path, capsys):
    code = main(["train", shapes, "--out", str(tmp_path / "cli"), "--image-size", "32", "--heads", "softmax,ncm"])
    out = capsys.readouterr().out
    assert code == 0
    assert "candidates scored by stratified" in out and "chosen:" in out
    assert "naive (final layer, 224 px, softmax)" in out and "raw pixels (" in out
    m = json.load(open(tmp_path / "cli" / "metrics.json"))
    assert f"{m['chosen']['val_accuracy']:.1%}" in out
    says_not = "transfer does NOT beat the raw-pixel baseline" in out
    assert says_not == (not m["transfer_beats_raw_pixels"])


def test_gray_images_fold_the_stem_and_count_it(tmp_path):
    """Grey folders: the one-channel stem's MACs are what the candidates cost."""
    root = tmp_path / "grey"
    rng = np.random.default_rng(0)
    for cls, level in (("dark", 60), ("light", 190)):
        (root / cls).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(np.clip(rng.normal(level, 25, (24, 24)), 0, 255).astype(np.uint8), "L").save(
                root / cls / f"{i}.png")
    result = train(root, tmp_path / "run", image_size=32, tap="block2", heads=("ncm",), progress=False)
    m = result.metrics
    assert m["input_spec"]["channels"] == "L"
    from edgetl.zoo.profile import tap_macs

    head_macs = 24 * 2
    assert m["chosen"]["macs"] == tap_macs("efficientnet_lite0", 32, channels=1)["block2"] + head_macs
    assert m["chosen"]["macs"] < tap_macs("efficientnet_lite0", 32, channels=3)["block2"] + head_macs
