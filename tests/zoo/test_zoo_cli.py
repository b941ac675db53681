"""Every backbone through the CLI: `train --backbone` and `imagenet --backbone`
work once its weights are on the machine, and say how to get them when not."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

import edgetl
from edgetl.cli import main

NAME = "mobilenet_v3_small"  # the cheapest fetchable model keeps this quick


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    monkeypatch.setenv("EDGETL_WEIGHTS_DIR", str(folder))
    return folder


def test_missing_weights_name_fetch_and_import(weights_dir, tmp_path, capsys):
    from conftest import make_shapes_folder

    data = make_shapes_folder(tmp_path / "shapes", num_per_class=3)
    assert main(["train", data, "--out", str(tmp_path / "run"), "--backbone", NAME]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"edgetl weights fetch {NAME}" in err[0] and f"edgetl weights import {NAME}" in err[0]
    assert not (tmp_path / "run").exists()
    Image.new("RGB", (40, 40), (200, 10, 10)).save(tmp_path / "red.png")
    assert main(["imagenet", str(tmp_path / "red.png"), "--backbone", NAME]) == 2
    assert "edgetl weights fetch" in capsys.readouterr().err


@pytest.mark.slow  # train + imagenet on imported weights (~7 s): the full suite
def test_train_and_imagenet_with_imported_weights(weights_dir, tmp_path, capsys):
    from conftest import make_shapes_folder

    # Stand-in for a downloaded checkpoint: same keys and shapes as the published one.
    checkpoint = tmp_path / "mine.pth"
    torch.save(edgetl.create_backbone(NAME, weights=None).state_dict(), checkpoint)
    assert main(["weights", "import", NAME, str(checkpoint)]) == 0
    capsys.readouterr()
    data = make_shapes_folder(tmp_path / "shapes", num_per_class=6)
    run = tmp_path / "run"
    assert main(["train", data, "--out", str(run), "--backbone", NAME, "--image-size", "64", "--search", "off"]) == 0
    metrics = json.load(open(run / "metrics.json"))
    assert metrics["backbone"] == NAME and metrics["features"]["dim"] == 1024
    assert metrics["agreement_fp32"] == 1.0
    capsys.readouterr()
    Image.new("RGB", (40, 40), (200, 10, 10)).save(tmp_path / "red.png")
    assert main(["imagenet", str(tmp_path / "red.png"), "--backbone", NAME, "--top", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out[0]["top"]) == 2 and 0 <= out[0]["top"][0]["index"] < 1000
