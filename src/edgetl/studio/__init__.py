"""edgetl studio: a local web app to gather images, train, inspect and export
(docs/studio-api.md). ``server`` holds the FastAPI app (``create_app``,
``run``); ``worker`` runs each job in its own process. Importing this package
imports neither FastAPI nor torch (the worker imports it too)."""

from __future__ import annotations

__all__ = ["create_app", "run"]


def __getattr__(name: str):
    if name in __all__:
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
