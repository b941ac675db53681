"""edgetl.events: what a listener hears during a real (small) training run,
and that nobody listening costs nothing and changes nothing."""

from __future__ import annotations

import pytest

from conftest import make_shapes_folder
from edgetl import events, train


def test_a_training_run_reports_extraction_candidates_and_epochs(tmp_path):
    data = make_shapes_folder(tmp_path / "shapes", num_per_class=10, seed=4177)  # images no other test caches
    heard: list[dict] = []
    with events.listening(heard.append):
        result = train(data, str(tmp_path / "run"), image_size=32, progress=False)
    kinds = [e["event"] for e in heard]
    extract = [e for e in heard if e["event"] == "extract"]
    assert extract and extract[-1]["done"] == extract[-1]["total"] > 0  # a fresh cache: every image extracted
    assert all(e["done"] <= e["total"] for e in extract)
    scored = {(e["image_size"], e["tap"], e["head"]): e["val_accuracy"] for e in heard if e["event"] == "candidate"}
    recorded = {(c["image_size"], c["tap"], c["head"]): c["val_accuracy"]
                for c in result.metrics["search"]["candidates"] if c["val_accuracy"] is not None}
    assert scored.keys() == recorded.keys()
    for key, acc in recorded.items():
        assert scored[key] == pytest.approx(acc, abs=1e-4)
    epochs = [e for e in heard if e["event"] == "epoch"]
    assert epochs and epochs[0]["epoch"] == 1 and all("train_loss" in e for e in epochs)
    assert kinds.index("candidate") > kinds.index("extract") and kinds.index("epoch") > kinds.index("candidate")
    # the listener is gone after the block
    after: list[dict] = []
    events.emit("epoch", epoch=1)
    assert after == [] and not events._listeners


def test_a_listener_that_raises_does_not_stop_the_run(tmp_path):
    data = make_shapes_folder(tmp_path / "shapes", num_per_class=8)

    def broken(record):
        raise RuntimeError("front end gone")

    with events.listening(broken):
        result = train(data, str(tmp_path / "run"), image_size=32, search="off", progress=False)
    assert result.metrics["val_accuracy"] >= 0.5


def test_rate_reports_rate_and_time_left():
    heard: list[dict] = []
    with events.listening(heard.append):
        rate = events.Rate("extract", 10, every_s=0.0)
        rate.add(4)
        rate.add(6)
    assert heard[0] == {"event": "extract", "done": 0, "total": 10, "rate": None, "eta_s": None}
    assert heard[1]["done"] == 4 and heard[1]["rate"] > 0 and heard[1]["eta_s"] >= 0
    assert heard[-1]["done"] == 10 and heard[-1]["eta_s"] == 0
