"""`edgetl plan` bounds its settings as `edgetl train` does (TrainConfig's
checks): one line, exit 2, before the folder is scanned or a model built."""

from __future__ import annotations

import pytest

from edgetl.cli import main


@pytest.mark.parametrize("flag, value, needle", [
    ("--image-size", "20000", "--image-size must be at most 1024 pixels, got 20000"),
    ("--image-size", "8", "--image-size must be at least 16 pixels, got 8"),
    ("--batch-size", "0", "--batch-size must be at least 1, got 0"),
    ("--max-memory-mb", "-5", "--max-memory-mb must be positive"),
])
def test_plan_refuses_what_train_refuses(tmp_path, capsys, monkeypatch, flag, value, needle):
    import edgetl.data.folder

    def scan(*args, **kwargs):
        raise AssertionError("scanned before the settings were checked")

    monkeypatch.setattr(edgetl.data.folder, "scan_folder", scan)
    code = main(["plan", str(tmp_path), flag, value])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"edgetl: error: {needle}"), captured.err
