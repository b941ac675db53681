"""Command line: ``edgetl COMMAND``. Each command group is one module here
that adds its own sub-parsers (``register(sub, common, verbose_flag)``);
handlers parse, call, print. Errors a user can cause are one line on
stderr, exit code 2; no traceback unless --verbose."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .. import __version__
from ..errors import EdgetlError

EXIT_USER_ERROR = 2
EXIT_INTERNAL = 1

# The command groups, in the order 'edgetl --help' lists them. A new group is
# one module with a register() function, named here.
GROUPS = ("demo", "zoo", "train", "evaluate", "device", "export")


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
    except KeyboardInterrupt:
        print("edgetl: interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        if args.verbose:
            raise
        print(f"edgetl: internal error: {type(exc).__name__}: {exc} (run again with --verbose for the traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL
