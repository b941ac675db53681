"""The run folder's life: checked before any work, claimed for the whole
run (``.RUN.lock`` beside it), built as ``.RUN.tmp-PID`` beside it,
published by one rename (an old run is removed only after), and what a
killed run left behind swept on the next start. Fine-tuning keeps its work
in progress in ``.RUN.state/`` beside it, under the same claim.

Every run folder carries a marker (:data:`RUN_MARKER`), written into the
staging folder first thing: it is how edgetl tells its own folders (a run
``--overwrite`` may replace, a leftover the sweep may remove or put back)
from a user's, whatever their names."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
from typing import Iterator

from .. import __version__
from .._files import pid_alive, temp_name, write_json
from ..errors import DataError, EdgetlError, RunExistsError, StorageError, storage_error

try:  # POSIX; elsewhere the run folder is not claimed (see claim_run)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

log = logging.getLogger(__name__)

RUN_MARKER = ".edgetl-run"
RUN_FORMAT = "edgetl-run"
RUN_FORMAT_VERSION = 1
# The longest name edgetl derives from RUN's: ".RUN.tmp-PID" (PIDs up to 7 digits).
_NAME_OVERHEAD = len("..tmp-") + 7


def write_run_marker(folder: str, **extra) -> str:
    """Mark ``folder`` as an edgetl run (a small JSON file); ``extra``: what
    else the maker records (``made_by="demo"``)."""
    return write_json(os.path.join(folder, RUN_MARKER), {"format": RUN_FORMAT, "version": RUN_FORMAT_VERSION,
                                                         "edgetl_version": __version__, **extra})


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def read_run_marker(folder: str) -> dict | None:
    """``folder``'s run marker, or None when it has none (or not a valid one)."""
    marker = _read_json(os.path.join(folder, RUN_MARKER))
    return marker if isinstance(marker, dict) and marker.get("format") == RUN_FORMAT else None


def is_run_folder(path: str) -> bool:
    """Whether ``path`` is a folder edgetl made: its marker, or (runs made
    before the marker existed) a ``metrics.json`` naming the edgetl version
    that wrote it beside a ``model.onnx`` (every complete run has had both
    since edgetl 0.1)."""
    if not os.path.isdir(path):
        return False
    if read_run_marker(path) is not None:
        return True
    metrics = _read_json(os.path.join(path, "metrics.json"))
    return (isinstance(metrics, dict) and "edgetl_version" in metrics
            and os.path.isfile(os.path.join(path, "model.onnx")))


def _split(out_dir: str) -> tuple[str, str]:
    return os.path.split(os.path.abspath(out_dir))


def check_out_path(out_dir: str, data_dir: str) -> None:
    """Refuses an --out that would write into the data folder or replace it."""
    out_abs, data_abs = os.path.realpath(out_dir), os.path.realpath(data_dir)
    if out_abs == data_abs or out_abs.startswith(data_abs + os.sep):
        raise DataError(f"--out '{out_dir}' is inside the data folder, which edgetl never writes to; choose another --out")
    if data_abs.startswith(out_abs + os.sep):
        # --overwrite would replace out_dir, and the photos inside it with it.
        raise DataError(f"--out '{out_dir}' contains the data folder; choose an --out outside '{data_dir}'")


def check_out_writable(out_dir: str) -> None:
    """Before any work: --out's parent exists (created if missing) and takes
    a new file (created and removed), and --out's name leaves room for the
    names edgetl derives from it. Otherwise one StorageError line."""
    parent, base = _split(out_dir)
    try:
        name_max = os.pathconf(parent, "PC_NAME_MAX") if os.path.isdir(parent) else 255
    except (OSError, ValueError):
        name_max = 255
    size = len(os.fsencode(base))
    if size + _NAME_OVERHEAD > name_max:
        raise StorageError(f"--out '{out_dir}': the name is {size} bytes, and edgetl builds the run beside it as "
                           f"'.NAME.tmp-PID', which must fit the file system's limit of {name_max} bytes; choose a "
                           f"name of at most {name_max - _NAME_OVERHEAD} bytes")
    probe = os.path.join(parent, f".{base}.prb-{os.getpid()}")
    try:
        os.makedirs(parent, exist_ok=True)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        not_writable = exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
        why = "the folder is not writable" if not_writable else (exc.strerror or type(exc).__name__)
        raise StorageError(f"--out '{out_dir}': cannot create files in '{parent}' ({why}); choose an --out in a "
                           f"folder you can write to") from None


def check_out_dir(out_dir: str, data_dir: str, overwrite: bool) -> None:
    """Refuses, before any work, an --out that would write into the data
    folder, replace it, replace anything but an edgetl run, or replace a run
    without ``overwrite``."""
    check_out_path(out_dir, data_dir)
    if not os.path.lexists(out_dir):
        return
    if not os.path.isdir(out_dir):
        raise RunExistsError(f"'{out_dir}' already exists and is a file; choose another --out")
    if not is_run_folder(out_dir):
        raise RunExistsError(f"'{out_dir}' already exists and is not an edgetl run (it has no {RUN_MARKER} file), "
                             f"so even --overwrite never replaces it; choose another --out")
    if not overwrite:
        raise RunExistsError(f"Run folder '{out_dir}' already exists; pass --overwrite or choose another --out")


def state_dir_for(out_dir: str) -> str:
    """Where fine-tuning keeps decoded images, cached prefixes and checkpoints."""
    parent, base = _split(out_dir)
    return os.path.join(parent, f".{base}.state")


def lock_path(out_dir: str) -> str:
    parent, base = _split(out_dir)
    return os.path.join(parent, f".{base}.lock")


@contextlib.contextmanager
def claim_run(out_dir: str) -> Iterator[None]:
    """Hold ``out_dir`` (and its ``.RUN.state/``) for the block: an exclusive
    ``flock`` on ``.RUN.lock`` beside it, which the kernel releases when this
    process ends however it ends. Another process already holding it is a
    RunExistsError naming its PID, at once (no waiting). The lock file is
    removed on the way out. Where locks do not exist (Windows, a file system
    without them) the run goes on unclaimed, with a warning there."""
    path = lock_path(out_dir)
    fd = _lock(path, out_dir) if fcntl is not None else None
    if fd is None:
        yield
        return
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still holding it: whoever opened it meanwhile sees the file gone and retries
        os.close(fd)


def _lock(path: str, out_dir: str) -> int | None:
    """The descriptor of ``path``, exclusively locked (None: no locks here)."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise storage_error(exc, f"the lock file '{path}'", os.path.dirname(path)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            who = f"PID {holder}" if holder.isdigit() else "another process"
            raise RunExistsError(f"Run folder '{out_dir}' is being written by another edgetl run ({who}); wait for it "
                                 f"to finish or choose another --out") from None
        except OSError as exc:  # ENOLCK, EOPNOTSUPP: some network file systems
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            log.warning("cannot lock %s (%s): two runs with this --out at once would not be stopped", path,
                        exc.strerror)
            return None
        try:  # the holder before us may have removed the file between our open and our lock
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def publish(tmp_dir: str, out_dir: str) -> None:
    """Move the finished run into place; an old run is removed only after
    (and only a run: a folder that became something else meanwhile is kept)."""
    old = None
    if os.path.lexists(out_dir):
        if not is_run_folder(out_dir):
            raise RunExistsError(f"'{out_dir}' was replaced by something that is not an edgetl run while this run "
                                 f"was training; it is kept as it is: choose another --out")
        old = f"{out_dir}.old-{os.getpid()}"
        os.replace(out_dir, old)
    os.replace(tmp_dir, out_dir)
    if old and os.path.islink(old):  # --out was a link to a run: the link is replaced, its target kept
        os.unlink(old)
    elif old:
        shutil.rmtree(old, ignore_errors=True)


def sweep_dead_runs(out_dir: str) -> None:
    """What a killed 'edgetl train' left beside RUN_DIR: its temporary folder
    (removed) and, when it died mid-publish, the previous bundle set aside as
    RUN.old-PID (put back in place). Only folders carrying the run marker
    are touched: a user's ``RUN.old-2024`` is not edgetl's to move."""
    parent, base = _split(out_dir)
    for name in sorted(os.listdir(parent)):
        for prefix in (f".{base}.tmp-", f"{base}.old-"):
            pid = name[len(prefix):] if name.startswith(prefix) else ""
            if not pid.isdigit() or int(pid) == os.getpid() or pid_alive(int(pid)):
                continue
            path = os.path.join(parent, name)
            if os.path.islink(path) or not is_run_folder(path):
                continue
            if prefix.endswith(".old-") and not os.path.lexists(out_dir):
                os.replace(path, out_dir)  # the previous bundle, back in place
            else:
                shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def staging(out_dir: str) -> Iterator[str]:
    """A fresh staging folder for the bundle (after sweeping dead runs),
    marked as a run first thing; on any failure it is removed, and a failed
    write becomes one StorageError line. The body publishes it (``publish``)
    when complete."""
    parent = os.path.dirname(os.path.abspath(out_dir))
    tmp_dir = temp_name(out_dir)  # .RUN.tmp-PID
    created = False
    try:
        os.makedirs(parent, exist_ok=True)
        sweep_dead_runs(out_dir)
        if is_run_folder(tmp_dir):  # a dead run that had this PID
            shutil.rmtree(tmp_dir, ignore_errors=True)
        os.makedirs(tmp_dir)
        created = True
        write_run_marker(tmp_dir)
    except BaseException as exc:
        if created:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, EdgetlError):
            raise storage_error(exc, f"the bundle '{out_dir}'", parent) from None
        raise
    try:
        yield tmp_dir
    except BaseException as exc:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, EdgetlError):  # RunExistsError is an OSError too
            raise storage_error(exc, f"the bundle '{out_dir}'", parent) from None
        raise
