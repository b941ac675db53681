"""One exception family for everything a user can cause.

Each class also subclasses the matching built-in so callers that catch
``ValueError`` or ``FileNotFoundError`` keep working. Messages follow one
template: what is wrong, then how to fix it, on one line.
"""

from __future__ import annotations


class EdgetlError(Exception):
    """Base class of every error edgetl raises on purpose."""


class DataError(EdgetlError, ValueError):
    """The image folder or an image is not usable."""


class DataNotFoundError(EdgetlError, FileNotFoundError):
    """A folder or file the user named does not exist."""


class UnknownBackboneError(EdgetlError, LookupError):
    """A backbone name that is not in the registry."""


class WeightsError(EdgetlError, ValueError):
    """A weights file that cannot be loaded into the architecture."""


class BundleError(EdgetlError, ValueError):
    """A RUN_DIR that is not a complete edgetl bundle."""


class RunExistsError(EdgetlError, FileExistsError):
    """The output folder already exists."""


class StorageError(EdgetlError, OSError):
    """A write failed (disk full, read-only folder); nothing half-written was kept."""


def storage_error(exc: OSError, what: str, folder: str) -> StorageError:
    """One line for a failed write of ``what`` into ``folder``."""
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = f"free some space on the disk holding '{folder}' or choose another folder"
        why = "the disk is full"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = f"make '{folder}' writable or choose another folder"
        why = "the folder is not writable"
    else:
        fix = f"check the disk holding '{folder}'"
        why = exc.strerror or type(exc).__name__
    error = StorageError(f"Cannot write {what} ({why}); nothing half-written was kept; {fix}")
    error.errno = exc.errno  # str() stays the one line above
    return error


class ResultCheckError(EdgetlError, RuntimeError):
    """A run whose result fails its own checks (training diverged to NaN or
    Inf, the exported model disagrees with the host): nothing was published."""


class MissingExtraError(EdgetlError, ImportError):
    """An optional converter (a pip extra) is not installed."""


class NotFittedError(EdgetlError, ValueError, AttributeError):
    """A head (or model) used before ``fit``; like scikit-learn's, also a
    ValueError and an AttributeError."""
