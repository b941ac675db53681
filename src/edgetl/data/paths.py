"""A listing of paths held compactly: a million files in tens of MB, not
hundreds.

In a Python list, each path is a str object (~50 bytes and its characters)
and a pointer: 95 bytes a path for 37-character paths (measured). A
:class:`PathList` keeps the prefix all paths share (the data folder) once,
the rest of each path as UTF-8 bytes in one buffer, and int64 offsets into
it: 8 bytes a path beside the characters after the prefix (32 bytes a path
for the same listing). It is a ``Sequence[str]``: ``len``, indexing
(also by numpy integers), slicing (a slice is another PathList over the
same buffer), iteration, ``in``, and ``==`` against any sequence of str.
Each item is a fresh ``str`` equal to the one stored. Names that are not
valid UTF-8 (``os.fsdecode``'s lone surrogates) round-trip exactly: the
rest of each path is encoded with ``surrogatepass``."""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from operator import index as as_index

import numpy as np

_ENCODING, _ERRORS = "utf-8", "surrogatepass"  # every str round-trips, lone surrogates included
_ITER_WINDOW = 4096  # offsets turned into Python ints a window at a time while iterating


class PathList(Sequence):
    """Paths as ``prefix`` + one UTF-8 buffer and offsets (see the module)."""

    def __init__(self, paths: Iterable[str] = (), prefix: str = ""):
        builder = PathListBuilder(prefix)
        for path in paths:
            builder.append(path)
        self.__dict__.update(builder.build().__dict__)

    @classmethod
    def _of(cls, prefix: str, buf: bytes, starts: np.ndarray, ends: np.ndarray) -> "PathList":
        """Paths ``buf[starts[i]:ends[i]]`` (a slice's or a take's: they share ``buf``)."""
        out = cls.__new__(cls)
        out._prefix, out._buf, out._starts, out._ends, out._offsets = prefix, buf, starts, ends, None
        return out

    @classmethod
    def _whole(cls, prefix: str, buf: bytes, offsets: np.ndarray) -> "PathList":
        """Paths ``buf[offsets[i]:offsets[i + 1]]``, which cover all of ``buf``."""
        out = cls._of(prefix, buf, offsets[:-1], offsets[1:])  # two views of one array: 8 bytes a path
        out._offsets = offsets
        return out

    @property
    def prefix(self) -> str:
        """What every path starts with (held once)."""
        return self._prefix

    def __len__(self) -> int:
        return len(self._starts)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return PathList._of(self._prefix, self._buf, self._starts[i], self._ends[i])
        i = as_index(i)
        n = len(self._starts)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} paths")
        return self._prefix + self._buf[int(self._starts[i]) : int(self._ends[i])].decode(_ENCODING, _ERRORS)

    def take(self, index) -> "PathList":
        """The paths at ``index`` (integers, in that order), sharing this buffer."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        return PathList._of(self._prefix, self._buf, self._starts[index], self._ends[index])

    def __iter__(self) -> Iterator[str]:
        buf, prefix = self._buf, self._prefix
        for lo in range(0, len(self._starts), _ITER_WINDOW):
            starts = self._starts[lo : lo + _ITER_WINDOW].tolist()
            ends = self._ends[lo : lo + _ITER_WINDOW].tolist()
            for start, end in zip(starts, ends):
                yield prefix + buf[start:end].decode(_ENCODING, _ERRORS)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None  # equal to a list of the same paths, so unhashable like one

    def __repr__(self) -> str:
        head = ", ".join(repr(p) for p in self[:3])
        return f"PathList([{head}{', ...' if len(self) > 3 else ''}], {len(self)} paths)"

    def nbytes(self) -> int:
        """Bytes held: the buffer (shared with slices and takes), the offsets, the prefix."""
        offsets = self._offsets.nbytes if self._offsets is not None else self._starts.nbytes + self._ends.nbytes
        return len(self._buf) + int(offsets) + len(self._prefix)

    def __reduce__(self):
        if self._offsets is not None:
            return PathList._whole, (self._prefix, self._buf, self._offsets)
        # A slice or a take(): only its own paths travel, not the whole buffer it shares.
        offsets = np.zeros(len(self) + 1, np.int64)
        np.cumsum(self._ends - self._starts, out=offsets[1:])
        buf = b"".join(self._buf[s:e] for s, e in zip(self._starts.tolist(), self._ends.tolist()))
        return PathList._whole, (self._prefix, buf, offsets)


class PathListBuilder:
    """Appends paths (each must start with ``prefix``) into a PathList, never
    holding a Python list of them."""

    def __init__(self, prefix: str = ""):
        self.prefix = prefix
        self._buf = bytearray()
        self._ends = array("q")

    def append(self, path: str) -> None:
        if not path.startswith(self.prefix):
            raise ValueError(f"{path!r} does not start with {self.prefix!r}")
        self._buf += path[len(self.prefix) :].encode(_ENCODING, _ERRORS)
        self._ends.append(len(self._buf))

    def __len__(self) -> int:
        return len(self._ends)

    def build(self) -> PathList:
        """The PathList of what was appended (the builder is emptied)."""
        offsets = np.zeros(len(self._ends) + 1, np.int64)
        if len(self._ends):
            offsets[1:] = np.frombuffer(self._ends, np.int64)
        buf = bytes(self._buf)
        self._buf, self._ends = bytearray(), array("q")
        return PathList._whole(self.prefix, buf, offsets)


def as_path_list(paths: Iterable[str]) -> PathList:
    """``paths`` as a PathList (itself when it already is one); a list gets its
    common folder as the prefix."""
    if isinstance(paths, PathList):
        return paths
    paths = paths if isinstance(paths, Sequence) else list(paths)
    return PathList(paths, common_folder(paths))


def common_folder(paths: Sequence[str]) -> str:
    """The longest prefix of every path that ends with a separator ('' if none)."""
    if not len(paths):
        return ""
    first, last = min(paths), max(paths)  # the common prefix of all is that of these two
    n = 0
    for a, b in zip(first, last):
        if a != b:
            break
        n += 1
    cut = max(first.rfind("/", 0, n), first.rfind("\\", 0, n))
    return first[: cut + 1]
