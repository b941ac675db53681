"""``edgetl demo``."""

from __future__ import annotations


def cmd_demo(args) -> int:
    from ..demo import run_demo

    run_demo(out_dir=args.out, cache_dir=args.cache_dir)
    return 0


def register(sub, common, verbose_flag) -> None:
    p = sub.add_parser("demo", parents=[common], help="train on scikit-learn's handwritten digits, end to end")
    p.add_argument("--out", default="edgetl-demo-run", help="bundle folder (default ./edgetl-demo-run)")
    p.set_defaults(func=cmd_demo)
