"""Class names are user text (issue 18, items 9, 10, 11): markup, table
syntax and mathtext dollars are shown as written in the report, the model
card and the plots; control characters are refused at the scan. And the
report shows only images of the run's own data folder, whatever a
(possibly edited) metrics.json lists."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
from PIL import Image

from edgetl.cli import main
from edgetl.report import write_model_card, write_report

XSS = "<img src=x onerror=alert(1)>"
HOSTILE = ["$", "$$", "$x^2$ _a_ *b*", XSS, "a|b", "back`tick"]


def _hostile_copy(shared_run, tmp_path) -> tuple[str, list[str]]:
    """The shared bundle's folder with its three labels renamed to hostile
    ones in labels.txt and metrics.json (what the report and the card read)."""
    run = str(tmp_path / "run")
    shutil.copytree(shared_run.run_dir, run)
    m = json.load(open(os.path.join(run, "metrics.json")))
    old = list(m["labels"])
    rename = dict(zip(old, [XSS, "a|b", "$$"]))
    m["labels"] = [rename[c] for c in old]
    m["per_class"] = {rename[c]: v for c, v in m["per_class"].items()}
    m["counts"]["per_class"] = {rename[c]: v for c, v in m["counts"]["per_class"].items()}
    with open(os.path.join(run, "metrics.json"), "w") as fh:
        json.dump(m, fh)
    with open(os.path.join(run, "labels.txt"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(m["labels"]) + "\n")
    return run, m["labels"]


def _table_cells(line: str) -> list[str]:
    """The cells of a Markdown table row as GitHub splits them (an escaped pipe does not split)."""
    return re.split(r"(?<!\\)\|", line.strip().strip("|"))


def test_model_card_shows_labels_as_text(shared_run, tmp_path):
    run, labels = _hostile_copy(shared_run, tmp_path)
    card = open(write_model_card(run), encoding="utf-8").read()
    assert "<img" not in card and "onerror=alert(1)&gt;" in card
    lines = card.splitlines()
    start = lines.index("| class | precision | recall | validation images |") + 2
    rows = lines[start : start + len(labels)]
    assert [_table_cells(row)[0].strip() for row in rows] == ["&lt;img src=x onerror=alert(1)&gt;", "a\\|b", "$$"]
    assert all(len(_table_cells(row)) == 4 for row in rows), rows
    try:
        from markdown_it import MarkdownIt
    except ImportError:  # the raw text checks above still hold
        return
    page = MarkdownIt("commonmark").enable("table").render(card)
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "a|b" in page


def test_report_shows_labels_as_text_and_plots_dollars(shared_run, tmp_path):
    """'$$' as a class name made matplotlib parse mathtext and fail after the
    whole run; the tick labels must be the names as written."""
    run, labels = _hostile_copy(shared_run, tmp_path)
    page = open(write_report(run), encoding="utf-8").read()
    assert XSS not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    for name in ("confusion_matrix.png", "per_class.png"):
        with Image.open(os.path.join(run, "plots", name)) as im:
            assert im.width > 100


def test_plots_draw_dollar_labels_literally():
    from matplotlib.cbook import is_math_text

    from edgetl.report.html import plot_confusion, plot_per_class

    fig = plot_confusion(np.eye(len(HOSTILE), dtype=np.int64), HOSTILE, normalised=True)
    fig.canvas.draw()  # parses every text: mathtext would raise on '$$'
    shown = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert [s.replace(r"\$", "$") for s in shown] == HOSTILE  # what matplotlib draws for an escaped dollar
    assert not any(is_math_text(s) for s in shown)
    per = {c: {"precision": 0.5, "recall": 0.5} for c in HOSTILE}
    plot_per_class(per, HOSTILE).canvas.draw()


def test_search_plot_draws_dollar_names_literally(tmp_path):
    """The search plot names a backbone (any name can be registered) and its taps."""
    from edgetl.heads import HEAD_KINDS
    from edgetl.search import Candidate
    from edgetl.search.plot import plot_candidates

    cands = [Candidate(32, tap, head, 8, macs, 1.0, None, val_accuracy=0.5 + 0.1 * i)
             for i, (tap, macs, head) in enumerate((("$$", 1e5, HEAD_KINDS[0]), ("$x$", 1e6, HEAD_KINDS[-1])))]
    path = str(tmp_path / "search.png")
    assert plot_candidates(cands, cands[-1], path, baselines={"$$": 0.4}, title="$$net$: accuracy") == path
    with Image.open(path) as im:
        assert im.width > 100


def _gallery_run(shared_run, tmp_path) -> tuple[str, dict]:
    """A copy of the shared bundle trained on a copy of its data folder, whose
    metrics.json lists an image in that folder, one outside it and a link in it
    that leads outside."""
    data = tmp_path / "data"
    shutil.copytree(shared_run.data_dir, data)
    run = str(tmp_path / "run")
    shutil.copytree(shared_run.run_dir, run)
    config = open(os.path.join(run, "config.toml"), encoding="utf-8").read()
    config = re.sub(r'(?m)^data_dir = .*$', f"data_dir = {json.dumps(str(data))}", config)
    with open(os.path.join(run, "config.toml"), "w", encoding="utf-8") as fh:
        fh.write(config)
    private = tmp_path / "elsewhere" / "private-photo.png"
    private.parent.mkdir()
    Image.new("RGB", (40, 40), (10, 200, 10)).save(private)
    os.symlink(private, data / "disc" / "link-out.png")
    inside = data / "disc" / "000.png"
    m = json.load(open(os.path.join(run, "metrics.json")))
    m["val_predictions"] = [{"path": str(p), "label": "disc", "predicted": "bars", "probability": 0.9}
                            for p in (inside, private, data / "disc" / "link-out.png")]
    with open(os.path.join(run, "metrics.json"), "w") as fh:
        json.dump(m, fh)
    return run, m


def test_report_embeds_only_images_of_the_runs_data_folder(shared_run, tmp_path):
    run, _ = _gallery_run(shared_run, tmp_path)
    page = open(write_report(run), encoding="utf-8").read()
    assert page.count('class="thumb"') == 1 and 'alt="000.png"' in page
    for name in ("private-photo.png", "link-out.png"):
        assert f"{name}: not shown, outside the run's data folder" in page
        assert f'alt="{name}"' not in page
    # A run that records no data folder shows no image at all.
    os.remove(os.path.join(run, "config.toml"))
    page = open(write_report(run), encoding="utf-8").read()
    assert 'class="thumb"' not in page and "000.png: not shown" in page


def test_control_characters_in_a_class_name_refused_before_training(tmp_path, capsys):
    root = tmp_path / "data"
    for cls in ("two\nlines", "plain"):
        for i in range(2):
            os.makedirs(root / cls, exist_ok=True)
            Image.new("RGB", (16, 16), (i * 100, 0, 0)).save(root / cls / f"{i}.png")
    assert main(["train", str(root), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "two\\nlines" in err and "control characters" in err, err
    assert not (tmp_path / "run").exists()


def test_training_with_hostile_class_names_end_to_end(tmp_path, shared_run):
    """Folders named '$', '$$' and markup: a whole run gives a bundle, a report
    with its plots and a card, every name shown as written. (After the shared
    run, whose 32 px graph it reuses from the cache: a few seconds.)"""
    from conftest import make_shapes_folder

    from edgetl import train
    from edgetl.runtime import Predictor

    shapes = make_shapes_folder(tmp_path / "shapes", num_per_class=4, size=32)
    data = tmp_path / "data"
    data.mkdir()
    names = ["$", "$$", XSS]
    for src, dst in zip(sorted(os.listdir(shapes)), names):
        shutil.move(os.path.join(shapes, src), data / dst)
    result = train(str(data), str(tmp_path / "run"), image_size=32, search="off", progress=False)
    run = result.run_dir
    assert Predictor(run).labels == sorted(names)
    page = open(os.path.join(run, "report.html"), encoding="utf-8").read()
    card = open(os.path.join(run, "README.md"), encoding="utf-8").read()
    assert XSS not in page and "<img" not in card
    assert {"confusion_matrix.png", "per_class.png"} <= set(os.listdir(os.path.join(run, "plots")))
