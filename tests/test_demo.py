"""`edgetl demo`, the README's first command, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from edgetl.training.rundir import RUN_MARKER, read_run_marker, write_run_marker


@pytest.mark.slow  # the whole demo (~30 s): the full suite; its parts are tested on their own
def test_demo_end_to_end(tmp_path):
    out_dir = tmp_path / "demo-run"
    # An earlier demo run (the run marker says the demo made it) is replaced by the new one...
    out_dir.mkdir()
    write_run_marker(str(out_dir), made_by="demo")
    (out_dir / "stale.txt").write_text("from an earlier demo")
    proc = subprocess.run(
        [sys.executable, "-m", "edgetl.cli", "demo", "--out", str(out_dir)],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "raw-pixel linear baseline (ridge classifier)" in text
    assert "device runtime (int8, no torch)" in text
    metrics = json.load(open(out_dir / "metrics.json"))
    assert metrics["counts"]["images_used"] == 898  # half of the 1,797 scans; the other half is the test set
    assert metrics["val_accuracy"] >= 0.9
    assert metrics["agreement_fp32"] >= 0.99 and metrics["agreement_int8"] >= 0.85
    assert f"{metrics['val_accuracy']:.1%}" in text
    # The search: 8x8 scans are far from ImageNet; an early tap at a small size wins, at a fraction of the compute.
    chosen, naive = metrics["chosen"], metrics["baselines"]["final_layer"]
    assert chosen["tap"] != "final" and chosen["macs"] * 10 < naive["macs"]
    assert (out_dir / "search.png").is_file()
    test_line = next(line for line in text.splitlines() if "device runtime fp32" in line)
    test_accuracy = float(test_line.split("%")[0].split()[-1]) / 100
    naive_line = next(line for line in text.splitlines() if line.strip().startswith("naive transfer"))
    naive_accuracy = float(naive_line.split("%")[0].split()[-1]) / 100
    assert test_accuracy >= 0.97 and test_accuracy > naive_accuracy, (test_accuracy, naive_accuracy)
    predicted = [line for line in text.splitlines() if line.strip().startswith("true ")]
    assert len(predicted) == 8
    assert sum(line.split()[1] == line.split()[3] for line in predicted) >= 6
    assert not (out_dir / "stale.txt").exists() and read_run_marker(str(out_dir))["made_by"] == "demo"
    # ...but never a folder that is not one: a user's folder, or a run the demo did not make.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    (tmp_path / "trained").mkdir()
    write_run_marker(str(tmp_path / "trained"))
    for other, files in (("mine", ["notes.txt"]), ("trained", [RUN_MARKER])):
        refused = subprocess.run([sys.executable, "-m", "edgetl.cli", "demo", "--out", str(tmp_path / other)],
                                 capture_output=True, text=True, cwd=tmp_path, timeout=600)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert "not an earlier demo run" in refused.stderr
        assert sorted(os.listdir(tmp_path / other)) == files
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
