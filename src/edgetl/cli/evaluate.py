"""Using a bundle: ``edgetl evaluate`` (accuracy on a labeled folder) and ``edgetl predict``."""

from __future__ import annotations

from ._print import print_json, print_predictions


def cmd_evaluate(args) -> int:
    from ..evaluation import evaluate
    from ..report import format_report

    metrics = evaluate(args.run_dir, args.data_dir, int8=args.int8)
    if args.json:
        print_json(metrics)
    else:
        print(f"{metrics['model']} on {args.data_dir}")
        print(format_report(metrics))
        if metrics["skipped"]:
            print(f"skipped {len(metrics['skipped'])} files")
    return 0


def cmd_predict(args) -> int:
    from ..runtime import Predictor

    predictor = Predictor(args.run_dir, int8=args.int8)
    print_predictions(args.images, predictor.iter_predict(args.images), args.json)
    return 0


def register(sub, common, verbose_flag) -> None:
    p = sub.add_parser("evaluate", parents=[common], help="accuracy of a bundle on a labeled folder")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("data_dir", metavar="DATA_DIR")
    p.add_argument("--int8", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", parents=[common], help="label images with a bundle (device runtime)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--int8", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)
