"""The run folder's life: checked before any work, built as
``.RUN.tmp-PID`` beside it, published by one rename (an old run is removed
only after), and what a killed run left behind swept on the next start.
Fine-tuning keeps its work in progress in ``.RUN.state/`` beside it."""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Iterator

from .._files import pid_alive, temp_name
from ..errors import DataError, RunExistsError, storage_error


def check_out_dir(out_dir: str, data_dir: str, overwrite: bool) -> None:
    """Refuses, before any work, an --out that would write into the data
    folder, replace it, or replace an existing run without ``overwrite``."""
    out_abs, data_abs = os.path.realpath(out_dir), os.path.realpath(data_dir)
    if out_abs == data_abs or out_abs.startswith(data_abs + os.sep):
        raise DataError(f"--out '{out_dir}' is inside the data folder, which edgetl never writes to; choose another --out")
    if data_abs.startswith(out_abs + os.sep):
        # --overwrite would replace out_dir, and the photos inside it with it.
        raise DataError(f"--out '{out_dir}' contains the data folder; choose an --out outside '{data_dir}'")
    if os.path.exists(out_dir) and not overwrite:
        raise RunExistsError(f"Run folder '{out_dir}' already exists; pass --overwrite or choose another --out")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise RunExistsError(f"'{out_dir}' is a file; choose another --out")


def state_dir_for(out_dir: str) -> str:
    """Where fine-tuning keeps decoded images, cached prefixes and checkpoints."""
    parent, base = os.path.split(os.path.abspath(out_dir))
    return os.path.join(parent, f".{base}.state")


def publish(tmp_dir: str, out_dir: str) -> None:
    """Move the finished run into place; an old run is removed only after."""
    old = None
    if os.path.exists(out_dir):
        old = f"{out_dir}.old-{os.getpid()}"
        os.replace(out_dir, old)
    os.replace(tmp_dir, out_dir)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def sweep_dead_runs(out_dir: str) -> None:
    """What a killed 'edgetl train' left beside RUN_DIR: its temporary folder
    (removed) and, when it died mid-publish, the previous bundle set aside as
    RUN.old-PID (put back in place)."""
    parent, base = os.path.split(os.path.abspath(out_dir))
    for name in sorted(os.listdir(parent)):
        for prefix in (f".{base}.tmp-", f"{base}.old-"):
            pid = name[len(prefix):] if name.startswith(prefix) else ""
            if not pid.isdigit() or int(pid) == os.getpid() or pid_alive(int(pid)):
                continue
            path = os.path.join(parent, name)
            if prefix.endswith(".old-") and not os.path.exists(out_dir):
                os.replace(path, out_dir)  # the previous bundle, back in place
            else:
                shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def staging(out_dir: str) -> Iterator[str]:
    """A fresh staging folder for the bundle (after sweeping dead runs); on
    any failure it is removed, and a failed write becomes one StorageError
    line. The body publishes it (``publish``) when complete."""
    parent = os.path.dirname(os.path.abspath(out_dir))
    try:
        os.makedirs(parent, exist_ok=True)
        sweep_dead_runs(out_dir)
        tmp_dir = temp_name(out_dir)  # .RUN.tmp-PID
        shutil.rmtree(tmp_dir, ignore_errors=True)
        os.makedirs(tmp_dir)
    except OSError as exc:
        raise storage_error(exc, f"the bundle '{out_dir}'", parent) from None
    try:
        yield tmp_dir
    except OSError as exc:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise storage_error(exc, f"the bundle '{out_dir}'", parent) from None
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
