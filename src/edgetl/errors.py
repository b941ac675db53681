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
