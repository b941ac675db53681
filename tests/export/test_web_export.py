"""``edgetl export RUN_DIR --format web``: what the command prints, where
onnxruntime-web comes from, and its refusals (the app itself is tested in a
browser in tests/web)."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from clitools import one_line_refusal, run_torch_free
from edgetl.cli import main
from edgetl.export import web
from edgetl.runtime.bundle import file_sha256


@pytest.fixture
def run_copy(shared_run, tmp_path):
    return shutil.copytree(shared_run.run_dir, tmp_path / "run")


def test_the_command_writes_the_app_and_says_how_to_serve_it(run_copy, capsys):
    assert main(["export", str(run_copy), "--format", "web"]) == 0
    out = capsys.readouterr().out
    folder = os.path.join(str(run_copy), "web")
    assert f"web: wrote {folder} (int8" in out
    assert f"python -m http.server -b 127.0.0.1 -d {folder} 8000" in out
    info = json.load(open(os.path.join(folder, "bundle", "bundle.json")))
    assert info["features_sha256"] == file_sha256(os.path.join(str(run_copy), "features.int8.onnx"))
    # A second export replaces the first whole (no temporary left beside it).
    assert main(["export", str(run_copy), "--format", "web", "--fp32"]) == 0
    assert json.load(open(os.path.join(folder, "bundle", "bundle.json")))["precision"] == "fp32"
    assert not [n for n in os.listdir(run_copy) if ".tmp-" in n]


def test_the_export_needs_no_torch(run_copy):
    out = run_torch_free("export", str(run_copy), "--format", "web")
    assert "web: wrote" in out


def test_fp32_is_refused_for_other_formats(run_copy, capsys):
    one_line_refusal(["export", str(run_copy), "--format", "onnx", "--fp32"], capsys, "--fp32", "web")


def test_without_npm_the_first_export_says_what_to_install(run_copy, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("EDGETL_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))
    monkeypatch.delenv("EDGETL_ORT_WEB_DIST", raising=False)
    one_line_refusal(["export", str(run_copy), "--format", "web"], capsys, "npm", "Node.js", "EDGETL_ORT_WEB_DIST")
    assert not os.path.exists(os.path.join(str(run_copy), "web"))


def test_a_given_dist_folder_must_hold_the_runtime(run_copy, capsys, monkeypatch, tmp_path):
    fetched = web.ort_web_dist()  # the cache's copy, fetched by npm
    monkeypatch.setenv("EDGETL_ORT_WEB_DIST", str(tmp_path))
    one_line_refusal(["export", str(run_copy), "--format", "web"], capsys, "EDGETL_ORT_WEB_DIST",
                     "ort-wasm-simd-threaded.wasm")
    monkeypatch.setenv("EDGETL_ORT_WEB_DIST", fetched)
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))
    assert main(["export", str(run_copy), "--format", "web"]) == 0
