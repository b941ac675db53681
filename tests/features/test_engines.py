"""The engine seam without Ray: ``import edgetl``, the CLI and the default
(in-process) extraction never import ray, and ``--engine ray`` without the
extra is one line naming it."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import textwrap

import pytest


def _run(code: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=300)


def test_the_default_path_never_imports_ray(tmp_path):
    from conftest import make_shapes_folder

    data = make_shapes_folder(tmp_path / "shapes", num_per_class=2, size=40)
    paths = sorted(glob.glob(os.path.join(data, "*", "*.png")))
    out = _run(f"""
        import sys
        import edgetl, edgetl.training, edgetl.features.engines
        from edgetl.cli import build_parser
        build_parser()
        from edgetl.export.backbone_onnx import export_backbone
        from edgetl.features.engines import extract_graphs
        from edgetl.zoo import get_spec
        spec = get_spec("efficientnet_lite0").input_spec.replace(image_size=32)
        graph = export_backbone("efficientnet_lite0", input_spec=spec, taps=True)
        (e,) = extract_graphs([graph], {paths!r}, {str(tmp_path / 'cache')!r}, progress=False)
        assert e.num_extracted == {len(paths)}, e.num_extracted
        loaded = sorted(m for m in sys.modules if m == "ray" or m.startswith(("ray.", "pyarrow")))
        print("LOADED", loaded)
    """)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "LOADED []" in out.stdout


def test_engine_ray_without_the_extra_is_one_line(tmp_path):
    out = _run("""
        import sys
        sys.modules["ray"] = None  # as if the 'ray' extra were not installed
        from edgetl.errors import MissingExtraError
        from edgetl.features.engines import extract_graphs
        try:
            extract_graphs([object()], ["x.png"], engine="ray")
        except MissingExtraError as exc:
            print("ERROR", exc)
    """)
    assert out.returncode == 0, out.stderr[-2000:]
    line = out.stdout.strip()
    assert line.startswith("ERROR --engine ray needs the 'ray' extra") and "pip install 'edgetl[ray]'" in line
    assert len(line.splitlines()) == 1


def test_an_unknown_engine_is_refused():
    from edgetl.errors import DataError
    from edgetl.features.engines import extract_graphs

    with pytest.raises(DataError, match="Unknown engine 'spark'"):
        extract_graphs([], [], engine="spark")
    with pytest.raises(DataError, match="--ray-address needs --engine ray"):
        extract_graphs([], [], ray_address="auto")
