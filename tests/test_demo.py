"""`edgetl demo`, the README's first command, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_demo_end_to_end(tmp_path):
    out_dir = tmp_path / "demo-run"
    proc = subprocess.run(
        [sys.executable, "-m", "edgetl.cli", "demo", "--out", str(out_dir)],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "raw-pixel logistic regression baseline" in text
    assert "device runtime (int8, no torch)" in text
    metrics = json.load(open(out_dir / "metrics.json"))
    assert metrics["counts"]["images_used"] == 1797
    assert metrics["val_accuracy"] >= 0.9
    assert metrics["agreement_fp32"] >= 0.99 and metrics["agreement_int8"] >= 0.85
    assert f"{metrics['val_accuracy']:.1%}" in text
    predicted = [line for line in text.splitlines() if line.strip().startswith("true ")]
    assert len(predicted) == 8
    assert sum(line.split()[1] == line.split()[3] for line in predicted) >= 6
    # A second demo replaces its own earlier run...
    again = subprocess.run([sys.executable, "-m", "edgetl.cli", "demo", "--out", str(out_dir)],
                           capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr
    # ...but never a folder that is not one.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    refused = subprocess.run([sys.executable, "-m", "edgetl.cli", "demo", "--out", str(tmp_path / "mine")],
                             capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert sorted(os.listdir(tmp_path / "mine")) == ["notes.txt"]
