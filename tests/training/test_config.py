"""`edgetl train --config run.toml`: the same fields as the flags; the
resolved settings saved in the run folder repeat the run exactly."""

from __future__ import annotations

import dataclasses
import json
import os
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


# -- TrainConfig: the one home of every setting --------------------------------------------

def _sample(f):
    """A valid non-default value for a field, as a flag's text and as the parsed value."""
    from edgetl.training.config import TrainConfig

    samples = {"data_dir": ("photos", "photos"), "out": ("run", "run"), "backbone": ("mobilenet_v2", "mobilenet_v2"),
               "weights": ("w.pth", "w.pth"), "search": ("off", "off"), "tap": ("block7", "block7"),
               "heads": ("ncm,mlp", ("ncm", "mlp")), "image_sizes": ("112,56", (112, 56)),
               "max_macs": ("40M", "40M"), "strategy": ("last-2", "last-2"), "crop_fraction": ("0.5", 0.5),
               "val_split": ("0.3", 0.3), "engine": ("ray", "ray"), "ray_address": ("auto", "auto")}
    if f.name in samples:
        return samples[f.name]
    kind = f.metadata["type"]
    assert kind in (int, float, bool), f"add a sample for the new setting {f.name!r} here"
    if kind is bool:
        return None, not bool(f.default) if f.default is not None else True
    value = kind(64 if kind is int else 2.5)
    return str(value), value


def test_every_setting_is_a_flag_a_config_key_and_a_saved_value(tmp_path):
    """Adding a field to TrainConfig is the whole edit: the CLI flag, the
    --config key and config.toml follow from it."""
    from dataclasses import fields

    from edgetl.cli import build_parser
    from edgetl.cli.train import train_config
    from edgetl.training.config import NOT_SAVED, TrainConfig, flag_name, read_toml

    argv, expected = ["train"], {}
    for f in fields(TrainConfig):
        text, value = _sample(f)
        expected[f.name] = value
        if f.name == "data_dir":
            argv.append(text)
        elif text is None:
            argv.append(flag_name(f))
        else:
            argv += [flag_name(f), text]
    args = build_parser().parse_args(argv)
    from_flags = train_config(args)
    assert from_flags.to_dict() == expected
    # The same settings from a TOML file, and config.toml written back reads as the same config.
    saved = tmp_path / "config.toml"
    saved.write_text(from_flags.to_toml())
    again = TrainConfig.from_mapping(read_toml(str(saved)))
    for name, value in expected.items():
        if name in NOT_SAVED:
            assert getattr(again, name) == TrainConfig.__dataclass_fields__[name].default
        elif name in ("data_dir", "out"):
            assert getattr(again, name) == os.path.abspath(value)
        else:
            assert getattr(again, name) == value, name


@pytest.mark.parametrize("key, value, words", [
    ("epochs", "ten", "--epochs must be a whole number"),
    ("image_size", "32", "--image-size must be a whole number"),
    ("image_size", 20000, "--image-size must be at most"),
    ("image_size", 8, "--image-size must be at least 16"),
    ("heads", 5, "--heads must be a list"),
    ("heads", ["softmax", "svm"], "Unknown head 'svm'"),
    ("seed", "abc", "--seed must be a whole number"),
    ("crop_fraction", 7.0, "--crop-fraction must be between 0 and 1"),
    ("learning_rate", float("nan"), "--learning-rate must be a finite number"),
    ("learning_rate", -1.0, "--learning-rate must be positive"),
    ("overwrite", "false", "--overwrite must be true or false"),
    ("grayscale", "false", "--grayscale must be true or false"),
    ("val_split", 1.5, "--val-split must be between 0 and 1"),
    ("search", "maybe", "--search must be 'on' or 'off'"),
    ("max_macs", "lots", "--max-macs must be a number"),
    ("strategy", "everything", "Unknown strategy 'everything'"),
    ("engine", "spark", "--engine must be 'local' or 'ray'"),
])
def test_a_wrong_setting_is_one_line_naming_it(tmp_path, capsys, key, value, words):
    from edgetl.errors import DataError
    from edgetl.training.config import TrainConfig

    with pytest.raises(DataError, match=words.replace("(", r"\(")):
        TrainConfig(data_dir="photos", out="run", **{key: value})
    # The same from a --config file: exit 2, one line, nothing written.
    cfg = tmp_path / "bad.toml"
    text = "nan" if isinstance(value, float) and value != value else json.dumps(value)
    cfg.write_text(f'data_dir = "{tmp_path}"\nout = "{tmp_path / "run"}"\n{key} = {text}\n')
    assert main(["train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words.split("(")[0] in err[0], err
    assert not (tmp_path / "run").exists()


def test_train_takes_a_config_object(shapes, tmp_path):
    import edgetl
    from edgetl.training.config import TrainConfig

    config = edgetl.TrainConfig(data_dir=shapes, out=str(tmp_path / "run"), image_size=32, search="off", epochs=5)
    assert isinstance(config, TrainConfig)
    result = edgetl.train(config)
    saved = tomllib.loads((tmp_path / "run" / "config.toml").read_text())["train"]
    assert saved["epochs"] == 5 and saved["search"] == "off" and "overwrite" not in saved
    assert result.metrics["chosen"]["tap"] == "final" and result.metrics["config"]["epochs"] == 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 6  # frozen: a run's settings do not change under it
