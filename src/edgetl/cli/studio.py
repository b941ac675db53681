"""``edgetl studio``: the local web studio (gather, train, results, preview,
export) for one project folder; the server is ``edgetl.studio.server``."""

from __future__ import annotations

from ..errors import MissingExtraError


def cmd_studio(args) -> int:
    try:
        from ..studio import server
    except ImportError as exc:
        raise MissingExtraError(f"edgetl studio needs the 'studio' extra ({exc.name} is not installed): "
                                f"pip install \"edgetl[studio]\"") from exc
    server.run(args.project_dir, source=args.source, host=args.host, port=args.port,
               open_browser=not args.no_browser, cache_dir=args.cache_dir)
    return 0


def register(sub, common, verbose_flag) -> None:
    p = sub.add_parser("studio", parents=[common],
                       help="a local web studio: add photos to classes, train, see the mistakes, try and export")
    p.add_argument("project_dir", nargs="?", default="edgetl-studio", metavar="PROJECT_DIR",
                   help="the project folder edgetl manages (created if missing; default ./edgetl-studio)")
    p.add_argument("--from", dest="source", default=None, metavar="DATA_DIR",
                   help="start the project from an existing DATA_DIR/<class>/<image> folder, read only: "
                        "nothing is copied into it or written to it")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; anything else is warned)")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--no-browser", action="store_true", help="print the URL, do not open a browser")
    p.set_defaults(func=cmd_studio)
