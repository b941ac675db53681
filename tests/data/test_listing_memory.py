"""data.paths.PathList: the listing held compactly (issue 16: a listing of a
million files must not cost a Python object per path). It reads like the
list it replaces (indexing, slicing, iteration, ==), names that are not
UTF-8 round-trip as scan_folder produces them, and its memory per path is
bounded (measured with tracemalloc, never timed)."""

from __future__ import annotations

import os
import pickle
import sys
import tracemalloc

import numpy as np
import pytest

from edgetl.data.folder import ImageFolder, find_cross_class_duplicates, scan_folder
from edgetl.data.paths import PathList, PathListBuilder, as_path_list, common_folder
from imagefiles import solid, write

ROOT = os.path.join(os.sep, "data", "photos")
NAMES = ["a.png", "\u00e9t\u00e9.jpg", "\U0001f431 cat.png", os.fsdecode(b"b\xe4rs.png"), "x" * 300 + ".png", ""]


def _paths(n: int) -> list[str]:
    return [os.path.join(ROOT, f"class{i % 7}", f"{i:07d}-{NAMES[i % len(NAMES)]}") for i in range(n)]


def test_reads_like_the_list():
    plain = _paths(50)
    paths = as_path_list(plain)
    assert isinstance(paths, PathList) and paths.prefix == os.path.join(ROOT, "")
    assert len(paths) == 50 and list(paths) == plain and paths == plain and plain == paths
    assert [paths[i] for i in range(50)] == plain
    assert paths[-1] == plain[-1] and paths[np.int64(7)] == plain[7]  # numpy integers index too
    for sl in (slice(3, 9), slice(None, None, 3), slice(-5, None), slice(40, 10, -4), slice(60, 70)):
        assert isinstance(paths[sl], PathList) and list(paths[sl]) == plain[sl]
    assert paths.take(np.array([4, 0, 4])) == [plain[4], plain[0], plain[4]]
    assert plain[5] in paths and "/nope" not in paths and paths.index(plain[9]) == 9
    assert paths != plain[:-1] and paths != [*plain[:-1], "other"]
    with pytest.raises(IndexError):
        paths[50]
    with pytest.raises(TypeError):
        paths["0"]
    assert len(PathList()) == 0 and list(PathList()) == [] and as_path_list([]) == []
    assert [os.path.basename(p) for p in paths][:3] == [os.path.basename(p) for p in plain[:3]]
    assert pickle.loads(pickle.dumps(paths[10:20])) == plain[10:20]
    assert pickle.loads(pickle.dumps(paths.take([3, 1]))) == [plain[3], plain[1]]


def test_undecodable_and_non_ascii_names_round_trip():
    weird = [os.fsdecode(b"/d/\xff\xfe.png"), "/d/\udc80x", "/d/\ud800lone", "/d/\u00e9\U0001f431", "/d/tab\there"]
    paths = as_path_list(weird)
    assert list(paths) == weird and [os.fsencode(p) for p in paths[:2]] == [b"/d/\xff\xfe.png", b"/d/\x80x"]
    assert PathList(weird) == weird  # no prefix
    builder = PathListBuilder("/d/")
    builder.append(weird[0])
    with pytest.raises(ValueError, match="does not start with"):
        builder.append("/elsewhere/x.png")
    assert builder.build() == weird[:1]


def test_common_folder():
    assert common_folder(["/a/b/c.png", "/a/b/d/e.png", "/a/bc.png"]) == "/a/"
    assert common_folder(["x.png", "y.png"]) == "" and common_folder([]) == ""
    assert common_folder(["/a/b/c.png"]) == "/a/b/"


def test_scan_folder_lists_undecodable_names_as_os_walk_does(tmp_path):
    root = tmp_path / "data"
    write(root / "cat" / "\u00e9t\u00e9.png", solid())
    write(root / "dog" / "1.png", solid(color=(0, 0, 255)))
    raw = os.path.join(os.fsencode(root / "dog"), b"b\xe4rs.png")
    try:
        with open(raw, "wb") as fh:  # the same bytes as the cat: a duplicate across classes
            fh.write((root / "cat" / "\u00e9t\u00e9.png").read_bytes())
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    folder = scan_folder(root)
    assert isinstance(folder.paths, PathList)
    expected = sorted(os.path.join(d, f) for d, _, files in os.walk(root) for f in files)
    assert sorted(folder.paths) == expected and folder.paths[2] == os.fsdecode(raw)
    assert os.fsencode(folder.paths[2]) == raw and all(os.path.isfile(p) for p in folder.paths)
    assert folder.targets.tolist() == [0, 1, 1] and folder.targets.dtype == np.int64
    assert [(d["classes"], d["paths"]) for d in folder.duplicates] == [
        (["cat", "dog"], [folder.paths[0], os.fsdecode(raw)])]
    sub = folder.subset([2, 0])
    assert sub.paths == [folder.paths[2], folder.paths[0]] and sub.targets.tolist() == [1, 0]


def test_duplicates_found_by_sorting(tmp_path):
    root = tmp_path / "data"
    write(root / "a" / "1.png", solid())
    write(root / "a" / "2.png", solid())  # a copy within its class: not a mistake
    write(root / "b" / "3.png", solid())  # the same bytes in another class
    write(root / "b" / "4.png", solid(color=(1, 2, 3)))
    write(root / "c" / "5.png", solid(color=(1, 2, 3)))
    folder = scan_folder(root)
    found = folder.duplicates
    assert [d["classes"] for d in found] == [["a", "b"], ["b", "c"]]
    assert [[os.path.relpath(p, root) for p in d["paths"]] for d in found] == [
        [os.path.join("a", "1.png"), os.path.join("a", "2.png"), os.path.join("b", "3.png")],
        [os.path.join("b", "4.png"), os.path.join("c", "5.png")]]
    assert all(len(d["sha256"]) == 64 for d in found)
    # Unreadable or gone files are left out; no file at all is no duplicate.
    gone = [str(root / "a" / "gone.png"), *folder.paths]
    assert find_cross_class_duplicates(gone, np.r_[1, folder.targets], folder.classes) == found
    assert find_cross_class_duplicates([], np.zeros(0, np.int64), ["a"]) == []


def test_image_folder_takes_a_plain_list():
    folder = ImageFolder("/r", ["a", "b"], ["/r/a/1.png", "/r/b/2.png"], np.array([0, 1]))
    assert isinstance(folder.paths, PathList) and folder.paths == ["/r/a/1.png", "/r/b/2.png"]
    assert folder.subset([1]).paths == ["/r/b/2.png"] and len(folder) == 2


def test_bytes_per_listed_path_are_bounded():
    """50,000 paths (no files made): a PathList holds them in ~40 bytes a path
    (the ~25 characters after the shared folder, two offsets), where the
    list of str held ~100 bytes more a path. Measured with tracemalloc."""
    n = 50_000
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        builder = PathListBuilder(os.path.join(ROOT, ""))
        for i in range(n):
            builder.append(os.path.join(ROOT, f"class{i % 100:03d}", f"IMG_{i:07d}.jpg"))
        paths = builder.build()
        held, peak = tracemalloc.get_traced_memory()
        plain = [os.path.join(ROOT, f"class{i % 100:03d}", f"IMG_{i:07d}.jpg") for i in range(n)]
        as_list, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    per_path = (held - base) / n
    list_per_path = (as_list - held) / n
    rest = len(f"class000{os.sep}IMG_0000000.jpg")
    assert per_path <= rest + 2 * 8 + 2, per_path  # the characters after the prefix and the offsets
    assert paths.nbytes() <= n * (rest + 8) + 8 + len(paths.prefix)
    assert list_per_path > 2 * per_path and (peak - base) / n < 3 * rest + 16  # the build's transient copy too
    assert paths == plain and sys.getsizeof(paths) < 100
