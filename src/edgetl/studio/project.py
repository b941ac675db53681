"""A studio project folder (docs/studio-api.md, "The project folder"):
project.json, the data root (``data/`` or a read-only ``--from`` folder),
the class listings (cached per folder mtime), image hashes for duplicates,
thumbnails, and ``.studio/runs.json``."""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time
from dataclasses import dataclass

from .._files import write_bytes, write_json
from ..data.folder import _hidden
from ..data.image import IMAGE_EXTENSIONS, decode_image
from ..errors import DataError
from .security import BadName, check_class_name, check_image_name, resolve_inside

FORMAT = "edgetl.studio/1"
THUMB = 160


class Refused(Exception):
    """A request the project refuses: ``status`` and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Entry:
    name: str  # '/'-separated inside the class folder
    size: int
    mtime_ns: int


class Listings:
    """Each class's sorted image listing, made again only when the mtime of
    the class folder (or of one of its sub-folders) changed."""

    def __init__(self):
        self.cache: dict[str, tuple[dict[str, int], list[Entry]]] = {}
        self.lock = threading.Lock()

    def get(self, class_dir: str) -> list[Entry]:
        with self.lock:
            cached = self.cache.get(class_dir)
        if cached and all(_mtime(d) == m for d, m in cached[0].items()):
            return cached[1]
        dirs, entries = _scan(class_dir)
        with self.lock:
            self.cache[class_dir] = (dirs, entries)
        return entries

    def forget(self, class_dir: str) -> None:
        with self.lock:
            self.cache.pop(class_dir, None)


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path, follow_symlinks=False).st_mtime_ns
    except OSError:
        return None


def _scan(class_dir: str) -> tuple[dict[str, int], list[Entry]]:
    dirs, entries, stack = {}, [], [(class_dir, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            dirs[folder] = os.stat(folder, follow_symlinks=False).st_mtime_ns
            it = list(os.scandir(folder))
        except OSError:
            continue
        for e in it:
            if _hidden(e.name) or e.is_symlink():
                continue
            if e.is_dir(follow_symlinks=False):
                stack.append((e.path, prefix + e.name + "/"))
            elif e.name.lower().endswith(IMAGE_EXTENSIONS) and e.is_file(follow_symlinks=False):
                st = e.stat(follow_symlinks=False)
                entries.append(Entry(prefix + e.name, st.st_size, st.st_mtime_ns))
    entries.sort(key=lambda x: x.name)
    return dirs, entries


class Hashes:
    """sha256 of every image's bytes, kept in .studio/hashes.json keyed by
    (relative path, size, mtime_ns): computed once, incrementally."""

    def __init__(self, path: str):
        self.path, self.lock = path, threading.Lock()
        self.save_lock = threading.Lock()  # one writer of the file at a time (one temporary name per process)
        self.known: dict[str, str] = {}
        self.dirty = False
        try:
            with open(path, encoding="utf-8") as fh:
                self.known = dict(json.load(fh).get("hashes", {}))
        except (OSError, ValueError, AttributeError):
            self.known = {}

    @staticmethod
    def key(rel: str, entry: Entry) -> str:
        return f"{rel}|{entry.size}|{entry.mtime_ns}"

    def get(self, root: str, rel: str, entry: Entry) -> str | None:
        key = self.key(rel, entry)
        with self.lock:
            if key in self.known:
                return self.known[key]
        try:
            with open(os.path.join(root, *rel.split("/")), "rb") as fh:
                digest = hashlib.file_digest(fh, "sha256").hexdigest()
        except OSError:
            return None
        with self.lock:
            self.known[key] = digest
            self.dirty = True
        return digest

    def save(self, live_keys: set[str] | None = None) -> None:
        with self.save_lock:
            self._save(live_keys)

    def _save(self, live_keys: set[str] | None) -> None:
        with self.lock:
            if not self.dirty:
                return
            if live_keys is not None:
                self.known = {k: v for k, v in self.known.items() if k in live_keys}
            data, self.dirty = {"hashes": dict(self.known)}, False
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        write_json(self.path, data, indent=None)


def _check_source(project_dir: str, source: str) -> None:
    source = os.path.realpath(source)
    if not os.path.isdir(source):
        raise DataError(f"--from '{source}' is not a folder; pass a folder with one sub-folder per class")
    real = os.path.realpath(project_dir)
    if real == source or real.startswith(source + os.sep):
        raise DataError(f"the project folder '{project_dir}' lies inside --from '{source}', which the studio "
                        f"never writes into; choose a project folder outside it")


class Project:
    """One project folder. Every method that writes data raises Refused(403)
    for a ``--from`` project; none ever writes into the source folder."""

    def __init__(self, project_dir: str, source: str | None = None):
        self.dir = os.path.abspath(project_dir)
        self.state = os.path.join(self.dir, ".studio")
        self.lock = threading.RLock()
        if source is not None:
            _check_source(self.dir, source)
        os.makedirs(self.state, exist_ok=True)
        self.meta = self._load_meta(source)
        self.source = self.meta["source"]
        self.read_only = self.source is not None
        self.data_root = self.source or os.path.join(self.dir, "data")
        if not self.read_only:
            os.makedirs(self.data_root, exist_ok=True)
        os.makedirs(os.path.join(self.dir, "runs"), exist_ok=True)
        self.listings = Listings()
        self.hashes = Hashes(os.path.join(self.state, "hashes.json"))

    def _load_meta(self, source: str | None) -> dict:
        path = os.path.join(self.dir, "project.json")
        meta = {"format": FORMAT, "source": None, "data_version": 0}
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as fh:
                meta.update(json.load(fh))
        if source is not None:
            meta["source"] = os.path.realpath(source)
        write_json(path, meta)
        return meta

    @property
    def data_version(self) -> int:
        return int(self.meta.get("data_version", 0))

    def _bump(self) -> None:
        with self.lock:
            self.meta["data_version"] = self.data_version + 1
            write_json(os.path.join(self.dir, "project.json"), self.meta)

    def check_writable(self, what: str) -> None:
        if self.read_only:
            raise Refused(403, f"this project reads --from '{self.source}', which the studio never changes: "
                               f"{what} there yourself, or start a project without --from")

    # -- classes -------------------------------------------------------------------------
    def classes(self) -> list[str]:
        try:
            entries = sorted(os.scandir(self.data_root), key=lambda e: e.name)
        except OSError:
            return []
        return [e.name for e in entries if not _hidden(e.name) and e.is_dir(follow_symlinks=False)]

    def class_dir(self, name) -> str:
        try:
            check_class_name(name)
            path = resolve_inside(self.data_root, [name])
        except BadName as exc:
            raise Refused(400, str(exc)) from None
        if not os.path.isdir(path):
            raise Refused(404, f"no class {name!r}; GET /api/project lists the classes")
        return path

    def images(self, name: str) -> list[Entry]:
        return self.listings.get(self.class_dir(name))

    def counts(self) -> list[dict]:
        return [{"name": c, "count": len(self.listings.get(os.path.join(self.data_root, c)))}
                for c in self.classes()]

    def _free_class_path(self, name) -> str:
        """Where a new class ``name`` goes: a valid name (else 400) not taken (else 409)."""
        try:
            check_class_name(name)
        except BadName as exc:
            raise Refused(400, str(exc)) from None
        path = os.path.join(self.data_root, name)
        if os.path.lexists(path):
            raise Refused(409, f"class {name!r} exists already; choose another name")
        return path

    def add_class(self, name) -> str:
        self.check_writable("add classes")
        with self.lock:
            os.mkdir(self._free_class_path(name))
            self._bump()
        return name

    def rename_class(self, old, new) -> str:
        self.check_writable("rename classes")
        src = self.class_dir(old)
        with self.lock:
            os.rename(src, self._free_class_path(new))
            self.listings.forget(src)
            self._bump()
        return new

    def delete_class(self, name) -> int:
        self.check_writable("delete classes")
        src = self.class_dir(name)
        count = len(self.listings.get(src))
        with self.lock:
            trash = os.path.join(self.state, "trash")
            os.makedirs(trash, exist_ok=True)
            os.rename(src, os.path.join(trash, f"{name}.{time.strftime('%Y%m%d-%H%M%S')}.{time.time_ns()}"))
            self.listings.forget(src)
            self._bump()
        return count

    # -- images --------------------------------------------------------------------------
    def image_path(self, cls, name) -> tuple[str, Entry]:
        class_dir = self.class_dir(cls)
        try:
            path = resolve_inside(class_dir, check_image_name(name))
        except BadName as exc:
            raise Refused(400, str(exc)) from None
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            raise Refused(404, f"no image {name!r} in class {cls!r}") from None
        if not os.path.isfile(path) or not name.lower().endswith(IMAGE_EXTENSIONS):
            raise Refused(404, f"no image {name!r} in class {cls!r}")
        return path, Entry(name, st.st_size, st.st_mtime_ns)

    def thumbnail(self, cls, name) -> bytes:
        path, entry = self.image_path(cls, name)
        key = hashlib.sha256(f"{cls}/{name}\0{entry.size}\0{entry.mtime_ns}".encode()).hexdigest()
        folder = os.path.join(self.state, "thumbs")
        cached = os.path.join(folder, key + ".jpg")
        try:
            with open(cached, "rb") as fh:
                return fh.read()
        except OSError:
            pass
        with open(path, "rb") as fh:
            data = fh.read()
        try:
            image = decode_image(data, name, "RGB")
        except DataError as exc:
            raise Refused(422, str(exc).splitlines()[0]) from None
        image.thumbnail((THUMB, THUMB))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85)
        os.makedirs(folder, exist_ok=True)
        with self.lock:  # two requests for one thumbnail would share the temporary name
            write_bytes(cached, out.getvalue())
        return out.getvalue()

    def free_name(self, class_dir: str, name: str) -> str:
        """``name``, or ``stem (2).ext``, ``stem (3).ext``, ... when taken."""
        stem, ext = os.path.splitext(name)
        candidate, n = name, 1
        while os.path.lexists(os.path.join(class_dir, candidate)):
            n += 1
            candidate = f"{stem} ({n}){ext}"
        return candidate

    def store(self, cls: str, name: str, data: bytes) -> str:
        """Write an accepted upload under a free name (no version bump)."""
        self.check_writable("add images")
        class_dir = self.class_dir(cls)
        with self.lock:
            final = self.free_name(class_dir, name)
            write_bytes(os.path.join(class_dir, final), data)
        self.listings.forget(class_dir)
        return final

    def bump(self) -> None:
        self.check_writable("change images")
        self._bump()

    def move(self, cls, name, to) -> str:
        self.check_writable("move images")
        src, _ = self.image_path(cls, name)
        dst_dir = self.class_dir(to)
        if os.path.realpath(os.path.dirname(src)) == dst_dir:
            raise Refused(409, f"{name!r} is in class {to!r} already")
        with self.lock:
            final = self.free_name(dst_dir, os.path.basename(src))
            os.replace(src, os.path.join(dst_dir, final))
            self.listings.forget(self.class_dir(cls))
            self.listings.forget(dst_dir)
            self._bump()
        return final

    # -- hashes --------------------------------------------------------------------------
    def all_hashes(self) -> dict[str, list[str]]:
        """sha256 -> ["class/name", ...] over every image (hashing what is new)."""
        by_hash: dict[str, list[str]] = {}
        live = set()
        for cls in self.classes():
            for entry in self.listings.get(os.path.join(self.data_root, cls)):
                rel = f"{cls}/{entry.name}"
                live.add(Hashes.key(rel, entry))
                digest = self.hashes.get(self.data_root, rel, entry)
                if digest:
                    by_hash.setdefault(digest, []).append(rel)
        self.hashes.save(live)
        return by_hash

    def duplicate_groups(self) -> list[list[str]]:
        groups = []
        for names in self.all_hashes().values():
            if len({n.split("/", 1)[0] for n in names}) > 1:
                groups.append(sorted(names))
        return sorted(groups)

    def known_index(self) -> dict[str, list[str]]:
        """sha256 -> ["class/name", ...] from the hashes known so far (no
        hashing: a big class lists fast), only files that still exist."""
        with self.hashes.lock:
            items = list(self.hashes.known.items())
        out: dict[str, list[str]] = {}
        for key, digest in items:
            out.setdefault(digest, []).append(key.rsplit("|", 2)[0])
        return out

    def existing(self, rels: list[str]) -> list[str]:
        return [r for r in rels if os.path.isfile(os.path.join(self.data_root, *r.split("/")))]

    def hash_of(self, cls: str, entry: Entry) -> str | None:
        return self.hashes.get(self.data_root, f"{cls}/{entry.name}", entry)
