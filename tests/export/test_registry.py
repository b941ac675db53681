"""One registry of export formats: what --format offers, and how a format is added."""

from __future__ import annotations

import pytest

from edgetl.errors import DataError
from edgetl.export import FORMATS, export_model, register_format


def test_formats_in_order_and_from_their_own_modules():
    assert list(FORMATS) == ["onnx", "tflite", "coreml"]
    assert {name: fn.__module__ for name, fn in FORMATS.items()} == {
        "onnx": "edgetl.export.onnx_bundle", "tflite": "edgetl.export.tflite", "coreml": "edgetl.export.coreml"}


def test_cli_offers_exactly_the_registered_formats(capsys):
    from edgetl.cli import main

    with pytest.raises(SystemExit):
        main(["export", "run", "--format", "nope"])
    err = capsys.readouterr().err
    assert "'onnx', 'tflite', 'coreml'" in err


def test_a_new_format_is_one_registration(monkeypatch, tmp_path):
    monkeypatch.setattr("edgetl.export.registry.FORMATS", dict(FORMATS))
    from edgetl.export import registry

    calls = []

    @register_format("web")
    def export_web(run_dir, int8=False, images=None):
        calls.append((run_dir, int8, images))
        return {"file": "web/"}

    assert "web" in registry.FORMATS and "web" not in FORMATS
    assert export_model(tmp_path, "web", int8=True, images=["a.png"]) == {"file": "web/"}
    assert calls == [(str(tmp_path), True, ["a.png"])]
    with pytest.raises(ValueError, match="'web' is already registered"):
        register_format("web")(export_web)


def test_unknown_format_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="Unknown export format 'web': use one of onnx, tflite, coreml"):
        export_model(tmp_path, "web")
