"""The accuracy-vs-MACs plot: one colour per registered head, written atomically."""

from __future__ import annotations

import os

from edgetl.heads import HEAD_KINDS
from edgetl.search import Candidate
from edgetl.search.plot import plot_candidates


def test_plot_every_head_and_the_baselines(tmp_path):
    cands = [Candidate(size, tap, head, 8, macs * size, 1.0, None, val_accuracy=0.5 + 0.01 * i)
             for i, (size, tap, macs, head) in enumerate(
                 (s, t, m, h) for s in (32, 64) for t, m in (("block2", 1e5), ("final", 1e6)) for h in HEAD_KINDS)]
    path = str(tmp_path / "search.png")
    open(path, "wb").write(b"old")
    assert plot_candidates(cands, cands[-1], path, baselines={"raw pixels": 0.4, "none": None}) == path
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 10_000
    assert os.listdir(tmp_path) == ["search.png"]  # the temporary file was renamed over the old one
