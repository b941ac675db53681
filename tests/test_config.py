"""`edgetl train --config run.toml`: the same fields as the flags; the
resolved settings saved in the run folder repeat the run exactly."""

from __future__ import annotations

import json
import tomllib

import pytest

from edgetl.cli import main


@pytest.fixture
def shapes(tmp_path):
    from conftest import make_shapes_folder

    return make_shapes_folder(tmp_path / "shapes", num_per_class=8, size=40)


def test_config_file_runs_and_is_saved_resolved(shapes, tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'data_dir = "{shapes}"\nout = "{tmp_path / "run"}"\nimage-size = 32\n'
                   'heads = "ncm"\nseed = 3\nepochs = 20\n')
    assert main(["train", "--config", str(cfg)]) == 0
    saved = tomllib.loads((tmp_path / "run" / "config.toml").read_text())["train"]
    assert saved["image_size"] == 32 and saved["heads"] == ["ncm"] and saved["seed"] == 3
    assert saved["epochs"] == 20 and saved["backbone"] == "efficientnet_lite0" and saved["search"] == "on"
    first = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert first["config"]["seed"] == 3 and first["input_spec"]["image_size"] == 32
    # Repeat from the saved file, to another folder: the same choice and the same figures.
    capsys.readouterr()
    assert main(["train", "--config", str(tmp_path / "run" / "config.toml"), "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["chosen"] == first["chosen"] and again["val_accuracy"] == first["val_accuracy"]
    assert again["baselines"] == first["baselines"]


def test_flags_override_the_file(shapes, tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'[train]\ndata_dir = "{shapes}"\nimage_size = 64\nsearch = "off"\n')
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--image-size", "32"]) == 0
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["chosen"]["image_size"] == 32 and m["chosen"]["tap"] == "final" and not m["search"]["enabled"]


@pytest.mark.parametrize("text, expected", [
    ("image_size = ", "not valid TOML"),
    ('colour = "red"', "unknown setting 'colour'"),
    ("seed = 1", "needs DATA_DIR and --out"),
])
def test_bad_config_one_line(tmp_path, capsys, text, expected):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text + "\n")
    assert main(["train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert main(["train", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
