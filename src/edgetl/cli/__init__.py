"""Command line: ``edgetl COMMAND``. Each command group is one module here
that adds its own sub-parsers (``register(sub, common, verbose_flag)``);
handlers parse, call, print. Errors a user can cause are one line on
stderr, exit code 2; no traceback unless --verbose. Ctrl-C (SIGINT) and
SIGTERM (``kill``, a container or service stopping) take the same path:
every temporary file and folder is removed on the way out, one line says
so, exit code 130 for Ctrl-C and 143 for SIGTERM (128 + the signal number,
what a shell reports for a process the signal ended)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import signal
import sys
import threading

from .. import __version__
from ..errors import EdgetlError

EXIT_USER_ERROR = 2
EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM

# The command groups, in the order 'edgetl --help' lists them. A new group is
# one module with a register() function, named here.
GROUPS = ("demo", "zoo", "train", "extract", "evaluate", "device", "export", "studio")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgetl", description="Transfer learning for mobile and edge ML: labeled photos in, on-device bundle out."
    )
    parser.add_argument("--version", action="version", version=f"edgetl {__version__}")
    verbose_flag = argparse.ArgumentParser(add_help=False)
    verbose_flag.add_argument("--verbose", "-v", action="store_true", help="debug logging and tracebacks on errors")
    common = argparse.ArgumentParser(add_help=False, parents=[verbose_flag])
    common.add_argument("--cache-dir", default=None,
                        help="feature/model cache (default $EDGETL_CACHE_DIR or ~/.cache/edgetl)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in GROUPS:
        importlib.import_module(f"{__name__}.{group}").register(sub, common, verbose_flag)
    return parser


class _StderrHandler(logging.Handler):
    """Writes to whatever sys.stderr is at the time (not the one at setup)."""

    def emit(self, record):
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


class _Formatter(logging.Formatter):
    def format(self, record):
        if record.levelno >= logging.WARNING:
            return f"edgetl: {record.levelname.lower()}: {record.getMessage()}"
        return f"edgetl: {record.getMessage()}"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, like Ctrl-C's KeyboardInterrupt:
    every ``finally`` and ``except BaseException`` cleanup on the way up runs."""


def _on_sigterm(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup short
    raise Terminated()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM raises :class:`Terminated` while the command runs (signal
    handlers can only be set in the main thread; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER_ERROR
    handler = _StderrHandler()
    handler.setFormatter(_Formatter())
    root = logging.getLogger("edgetl")
    saved = (root.handlers[:], root.level, root.propagate)
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    root.propagate = False
    try:
        with _sigterm_as_interrupt():
            return _run(args)
    finally:
        root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]


def _run(args) -> int:
    try:
        return args.func(args)
    except EdgetlError as exc:
        if args.verbose:
            raise
        print(f"edgetl: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as exc:
        print("edgetl: interrupted; nothing half-written was left behind", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
    except Exception as exc:
        if args.verbose:
            raise
        print(f"edgetl: internal error: {type(exc).__name__}: {exc} (run again with --verbose for the traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL
