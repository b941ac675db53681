"""FeatureExtractor runs a batch in pieces of at most PIXELS_PER_RUN input
pixels (ONNX Runtime's arena keeps what the largest run needed): the rows are
those of one run over the whole batch, in order, for every graph of a
multi-size extraction."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest

from edgetl.features import extract
from edgetl.features.extract import FeatureExtractor
from edgetl.features.multi import extract_many


@pytest.fixture(scope="module")
def graphs():
    from edgetl.export.backbone_onnx import export_backbone
    from edgetl.zoo import get_spec

    spec = get_spec("efficientnet_lite0").input_spec
    return [export_backbone("efficientnet_lite0", input_spec=spec.replace(image_size=s), taps=True) for s in (48, 32)]


@pytest.fixture
def images(tmp_path):
    from conftest import make_shapes_folder

    data = make_shapes_folder(tmp_path / "shapes", num_per_class=3, size=48, seed=17)
    return sorted(glob.glob(os.path.join(data, "*", "*.png")))


def test_pieces_give_the_rows_of_one_run(graphs, images, monkeypatch, tmp_path):
    extractor = FeatureExtractor(graphs[0], cache_dir=str(tmp_path / "c"))
    batch = np.random.default_rng(0).normal(size=(7, 3, 48, 48)).astype(np.float32)
    whole = extractor.run_batch(batch)
    sizes = []
    run = extractor._run
    monkeypatch.setattr(extractor, "_run", lambda b: sizes.append(len(b)) or run(b))
    monkeypatch.setattr(extract, "PIXELS_PER_RUN", 3 * 48 * 48 + 5)
    pieces = extractor.run_batch(batch)
    assert sizes == [3, 3, 1]
    np.testing.assert_allclose(pieces, whole, rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(extract, "PIXELS_PER_RUN", 1)  # smaller than one image: one image per run
    sizes.clear()
    np.testing.assert_allclose(extractor.run_batch(batch[:2]), whole[:2], rtol=1e-5, atol=1e-6)
    assert sizes == [1, 1]


def test_multi_size_extraction_is_the_same_in_pieces(graphs, images, monkeypatch, tmp_path):
    whole = extract_many(graphs, images, cache_dir=str(tmp_path / "a"), batch_size=8, progress=False)
    monkeypatch.setattr(extract, "PIXELS_PER_RUN", 2 * 48 * 48)  # 2 images at 48 px, 4 at 32 px
    pieces = extract_many(graphs, images, cache_dir=str(tmp_path / "b"), batch_size=8, progress=False)
    for a, b in zip(whole, pieces):
        np.testing.assert_array_equal(a.ok, b.ok)
        assert a.num_extracted == b.num_extracted == len(images)
        np.testing.assert_allclose(a.features, b.features, rtol=1e-5, atol=1e-6)


def test_hashing_pass_is_fed_a_window_at_a_time_and_keeps_the_order(tmp_path):
    """extract_all's hashing pass: every path's sha256 (or its reason), in the
    listing's order, with at most HASH_WINDOW files submitted to the pool at
    once (Executor.map alone queues one Future per file: 1.7 GB for a million)."""
    import hashlib
    from concurrent.futures import ThreadPoolExecutor

    from edgetl.features import extract

    n = extract.HASH_WINDOW * 2 + 37
    paths = []
    for i in range(n):
        p = tmp_path / f"{i:05d}.bin"
        if i != extract.HASH_WINDOW + 5:  # one listed file is gone
            p.write_bytes(f"image {i}".encode())
        paths.append(str(p))

    class Counting(ThreadPoolExecutor):
        most = 0

        def map(self, fn, items, **kw):
            items = list(items)
            Counting.most = max(Counting.most, len(items))
            return super().map(fn, items, **kw)

    with Counting(2) as pool:
        got = list(extract._hash_all(pool, paths))
    assert len(got) == n and Counting.most == extract.HASH_WINDOW
    for i, (key, err) in enumerate(got):
        if i == extract.HASH_WINDOW + 5:
            assert key is None and err
        else:
            assert key == hashlib.sha256(f"image {i}".encode()).digest() and err is None
