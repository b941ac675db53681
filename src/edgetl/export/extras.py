"""The converters are optional extras: import one (a one-line
MissingExtraError naming the extra when it is missing), name its version,
and keep its chatter (stdout banners, native logging on fd 2) out of the
command's output unless --verbose."""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import sys

from ..errors import MissingExtraError

log = logging.getLogger("edgetl.export")


@contextlib.contextmanager
def native_quiet():
    """The converters' native libraries (absl, XNNPACK, oneDNN) log on file
    descriptor 2 when imported and run; keep the command's output to edgetl's
    own lines unless --verbose. Python exceptions are unaffected."""
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def quiet():
    """Converters print progress bars and banners on stdout; the library does not."""
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    import warnings

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def need(module: str, extra: str):
    """``module`` imported, or MissingExtraError: pip install "edgetl[extra]"."""
    try:
        with native_quiet():
            return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{extra} export needs the '{extra}' extra ({module} is not installed): "
            f'pip install "edgetl[{extra}]"'
        ) from exc


def version_of(dist: str) -> str:
    """``"dist 1.2.3"`` for the metrics.json record, or the bare name if it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{dist} {version(dist)}"
    except PackageNotFoundError:
        return dist
