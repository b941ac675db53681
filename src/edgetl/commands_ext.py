"""Subcommands that live outside cli.py: ``edgetl export`` and ``edgetl report``.

``add_commands(sub, common, verbose_flag)`` registers them on the main
parser's subparsers; each sets ``func`` to a handler taking ``args`` and
returning an exit code, like the handlers in cli.py (errors a user can
cause are raised as ``EdgetlError`` subclasses; cli.py prints them)."""

from __future__ import annotations


def add_commands(sub, common, verbose_flag) -> None:
    """Nothing yet."""
