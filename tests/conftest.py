"""Shared fixtures. One cache folder for the whole session so each backbone
graph is exported once; small synthetic folders keep the suite fast."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session", autouse=True)
def edgetl_cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("edgetl-cache")
    old = os.environ.get("EDGETL_CACHE_DIR")
    os.environ["EDGETL_CACHE_DIR"] = str(folder)
    yield str(folder)
    if old is None:
        os.environ.pop("EDGETL_CACHE_DIR", None)
    else:
        os.environ["EDGETL_CACHE_DIR"] = old


def make_shapes_folder(root, num_per_class: int = 12, size: int = 48, seed: int = 0) -> str:
    """Three visually distinct classes: red discs, green bars, blue checkers,
    on noisy backgrounds of varying brightness."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for cls in ("disc", "bars", "checker"):
        os.makedirs(os.path.join(root, cls), exist_ok=True)
    for i in range(num_per_class):
        for cls in ("disc", "bars", "checker"):
            bg = rng.integers(60, 200)
            img = np.clip(rng.normal(bg, 20, (size, size, 3)), 0, 255)
            if cls == "disc":
                cy, cx, r = rng.integers(size // 3, 2 * size // 3, 2).tolist() + [size // 4 + rng.integers(0, 4)]
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
                img[mask] = (230, 30, 30)
            elif cls == "bars":
                period = int(rng.integers(6, 10))
                mask = (xx // (period // 2)) % 2 == 0
                img[mask] = (30, 200, 40)
            else:
                cell = int(rng.integers(5, 9))
                mask = ((xx // cell) + (yy // cell)) % 2 == 0
                img[mask] = (30, 40, 220)
            Image.fromarray(img.astype(np.uint8)).save(os.path.join(root, cls, f"{i:03d}.png"))
    return str(root)


@pytest.fixture
def shapes_dir(tmp_path):
    return make_shapes_folder(tmp_path / "shapes")


@pytest.fixture(scope="session")
def shared_run(tmp_path_factory, edgetl_cache):
    """One trained bundle for every test that only needs *a* bundle: the
    shapes folder (3 classes x 12 images, 48 px), searched at 32 px (every
    tap, the default head). Read-only: a test that changes a bundle copies
    ``shared_run.run_dir`` first (shutil.copytree)."""
    import types

    from edgetl import train

    root = tmp_path_factory.mktemp("shared-run")
    data = make_shapes_folder(root / "shapes")
    result = train(data, str(root / "run"), image_size=32, progress=False)
    return types.SimpleNamespace(data_dir=data, run_dir=result.run_dir, result=result, metrics=result.metrics)


@pytest.fixture
def one_thread():
    """One torch and one BLAS/OpenMP thread: tiny networks and digits-sized
    problems gain nothing from a second, and spinning workers slow them many
    times when other processes share the two cores."""
    import torch
    from threadpoolctl import threadpool_limits

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 8x8 handwritten digits and a fixed train/val/test split of them."""
    from sklearn.datasets import load_digits

    d = load_digits()
    idx = np.random.default_rng(0).permutation(len(d.target))
    split = {"train": idx[:1000], "val": idx[1000:1300], "test": idx[1300:]}
    return d, split
