"""data.folder: scanning a class-per-folder tree (hidden files, non-images,
nested folders, symlink loops) and the stratified split.

Every input is built here in tmp_path with Pillow/numpy."""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest
from PIL import Image

from edgetl.data.folder import ImageFolder, scan_folder, stratified_split
from edgetl.errors import DataError, DataNotFoundError
from imagefiles import encode, solid, write


def test_scan_sorts_classes_and_lists_images(tmp_path):
    root = tmp_path / "data"
    for cls in ("zebra", "apple", "Mango"):
        for i in range(2):
            write(root / cls / f"{i}.png", solid())
    folder = scan_folder(root)
    assert isinstance(folder, ImageFolder)
    assert folder.classes == sorted(["zebra", "apple", "Mango"]) == ["Mango", "apple", "zebra"]
    assert len(folder) == 6
    assert folder.counts() == {"Mango": 2, "apple": 2, "zebra": 2}
    for path, target in zip(folder.paths, folder.targets):
        assert os.path.basename(os.path.dirname(path)) == folder.classes[target]
    assert folder.targets.dtype == np.int64
    assert folder.skipped == []


def test_scan_ignores_hidden_files_and_folders(tmp_path):
    root = tmp_path / "data"
    write(root / "cat" / "a.jpg", solid())
    write(root / "dog" / "b.png", solid())
    # macOS / Jupyter / zip debris, at every level
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "cat" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    write(root / "cat" / "._a.jpg", solid())  # AppleDouble companion, named like an image
    write(root / ".ipynb_checkpoints" / "c.png", solid())  # hidden top level: not a class
    write(root / "dog" / ".ipynb_checkpoints" / "b-checkpoint.png", solid())
    write(root / "__MACOSX" / "cat" / "._a.jpg", solid())
    folder = scan_folder(root)
    assert folder.classes == ["cat", "dog"]
    assert sorted(os.path.relpath(p, root) for p in folder.paths) == [
        os.path.join("cat", "a.jpg"),
        os.path.join("dog", "b.png"),
    ]
    assert folder.skipped == []


def test_scan_skips_non_images_with_reason(tmp_path):
    root = tmp_path / "data"
    write(root / "a" / "1.png", solid())
    write(root / "b" / "2.JPG", solid(), "JPEG")  # upper-case extension is an image
    (root / "a" / "notes.txt").write_text("hello")
    (root / "b" / "photo.tiff").write_bytes(encode(solid(), "TIFF"))
    (root / "README.md").write_text("loose file")
    folder = scan_folder(root)
    assert folder.classes == ["a", "b"]
    assert sorted(os.path.basename(p) for p in folder.paths) == ["1.png", "2.JPG"]
    skipped = {os.path.basename(item["path"]): item["reason"] for item in folder.skipped}
    assert set(skipped) == {"notes.txt", "photo.tiff", "README.md"}
    assert "not an image file type" in skipped["notes.txt"]
    assert "not an image file type" in skipped["photo.tiff"]
    assert "outside any class folder" in skipped["README.md"]
    assert all(item["reason"] for item in folder.skipped)


def test_scan_includes_nested_subfolders(tmp_path):
    root = tmp_path / "data"
    write(root / "a" / "top.png", solid())
    write(root / "a" / "2023" / "summer" / "deep.png", solid())
    write(root / "b" / "sub" / "x.jpg", solid())
    folder = scan_folder(root)
    rel = sorted(os.path.relpath(p, root) for p in folder.paths)
    assert rel == sorted([
        os.path.join("a", "top.png"),
        os.path.join("a", "2023", "summer", "deep.png"),
        os.path.join("b", "sub", "x.jpg"),
    ])
    assert folder.counts() == {"a": 2, "b": 1}
    # nested images carry their top-level class
    deep = [i for i, p in enumerate(folder.paths) if p.endswith("deep.png")][0]
    assert folder.classes[folder.targets[deep]] == "a"


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_scan_symlink_loop_does_not_hang(tmp_path):
    root = tmp_path / "data"
    write(root / "a" / "1.png", solid())
    write(root / "b" / "2.png", solid())
    os.symlink(root / "a", root / "a" / "loop")  # a/loop -> a
    os.symlink(root, root / "b" / "up")  # b/up -> data root
    start = time.perf_counter()
    folder = scan_folder(root)
    assert time.perf_counter() - start < 5
    assert folder.classes == ["a", "b"]
    # each real file once; nothing reached through the looping links
    assert sorted(os.path.relpath(p, root) for p in folder.paths) == [os.path.join("a", "1.png"), os.path.join("b", "2.png")]


def test_scan_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        scan_folder(tmp_path / "missing")
    (tmp_path / "file.png").write_bytes(encode(solid(), "PNG"))
    with pytest.raises(DataError, match="is a file"):
        scan_folder(tmp_path / "file.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        scan_folder(tmp_path / "empty")
    write(tmp_path / "one" / "only" / "1.png", solid())
    with pytest.raises(DataError, match="at least 2"):
        scan_folder(tmp_path / "one")
    assert scan_folder(tmp_path / "one", min_classes=1).classes == ["only"]
    write(tmp_path / "hole" / "a" / "1.png", solid())
    (tmp_path / "hole" / "b").mkdir()
    with pytest.raises(DataError, match="has no images") as exc:
        scan_folder(tmp_path / "hole")
    assert os.path.join("hole", "b") in str(exc.value)


@pytest.mark.parametrize("name, shown", [("two\nlines", "two\\nlines"), ("car\rriage", "car\\rriage"),
                                         ("tab\tbed", "tab\\tbed"), ("esc\x1b[31m", "esc\\x1b[31m"),
                                         ("line\u2028sep", "line\\u2028sep")])
def test_scan_refuses_class_names_with_control_characters(tmp_path, name, shown):
    """A label is one line of labels.txt: a folder named with a newline failed
    only at the end of training, over labels.txt."""
    root = tmp_path / "data"
    for cls in (name, "plain"):
        write(root / cls / "1.png", solid())
    with pytest.raises(DataError) as exc:
        scan_folder(root)
    message = str(exc.value)
    assert shown in message and "control characters" in message and "rename the folder" in message
    assert "\n" not in message and "\r" not in message


def test_scan_keeps_names_with_joiners_and_spaces(tmp_path):
    """Only control characters are refused: emoji joiners, accents and spaces are text."""
    root = tmp_path / "data"
    names = ["fam\u200dily \U0001f468\u200d\U0001f469", "caf\u00e9 au lait", "$"]
    for cls in names:
        write(root / cls / "1.png", solid())
    assert scan_folder(root).classes == sorted(names)


def test_subset_keeps_classes(tmp_path):
    root = tmp_path / "data"
    for cls in ("a", "b"):
        for i in range(3):
            write(root / cls / f"{i}.png", solid())
    folder = scan_folder(root)
    sub = folder.subset([0, 4])
    assert sub.classes == folder.classes
    assert sub.paths == [folder.paths[0], folder.paths[4]]
    assert sub.targets.tolist() == [0, 1]




def _targets():
    # imbalanced: 2, 3, 10 and 41 images
    return np.repeat(np.arange(4), [2, 3, 10, 41])


@pytest.mark.parametrize("fraction", [0.01, 0.2, 0.5, 0.99])
def test_split_keeps_every_class_on_both_sides(fraction):
    y = _targets()
    train, val = stratified_split(y, fraction, seed=3)
    assert len(np.intersect1d(train, val)) == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(y)))
    assert set(y[train]) == set(y[val]) == {0, 1, 2, 3}


def test_split_proportions():
    y = np.repeat(np.arange(2), [50, 100])
    train, val = stratified_split(y, 0.2, seed=0)
    assert np.bincount(y[val]).tolist() == [10, 20]
    assert np.bincount(y[train]).tolist() == [40, 80]


def test_split_deterministic_for_seed():
    y = _targets()
    a = stratified_split(y, 0.3, seed=7)
    b = stratified_split(y, 0.3, seed=7)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    others = [stratified_split(y, 0.3, seed=s)[1] for s in range(8, 13)]
    assert any(not np.array_equal(a[1], o) for o in others)
    assert a[0].dtype == np.int64 and a[1].dtype == np.int64


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_split_rejects_fraction_outside_open_interval(fraction):
    with pytest.raises(DataError, match="between 0 and 1"):
        stratified_split(_targets(), fraction)
    with pytest.raises(ValueError):  # DataError is also a ValueError
        stratified_split(_targets(), fraction)
