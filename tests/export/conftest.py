"""A copy of the session's shared bundle for the export tests (they write
beside it), and its images."""

from __future__ import annotations

import glob
import os
import shutil

import pytest


@pytest.fixture(scope="module")
def bundle(shared_run, tmp_path_factory):
    """(run folder, every image of the shapes folder it was trained on)."""
    run_dir = str(tmp_path_factory.mktemp("export") / "run")
    shutil.copytree(shared_run.run_dir, run_dir)
    images = sorted(glob.glob(os.path.join(shared_run.data_dir, "*", "*.png")))
    return run_dir, images
