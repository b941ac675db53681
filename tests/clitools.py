"""Running edgetl's command line in tests: a refusal of one line, and the
device commands in a fresh interpreter that must never import torch."""

from __future__ import annotations

import subprocess
import sys

TORCH_FREE = ("import sys; from edgetl.cli import main; rc = main(sys.argv[1:]); "
              "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)")


def one_line_refusal(argv, capsys, *needles) -> str:
    """``edgetl ARGV`` exits 2 with one line naming every needle; returns stdout."""
    from edgetl.cli import main

    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return out


def run_torch_free(*argv) -> str:
    """``edgetl ARGV`` in a fresh interpreter that must not import torch; its stdout."""
    out = subprocess.run([sys.executable, "-c", TORCH_FREE, *argv], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout
