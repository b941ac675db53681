"""report.html (self-contained, shown in headless Chromium) and the model card."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from edgetl.cli import main
from edgetl.report import classification_metrics, format_report, write_model_card, write_report

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def plain_run(shared_run):
    """A bundle as 'edgetl train' writes it (the session's shared one: only read, tests copy it)."""
    return shared_run.run_dir, shared_run.data_dir


@pytest.fixture(scope="module")
def full_run(plain_run, tmp_path_factory):
    """The same bundle with the optional fields the search adds to metrics.json:
    search candidates, chosen, baselines and per-image validation predictions
    (one of whose files is gone)."""
    from edgetl.runtime import Predictor

    src, data = plain_run
    run = str(tmp_path_factory.mktemp("full") / "run")
    shutil.copytree(src, run)
    labels = open(os.path.join(run, "labels.txt")).read().split()
    paths = sorted(os.path.join(data, c, f) for c in labels for f in os.listdir(os.path.join(data, c)))[::3]
    preds = Predictor(run).predict(paths)
    m = json.load(open(os.path.join(run, "metrics.json")))
    m["val_predictions"] = [{"path": p, "label": os.path.basename(os.path.dirname(p)), "predicted": r.label,
                             "probability": r.probability} for p, r in zip(paths, preds)]
    m["val_predictions"].append({"path": os.path.join(data, "gone.png"), "label": labels[0], "predicted": labels[1],
                                 "probability": 0.99})
    m["val_predictions"][0]["predicted"] = next(c for c in labels if c != m["val_predictions"][0]["label"])
    cands = [{"tap": tap, "image_size": size, "head": head, "macs": macs, "latency_ms": lat, "model_mb": mb,
              "val_accuracy": acc, "fits_budget": fits}
             for tap, size, head, macs, lat, mb, acc, fits in [
                 ("block2", 32, "softmax", 2e6, 0.3, 0.1, 0.81, True),
                 ("block4", 32, "ncm", 9e6, 0.7, 0.5, 0.9, True),
                 ("head", 64, "mlp", 80e6, 4.0, 4.0, 0.95, False)]]
    m["search"] = {"candidates": cands}
    m["chosen"] = dict(cands[1])
    m["baselines"] = {"raw_pixels": {"val_accuracy": 0.61}, "final_layer": {"val_accuracy": 0.83}}
    with open(os.path.join(run, "metrics.json"), "w") as fh:
        json.dump(m, fh)
    return run, m


def test_report_is_one_self_contained_page(full_run):
    run, metrics = full_run
    path = write_report(run)
    assert path == os.path.join(run, "report.html")
    page = open(path, encoding="utf-8").read()
    srcs = re.findall(r'<img[^>]+src="([^"]+)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r'(src|href)="(https?:|file:|/)', page)
    for title in ("Confusion matrix", "Per-class precision and recall", "Training curve", "Search (3 candidates)",
                  "Baselines", "Worst-classified validation images", "Model size, compute and speed"):
        assert title in page
    assert "block4 (chosen)" in page and "61.0%" in page and "83.0%" in page
    # every existing validation image of the gallery, the missing one left out
    shown = [r for r in metrics["val_predictions"] if os.path.isfile(r["path"])]
    assert page.count('class="thumb"') == min(12, len(shown))
    assert "gone.png" not in page
    # the misclassified one comes first, with its true and predicted labels
    first = page.index('class="thumb"')
    wrong = metrics["val_predictions"][0]
    assert os.path.basename(wrong["path"]) in page[first:first + 3000]
    assert f"true <b>{wrong['label']}</b><br>predicted <b>{wrong['predicted']}</b>" in page
    plots = sorted(os.listdir(os.path.join(run, "plots")))
    assert plots == ["accuracy_vs_macs.png", "confusion_matrix.png", "confusion_matrix_normalized.png",
                     "per_class.png", "training_curve.png"]
    for name in plots:
        with Image.open(os.path.join(run, "plots", name)) as im:
            assert im.width > 200 and im.height > 150
    # latency measured for both models (metrics.json has one only for the chosen fp32 one)
    assert "measured now" in page and "model.int8.onnx" in page


def test_report_renders_in_headless_chromium(full_run, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not (chromium and driver_path):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver must be installed in CI (.ci/run installs them)")
        pytest.skip("needs Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    run, _ = full_run
    path = write_report(run)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,900"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get("file://" + os.path.abspath(path))
        state = driver.execute_async_script("""
            const done = arguments[arguments.length - 1];
            const imgs = Array.from(document.images);
            Promise.all(imgs.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; })))
              .then(() => done(imgs.map(i => [i.alt, i.naturalWidth, i.naturalHeight])));
        """)
        title = driver.title
        headings = [h.text for h in driver.find_elements("css selector", "h2")]
    finally:
        driver.quit()
    assert len(state) >= 6
    assert all(w > 0 and h > 0 for _alt, w, h in state), state
    assert title.startswith("edgetl run")
    assert "Worst-classified validation images" in headings


def test_report_from_todays_metrics_only(plain_run, tmp_path):
    src, _ = plain_run
    run = str(tmp_path / ".myrun.tmp-4242")  # what 'edgetl train' calls the folder before publishing it
    shutil.copytree(src, run)
    for f in ("report.html", "README.md"):
        if os.path.exists(os.path.join(run, f)):
            os.remove(os.path.join(run, f))
    shutil.rmtree(os.path.join(run, "plots"), ignore_errors=True)
    # only the fields every bundle has had since the start; the search adds the rest
    m = json.load(open(os.path.join(run, "metrics.json")))
    for key in ("search", "chosen", "baselines", "val_predictions"):
        m.pop(key, None)
    with open(os.path.join(run, "metrics.json"), "w") as fh:
        json.dump(m, fh)
    page = open(write_report(run), encoding="utf-8").read()
    assert "Search (" not in page and "<h2>Baselines" not in page
    assert "No validation images to show" in page
    assert "<title>edgetl run: myrun</title>" in page
    assert sorted(os.listdir(os.path.join(run, "plots"))) == [
        "confusion_matrix.png", "confusion_matrix_normalized.png", "per_class.png", "training_curve.png"]
    card = open(write_model_card(run), encoding="utf-8").read()
    assert "No baseline was recorded" in card
    assert card.startswith("# myrun:") and 'Predictor("myrun/"' in card
    assert not [f for f in os.listdir(run) if ".tmp" in f]


def test_model_card(full_run):
    run, metrics = full_run
    path = write_model_card(run)
    assert path == os.path.join(run, "README.md")
    card = open(path, encoding="utf-8").read()
    for section in ("## Data", "## Backbone and why", "## Metrics (validation)", "## Baselines",
                    "## Intended use and limits", "### Python", "### Android", "### iOS"):
        assert section in card
    assert f"`{metrics['backbone']}` tapped at `block4` with a `ncm` head" in card
    assert "3 candidates" in card and "2 that fit" in card
    assert "| raw pixels | 61.0% |" in card and "| final layer | 83.0% |" in card
    assert f"| accuracy | {metrics['val_accuracy']:.1%} |" in card
    for label in metrics["labels"]:
        assert f"`{label}` (" in card
    assert "VNCoreMLRequest" in card and "Interpreter(" in card and "Predictor(" in card


def test_report_command(full_run, capsys, tmp_path):
    run, _ = full_run
    assert main(["report", run]) == 0
    out = capsys.readouterr().out
    assert "report.html" in out and "README.md" in out
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert "metrics.json" in err and "\n" not in err


def test_metrics_helpers_still_work():
    m = classification_metrics([0, 1, 1, 2], [0, 1, 2, 2], ["a", "b", "c"])
    assert m["confusion_matrix"] == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
    assert "accuracy 0.7500 on 4 images" in format_report(m)


def test_metrics_match_scikit_learn():
    """The numpy metrics against scikit-learn's, a class never predicted and one never present included."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 4, 300), rng.integers(0, 5, 300)
    y_pred[y_pred == 4] = 0
    y_true[y_true == 3] = 2
    m = classification_metrics(y_true, y_pred, ["a", "b", "c", "d"])
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=[0, 1, 2, 3],
                                                                     zero_division=0)
    assert m["confusion_matrix"] == confusion_matrix(y_true, y_pred, labels=[0, 1, 2, 3]).tolist()
    for i, name in enumerate("abcd"):
        row = m["per_class"][name]
        np.testing.assert_allclose([row["precision"], row["recall"], row["f1"]], [precision[i], recall[i], f1[i]])
        assert row["support"] == support[i]
    assert m["accuracy"] == float((y_true == y_pred).mean())


def test_report_tolerates_partial_optional_fields(full_run, tmp_path):
    src, metrics = full_run
    run = str(tmp_path / "run")
    shutil.copytree(src, run)
    m = dict(metrics)
    m["chosen"] = {"tap": "block4", "head": None, "macs": None, "latency_ms": None}
    m["search"] = {"candidates": [{"tap": "block4", "macs": None, "val_accuracy": None}, "not a dict"]}
    m["baselines"] = {"raw_pixels": {"val_accuracy": None}, "final_layer": "?"}
    m["val_predictions"] = [{"path": None}, {"path": metrics["val_predictions"][1]["path"], "label": "disc",
                                             "predicted": "disc", "probability": None}]
    with open(os.path.join(run, "metrics.json"), "w") as fh:
        json.dump(m, fh)
    page = open(write_report(run), encoding="utf-8").read()
    assert page.count('class="thumb"') == 1 and "Search (1 candidates)" in page
    assert "## Backbone and why" in open(write_model_card(run), encoding="utf-8").read()
