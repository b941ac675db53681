"""Files at the bottom of every stage: the cache folder, and the one way a
result is written (a temporary name in the same folder, then ``os.replace``),
so a crash at any moment leaves the old file or the new one, never half.

Standard library only: the device runtime uses it too."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from typing import Iterator


def default_cache_dir() -> str:
    """``$EDGETL_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgetl``, else ``~/.cache/edgetl``."""
    return os.environ.get("EDGETL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "edgetl"
    )


def cache_path(cache_dir: str | None, *parts: str) -> str:
    """A path inside ``cache_dir`` (default: :func:`default_cache_dir`)."""
    return os.path.join(cache_dir or default_cache_dir(), *parts)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a temporary file named after a dead one is debris)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def temp_name(path: str) -> str:
    """The temporary sibling of ``path`` this process writes before the rename:
    ``.NAME.tmp-PID`` in the same folder (same file system, so the rename is atomic)."""
    folder, base = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{base}.tmp-{os.getpid()}")


# What temp_name (and replace_path's set-aside ".old") names: ``.NAME.tmp-PID[.old]``.
_TEMP = re.compile(r"\.(.+)\.tmp-(\d+)(\.old)?")


def sweep_temporaries(folder: str, suffixes: tuple[str, ...] = ()) -> int:
    """Remove from ``folder`` (not below it) the temporaries of writers that
    are no longer running: a process killed (SIGKILL, power cut) between
    creating ``.NAME.tmp-PID`` and renaming it leaves it behind, and nothing
    else ever would remove it. A live writer's files are left alone;
    ``suffixes``: only temporaries of files ending so (in a folder edgetl
    shares with other files). Returns how many were removed; a folder that
    cannot be read is left as it is."""
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    removed = 0
    for name in names:
        match = _TEMP.fullmatch(name)
        if not match or (suffixes and not match.group(1).endswith(suffixes)):
            continue
        pid = int(match.group(2))
        if pid == os.getpid() or pid_alive(pid):
            continue
        _remove(os.path.join(folder, name))
        removed += 1
    return removed


def open_cache_folder(folder: str, suffixes: tuple[str, ...] = ()) -> str:
    """Create a cache folder if needed and sweep dead writers' temporaries
    from it (:func:`sweep_temporaries`); returns ``folder``."""
    os.makedirs(folder, exist_ok=True)
    sweep_temporaries(folder, suffixes)
    return folder


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)


def replace_path(tmp: str, final: str) -> None:
    """``os.replace`` that also puts a folder (an .mlpackage) over an old one:
    the old one is moved aside first and removed only after the rename."""
    if os.path.isdir(final) and not os.path.islink(final):
        old = f"{temp_name(final)}.old"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yields a temporary path beside ``path``; write the file (or folder)
    there. On success it replaces ``path``; on any error it is removed and
    ``path`` keeps what it had."""
    tmp = temp_name(path)
    _remove(tmp)
    try:
        yield tmp
        replace_path(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def write_bytes(path: str, data: bytes) -> str:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
    return path


def write_text(path: str, text: str) -> str:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


def write_json(path: str, obj, indent: int | None = 2) -> str:
    return write_text(path, json.dumps(obj, indent=indent) + "\n")
