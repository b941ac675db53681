"""One writer at a time in a folder: an exclusive ``flock`` on FOLDER/.lock.

Two processes that each read the learning state, change it and save it
would otherwise both succeed and the second save would silently drop what
the first added. Holding this lock from reading the state to saving it makes
the second writer wait for the first instead (``Personalizer.edit``, and
every ``edgetl device add|fit``). The lock is the kernel's: a process killed
while holding it releases it. The lock file is removed on release; a waiter
that then gets the lock of the removed file sees so and takes the new one.
Standard library only (the device runtime's rule); where ``fcntl`` does not
exist (Windows) there is no lock and ``Personalizer.save`` still refuses to
overwrite a state another process saved meanwhile."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from ..errors import DataError, storage_error

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_FILE = ".lock"


def _missing(folder: str) -> list[str]:
    """``folder`` and those of its parents that do not exist, deepest first."""
    out, path = [], os.path.abspath(folder)
    while not os.path.isdir(path) and os.path.dirname(path) != path:
        out.append(path)
        path = os.path.dirname(path)
    return out


def _open_locked(folder: str) -> tuple[int, list[str]]:
    """A descriptor of FOLDER/.lock holding its exclusive lock (waits for
    another holder), and the folders made for it (deepest first)."""
    path = os.path.join(folder, LOCK_FILE)
    made: list[str] = []
    vanished = 0
    while True:  # each turn after the first: another writer held the lock and is done
        try:
            if missing := _missing(folder):
                made += [m for m in missing if m not in made]
                os.makedirs(folder, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except FileNotFoundError:
            vanished += 1
            if vanished > 100:
                raise
            continue  # a folder was removed meanwhile (another first write that failed): make it again
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.path.samestat(os.fstat(fd), os.stat(path)):
                    return fd, made
            except FileNotFoundError:
                pass  # the holder removed the file while we waited: lock the new one
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


@contextmanager
def folder_lock(folder: str, what: str = "the learning state") -> Iterator[None]:
    """Hold FOLDER's lock for the block; another holder makes this wait. The
    folders made here and left empty are removed again, so a first write that
    fails leaves nothing behind."""
    folder = os.fspath(folder)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise DataError(f"'{folder}' is a file, not a folder; pass a folder for {what}")
    try:
        fd, made = _open_locked(folder)
    except OSError as exc:  # a read-only or full disk: one line, like a failed save
        raise storage_error(exc, f"the lock file of {what} ({LOCK_FILE})", folder) from None
    try:
        yield
    finally:
        with suppress(OSError):
            os.unlink(os.path.join(folder, LOCK_FILE))
        os.close(fd)
        for path in sorted(made, key=len, reverse=True):  # deepest first
            with suppress(OSError):
                os.rmdir(path)  # only if empty
