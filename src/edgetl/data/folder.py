"""ImageFolder layout: one sub-folder per class, class names sorted.

Only reads: the user's folder is never written to."""

from __future__ import annotations

import hashlib
import logging
import os
import unicodedata
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError, DataNotFoundError
from .image import IMAGE_EXTENSIONS
from .paths import PathList, PathListBuilder, as_path_list

log = logging.getLogger(__name__)


def _hidden(name: str) -> bool:
    # .DS_Store, .ipynb_checkpoints, ._AppleDouble files, __MACOSX from zip files
    return name.startswith(".") or name.startswith("__MACOSX")


@dataclass
class ImageFolder:
    root: str
    classes: list[str]
    # A PathList (any sequence of str given is turned into one): a million paths in tens of MB.
    paths: Sequence[str]
    targets: np.ndarray
    skipped: list[dict] = field(default_factory=list)
    # The same image (same bytes) filed under two or more classes: kept, warned.
    duplicates: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.paths = as_path_list(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> dict[str, int]:
        return {c: int((self.targets == i).sum()) for i, c in enumerate(self.classes)}

    def skip(self, path: str, reason: str) -> None:
        self.skipped.append({"path": path, "reason": reason})
        log.warning("skipped %s: %s", path, reason)

    def subset(self, index) -> "ImageFolder":
        index = np.asarray(index, dtype=np.int64)
        return ImageFolder(self.root, self.classes, self.paths.take(index), self.targets[index], self.skipped,
                           self.duplicates)


def _walk_files(class_dir: str):
    """Files under class_dir, recursively, hidden entries pruned, no symlinked
    folders followed (a symlink loop cannot hang the scan)."""
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
        for name in sorted(filenames):
            if not _hidden(name):
                yield os.path.join(dirpath, name)


def _printable(name: str) -> str:
    """A file name as the user would type it, undecodable bytes as \\xNN."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


# Control characters (newline, carriage return, tab, escape, NUL...) and the
# Unicode line and paragraph separators: a label is one line of plain text
# (labels.txt holds one per line, 'edgetl predict' prints it between tabs).
_NOT_IN_A_LABEL = ("Cc", "Zl", "Zp")


def control_characters(name: str) -> str:
    """The control characters in ``name``, escaped and comma-separated
    ('\\n, \\r'); '' when it has none."""
    found = dict.fromkeys(ch.encode("unicode_escape").decode("ascii") for ch in name
                          if unicodedata.category(ch) in _NOT_IN_A_LABEL)
    return ", ".join(found)


def visible(name: str) -> str:
    """``name`` with its control characters escaped: what a one-line message can show."""
    return "".join(ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) in _NOT_IN_A_LABEL
                   else ch for ch in name)


def _file_sha256(path: str) -> bytes | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None  # unreadable: extraction skips it with its reason
    return digest.digest()


def _file_sizes(paths: Sequence[str]) -> np.ndarray:
    """Each file's size in bytes (-1: it cannot be stat'ed), as int64."""
    sizes = array("q")
    for path in paths:
        try:
            sizes.append(os.stat(path).st_size)
        except OSError:
            sizes.append(-1)
    return np.frombuffer(sizes, np.int64) if len(sizes) else np.zeros(0, np.int64)


def equal_runs(values: np.ndarray, window: int = 1 << 14) -> tuple[np.ndarray, np.ndarray]:
    """(order, bounds): ``order`` sorts ``values`` (stably: equal values keep
    their order) and run k of equal values is ``order[bounds[k]:bounds[k + 1]]``.
    Neighbours are compared a window at a time: no sorted copy of ``values``
    is made (a million 32-byte keys: 8 MB of order, not 40 MB more)."""
    order = np.argsort(values, kind="stable")
    starts = np.ones(len(order), bool)
    for lo in range(1, len(order), window):
        hi = min(len(order), lo + window)
        starts[lo:hi] = values[order[lo:hi]] != values[order[lo - 1 : hi - 1]]
    return order, np.append(np.flatnonzero(starts), len(order))


def _mixed_runs(values: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``equal_runs`` of ``values``, and whether each run spans two or more ``targets``."""
    order, bounds = equal_runs(values)
    if len(order) == 0:
        return order, bounds, np.zeros(0, bool)
    t = targets[order]
    return order, bounds, np.minimum.reduceat(t, bounds[:-1]) != np.maximum.reduceat(t, bounds[:-1])


def find_cross_class_duplicates(paths: Sequence[str], targets, classes: list[str]) -> list[dict]:
    """Identical files filed under different classes (a labelling mistake the
    model cannot learn from). Only files whose sizes collide across classes
    are hashed, so a folder of phone photos costs one stat per file. Sizes
    and digests are numpy arrays, grouped by sorting: no Python object per file."""
    targets = np.asarray(targets, np.int64)
    sizes = _file_sizes(paths)
    if (sizes >= 0).all():
        readable, order, bounds, mixed = None, *_mixed_runs(sizes, targets)
    else:  # files gone since the scan: left out
        readable = np.flatnonzero(sizes >= 0)
        order, bounds, mixed = _mixed_runs(sizes[readable], targets[readable])
    del sizes
    candidates = order[np.repeat(mixed, np.diff(bounds))]
    del order
    candidates = np.sort(candidates if readable is None else readable[candidates])
    del readable
    digests = np.zeros((len(candidates), 32), np.uint8)
    hashed = np.zeros(len(candidates), bool)
    for lo in range(0, len(candidates), 4096):  # a window of Python ints at a time, not one per file
        for j, i in enumerate(candidates[lo : lo + 4096].tolist(), lo):
            if (digest := _file_sha256(paths[i])) is not None:
                digests[j], hashed[j] = np.frombuffer(digest, np.uint8), True
    if not hashed.all():  # files gone or unreadable since the stat (rare): left out
        candidates, digests = candidates[hashed], digests[hashed]
    order, bounds, mixed = _mixed_runs(digests.view(f"V{digests.shape[1]}").ravel(), targets[candidates])
    found = []
    for run in np.flatnonzero(mixed).tolist():
        same = candidates[order[bounds[run] : bounds[run + 1]]].tolist()
        names = sorted({classes[int(targets[i])] for i in same})
        found.append({"sha256": digests[order[bounds[run]]].tobytes().hex(), "paths": [paths[i] for i in same],
                      "classes": names})
    found.sort(key=lambda d: d["paths"][0])
    return found


def scan_folder(root: str | os.PathLike, min_classes: int = 2) -> ImageFolder:
    """Scan ``root/<class>/<image>``. Non-image files are skipped with a warning."""
    root = os.fspath(root)
    if not os.path.exists(root):
        raise DataNotFoundError(f"Data folder '{root}' does not exist; pass a folder with one sub-folder per class")
    if not os.path.isdir(root):
        raise DataError(f"'{root}' is a file, not a folder; pass a folder with one sub-folder per class")
    try:
        entries = sorted(os.listdir(root))
    except OSError as exc:
        raise DataError(f"Cannot read data folder '{root}' ({exc.strerror}); check its permissions") from None
    classes = [e for e in entries if not _hidden(e) and os.path.isdir(os.path.join(root, e))]
    stray = [e for e in entries if not _hidden(e) and os.path.isfile(os.path.join(root, e))]
    if not classes:
        hint = f" (it holds {len(stray)} loose files)" if stray else ""
        raise DataError(
            f"Data folder '{root}' has no class sub-folders{hint}; put each class's images in ROOT/<class name>/"
        )
    if len(classes) < min_classes:
        raise DataError(
            f"Data folder '{root}' has {len(classes)} class ({classes[0]!r}); at least {min_classes} are needed, "
            f"one sub-folder each"
        )
    for cls in classes:
        if _printable(cls) != cls:
            # Labels travel inside ONNX metadata and labels.txt, which are UTF-8.
            raise DataError(f"Class folder name '{_printable(cls)}' in '{root}' is not valid UTF-8; rename the folder "
                            f"(its name becomes the label)")
        if bad := control_characters(cls):
            raise DataError(f"Class folder name '{visible(cls)}' in '{visible(root)}' contains control characters "
                            f"({bad}); rename the folder (its name becomes the label, one line of labels.txt)")
    folder = ImageFolder(root, classes, PathList(), np.zeros(0, np.int64))
    for name in stray:
        folder.skip(os.path.join(root, name), "file outside any class folder")
    listing = PathListBuilder(os.path.join(root, ""))  # every path starts with the root: held once
    counts = []
    for cls in classes:
        before = len(listing)
        for path in _walk_files(os.path.join(root, cls)):
            if not path.lower().endswith(IMAGE_EXTENSIONS):
                folder.skip(path, f"not an image file type ({', '.join(IMAGE_EXTENSIONS)})")
                continue
            listing.append(path)
        counts.append(len(listing) - before)
        if counts[-1] == 0:
            raise DataError(
                f"Class folder '{os.path.join(root, cls)}' has no images; add images "
                f"({', '.join(IMAGE_EXTENSIONS)}) or remove the folder"
            )
    folder.paths = listing.build()
    folder.targets = np.repeat(np.arange(len(classes), dtype=np.int64), counts)  # classes are walked in order
    folder.duplicates = find_cross_class_duplicates(folder.paths, folder.targets, classes)
    for dup in folder.duplicates:
        log.warning("the same image is in classes %s: %s; keep it in one class only",
                    " and ".join(repr(c) for c in dup["classes"]), ", ".join(dup["paths"]))
    return folder


def stratified_split(targets: np.ndarray, val_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-class shuffled split; every class with >= 2 images keeps at least
    one image on each side."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"--val-split must be between 0 and 1 (exclusive), got {val_fraction}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(targets):
        idx = np.flatnonzero(targets == c)
        rng.shuffle(idx)
        n_val = int(round(len(idx) * val_fraction))
        n_val = min(max(n_val, 1 if len(idx) >= 2 else 0), len(idx) - 1)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    none = np.zeros(0, np.int64)
    return tuple(np.sort(np.concatenate([none, *side]).astype(np.int64)) for side in (train, val))


def stratified_sample(targets: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of a stratified random sample of ``n`` of ``targets``:
    each class keeps its share (largest remainders round it), and every
    class present keeps at least one image, so with more classes than ``n``
    the sample holds one per class. All of them when ``n >= len(targets)``.
    The same ``seed``, the same sample."""
    targets = np.asarray(targets)
    if n < 1:
        raise ValueError(f"a sample needs at least 1 image, got {n}")
    if n >= len(targets):
        return np.arange(len(targets), dtype=np.int64)
    sizes = np.unique(targets, return_counts=True)[1]
    exact = n * sizes / len(targets)
    quota = np.maximum(np.floor(exact).astype(np.int64), 1)  # exact < size, so quota <= size
    if quota.sum() < n:  # the largest remainders get one more (room: exact < size everywhere)
        room = np.flatnonzero(quota < sizes)
        order = room[np.argsort(-(exact - quota)[room], kind="stable")]
        quota[order[:n - quota.sum()]] += 1
    while quota.sum() > n and quota.max() > 1:  # one per class pushed it over: the largest give one back
        quota[np.argmax(quota)] -= 1
    rng = np.random.default_rng(seed)
    by_class = np.split(np.argsort(targets, kind="stable"), np.cumsum(sizes)[:-1])  # one pass, any class count
    picked = [rng.permutation(rows)[:k] for rows, k in zip(by_class, quota)]
    return np.sort(np.concatenate(picked)).astype(np.int64)
