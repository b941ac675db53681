"""Candidates: their costs come from the head registry, ties go to the
cheaper (then to the head registered first), and compute grows with depth
and input size (planned on the graphs of the session's shared bundle)."""

from __future__ import annotations

import pytest

from edgetl.heads import HEAD_KINDS, make_head
from edgetl.search import HEADS, Budget, Candidate, Search, choose, format_table, head_cost, plan_candidates


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


def test_equal_cost_ties_go_to_the_head_registered_first():
    assert HEADS == HEAD_KINDS
    for later in range(1, len(HEADS)):
        for first in range(later):
            pair = [_cand("block2", 32, HEADS[later], 1e6, 0.9), _cand("block2", 32, HEADS[first], 1e6, 0.9)]
            assert choose(pair).head == HEADS[first]
    with pytest.raises(ValueError, match="no scored candidate"):
        choose([_cand("block2", 32, "softmax", 1e6, None)])


def test_head_costs_and_kwargs_come_from_the_head_classes():
    for kind in HEADS:
        assert head_cost(kind, 1280, 5) == make_head(kind).cost(1280, 5)
    assert head_cost("softmax", 100, 3) == (300, (303 + 200) * 4 / 1e6)
    assert head_cost("ncm", 100, 3) == head_cost("softmax", 100, 3)
    assert head_cost("mlp", 100, 3) == (100 * 256 + 256 * 3, (100 * 256 + 256 + 256 * 3 + 3 + 200) * 4 / 1e6)
    run = {"epochs": 30, "learning_rate": 1e-3, "l2": 1e-4, "patience": 5, "seed": 0}
    assert Search.head_kwargs("softmax", run) == run
    assert Search.head_kwargs("ncm", run) == {}
    assert Search.head_kwargs("mlp", run) == {k: v for k, v in run.items() if k != "epochs"}


def test_table_marks_the_chosen_best_first():
    a, b = _cand("block2", 32, "softmax", 1e6, 0.8), _cand("final", 32, "ncm", 2e6, 0.9)
    c = _cand("block4", 32, "mlp", 3e6, None)
    c.note = "not tried"
    lines = format_table([a, b, c], chosen=b).splitlines()
    assert lines[0].split()[:3] == ["tap", "size", "head"]
    assert lines[1].startswith("* final") and lines[2].startswith("  block2") and lines[3].endswith("not tried")
    assert len(format_table([a, b, c], limit=1).splitlines()) == 2


def test_compute_grows_with_depth_and_input_size(shared_run):
    """Planned (no image read) on the shared bundle's graphs: its searched size and the baseline's."""
    graphs = shared_run.result.searcher.graphs
    assert set(graphs) == {32, 224}
    taps = graphs[32].taps
    cands = plan_candidates("efficientnet_lite0", graphs, 3, HEADS, None, Budget(max_macs=50e6), None)
    assert {(c.image_size, c.tap, c.head) for c in cands} == {
        (s, t, h) for s in graphs for t in taps + ("all",) for h in HEADS}
    soft = {(c.image_size, c.tap): c for c in cands if c.head == "softmax"}
    for size in graphs:
        macs = [soft[(size, t)].macs for t in taps]
        assert macs == sorted(macs)
        # "all": the whole backbone's work, every tap's width (a wider head).
        assert soft[(size, "all")].dim == sum(soft[(size, t)].dim for t in taps)
        assert soft[(size, "all")].macs > soft[(size, "final")].macs
    assert all(soft[(224, t)].macs > soft[(32, t)].macs for t in taps)
    assert all(c.macs > 0 and c.model_mb > 0 and c.latency_ms > 0 for c in cands)
    # The budget verdict: MACs over 50M at 224 px, everything at 32 px fits.
    assert all(c.fits_budget == (c.macs <= 50e6) for c in cands)
    assert any(not c.fits_budget for c in cands) and all(c.fits_budget for c in cands if c.image_size == 32)



def test_costs_are_measured_once_per_graph_and_machine(shared_run, tmp_path, monkeypatch):
    """The first call profiles, cuts and times every tap; its latencies are
    made monotone (a tap is a prefix of every later one, so a slower figure is
    noise); a second call is served from the cache without building anything."""
    from edgetl.search import costs

    graph = shared_run.result.searcher.graphs[32]
    timed = iter([0.5, 0.9, 0.4, 1.0, 2.0, 3.0, 3.5, 4.0, 4.5, 5.0])  # the second tap measured slow
    monkeypatch.setattr(costs, "measure_latency_ms", lambda path, shape: next(timed))
    first = costs.tap_costs(graph, "efficientnet_lite0", cache_dir=str(tmp_path))
    lat = [first[t].latency_ms for t in graph.taps]
    assert lat[:3] == [0.4, 0.4, 0.4] and lat == sorted(lat)
    assert [first[t].macs for t in graph.taps] == sorted(first[t].macs for t in graph.taps)

    def no_work(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(costs, "measure_latency_ms", no_work)
    monkeypatch.setattr("edgetl.zoo.profile.profile_taps", no_work)
    monkeypatch.setattr("edgetl.export.graph_ops.truncate_to_tap", no_work)
    again = costs.tap_costs(graph, "efficientnet_lite0", cache_dir=str(tmp_path), taps=("block2", "final"))
    assert again == {t: first[t] for t in ("block2", "final")}
