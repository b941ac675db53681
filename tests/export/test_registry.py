"""One registry of export formats: what --format offers, and how a format is added."""

from __future__ import annotations

import pytest

from edgetl.errors import DataError
from edgetl.export import FORMATS, export_model, register_format


def test_formats_in_order_and_from_their_own_modules():
    assert list(FORMATS) == ["onnx", "tflite", "coreml", "ort", "web"]
    assert {name: fn.__module__ for name, fn in FORMATS.items()} == {
        "onnx": "edgetl.export.onnx_bundle", "tflite": "edgetl.export.tflite", "coreml": "edgetl.export.coreml",
        "ort": "edgetl.export.ort_mobile", "web": "edgetl.export.web"}


def test_cli_offers_exactly_the_registered_formats(capsys):
    from edgetl.cli import main

    with pytest.raises(SystemExit):
        main(["export", "run", "--format", "nope"])
    err = capsys.readouterr().err
    assert "'onnx', 'tflite', 'coreml', 'ort', 'web'" in err


def test_a_new_format_is_one_registration(monkeypatch, tmp_path):
    monkeypatch.setattr("edgetl.export.registry.FORMATS", dict(FORMATS))
    from edgetl.export import registry

    calls = []

    @register_format("wasm-app")
    def export_app(run_dir, int8=False, images=None):
        calls.append((run_dir, int8, images))
        return {"file": "app/"}

    assert "wasm-app" in registry.FORMATS and "wasm-app" not in FORMATS
    assert export_model(tmp_path, "wasm-app", int8=True, images=["a.png"]) == {"file": "app/"}
    assert calls == [(str(tmp_path), True, ["a.png"])]
    with pytest.raises(ValueError, match="'wasm-app' is already registered"):
        register_format("wasm-app")(export_app)


def test_unknown_format_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="Unknown export format 'wasm-app': use one of onnx, tflite, coreml, ort, web"):
        export_model(tmp_path, "wasm-app")
