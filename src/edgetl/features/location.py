"""Where feature files live: a local path or any ``pyarrow.fs`` URI the
user has credentials for (``s3://bucket/prefix``, ``gs://...``,
``hdfs://...``, ``file:///...``). Local paths stay plain ``os`` paths;
URIs are resolved by ``pyarrow.fs.FileSystem.from_uri`` (credentials from
the usual environment: ``AWS_ACCESS_KEY_ID``, ``~/.aws``, ...)."""

from __future__ import annotations

import os

from ..errors import DataError, MissingExtraError


def is_uri(where: str) -> bool:
    """``s3://...``, ``file:///...``: a scheme before ``://`` (a Windows
    drive letter ``C:\\`` is not one)."""
    scheme, sep, _ = str(where).partition("://")
    return bool(sep) and len(scheme) > 1 and scheme.replace("+", "").replace("-", "").isalnum()


def resolve(where: str | os.PathLike):
    """(pyarrow filesystem, path inside it) for a local path or a URI."""
    try:
        import pyarrow.fs as pafs
    except ImportError:
        raise MissingExtraError("feature files are Parquet, read and written with pyarrow, which the 'ray' extra "
                                "brings: pip install 'edgetl[ray]'") from None
    where = os.fspath(where)
    if not is_uri(where):
        return pafs.LocalFileSystem(), os.path.abspath(where)
    try:
        return pafs.FileSystem.from_uri(where)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... with its own message
        raise DataError(f"Cannot open '{where}' ({str(exc).splitlines()[0]}); check the URI and its credentials") \
            from None


def join(base: str, *names: str) -> str:
    """``base/name/...`` inside one pyarrow filesystem (whose paths use ``/``)."""
    return "/".join([base.rstrip("/"), *names])
