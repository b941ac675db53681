"""Subcommands that live outside cli.py: ``edgetl export`` and ``edgetl report``.

``add_commands(sub, common, verbose_flag)`` registers them on the main
parser's subparsers; each sets ``func`` to a handler taking ``args`` and
returning an exit code, like the handlers in cli.py (errors a user can
cause are raised as ``EdgetlError`` subclasses; cli.py prints them)."""

from __future__ import annotations

import json


def cmd_export(args) -> int:
    from .export.convert import export_model

    record = export_model(args.run_dir, args.format, int8=args.int8, images=args.images)
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    files = [record.get("file"), record.get("file_int8")]
    print(f"{args.format}: wrote {', '.join(f for f in files if f)} in {args.run_dir}")
    if args.format == "tflite":
        line = f"LiteRT vs ONNX Runtime on {record['num_check_images']} images: fp32 agree {record['agreement']:.1%}"
        if "agreement_int8" in record:
            line += (f", int8 agree {record['agreement_int8']:.1%} with model.int8.onnx "
                     f"({record['agreement_int8_vs_fp32']:.1%} with model.onnx)")
        print(line)
    elif args.format == "coreml":
        print(f"spec checked: image input {record['spec']['inputs'][0].get('width')}x"
              f"{record['spec']['inputs'][0].get('height')}, labels ok: {record['labels_ok']}; "
              f"prediction needs macOS/iOS")
    return 0


def cmd_report(args) -> int:
    from .report import write_model_card, write_report

    html = write_report(args.run_dir)
    card = write_model_card(args.run_dir)
    print(f"wrote {html} and {card}")
    return 0


def cmd_plan(args) -> int:
    from .data.folder import scan_folder
    from .errors import DataError
    from .finetune import CANDIDATES
    from .finetune.planner import idle_mb, plan, warm_up
    from .finetune.run import fine_tune_size
    from .search import native_side
    from .training import folder_is_grayscale
    from .zoo import get_spec

    spec = get_spec(args.backbone)
    folder = scan_folder(args.data_dir)
    input_spec = spec.input_spec
    if folder_is_grayscale(folder.paths):
        from .zoo.grayscale import gray_input_spec

        input_spec = gray_input_spec(input_spec)
    size = args.image_size or fine_tune_size(spec.input_spec.image_size, native_side(folder.paths))
    if size < 16 or args.batch_size < 1:
        raise DataError("--image-size must be at least 16 and --batch-size at least 1")
    input_spec = input_spec.replace(image_size=size)
    strategies = tuple(s.strip() for s in args.strategies.split(",")) if args.strategies else \
        CANDIDATES + ("scratch",)
    warm_up()
    idle = idle_mb()
    plans = plan(args.backbone, len(folder.paths), len(folder.classes), input_spec, args.batch_size,
                 strategies=strategies, max_memory_mb=args.max_memory_mb)
    if args.json:
        print(json.dumps([dict(p.to_dict(), image_size=size, idle_mb=round(idle, 1)) for p in plans], indent=2))
        return 0
    print(f"{args.backbone} at {size} px, batch {args.batch_size}, {len(folder.paths)} images in "
          f"{len(folder.classes)} classes; peak training memory above the idle footprint "
          f"(Python + torch: {idle:.0f} MB here)")
    print(f"{'strategy':<9} {'estimate MB':>11} {'trains':>12} {'MACs/epoch':>11} {'cache on disk':>13}"
          + ("  fits" if args.max_memory_mb is not None else ""))
    for p in plans:
        fits = ("  yes" if p.fits else "  no") if args.max_memory_mb is not None else ""
        print(f"{p.strategy:<9} {p.estimated_mb:>11.0f} {p.trainable_params:>12,} {p.macs_per_epoch / 1e9:>10.1f}G "
              f"{p.cache_disk_mb:>10.1f} MB{fits}")
    return 0


def add_commands(sub, common, verbose_flag) -> None:
    p = sub.add_parser("export", parents=[common],
                       help="convert a bundle to TFLite or Core ML (written beside it), checked on this machine")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--format", required=True, choices=["onnx", "tflite", "coreml"])
    p.add_argument("--int8", action="store_true", help="also export the int8 model")
    p.add_argument("--images", nargs="+", metavar="PATH",
                   help="images or folders to check the TFLite export on (default: the run's validation images)")
    p.add_argument("--json", action="store_true", help="print the record added to metrics.json 'exports'")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("plan", parents=[common],
                       help="predict each training strategy's peak memory and compute before training")
    p.add_argument("data_dir", metavar="DATA_DIR")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--image-size", type=int, default=None,
                   help="default: what 'edgetl train --strategy' would use for these images")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-memory-mb", type=float, default=None, help="say which strategies fit in this budget")
    p.add_argument("--strategies", default=None, metavar="LIST", help="comma-separated (default: all)")
    p.add_argument("--json", action="store_true",
                   help="a list of {strategy, estimated_mb, fits, parts_mb, macs_per_epoch, ...}")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("report", parents=[common],
                       help="write RUN_DIR/report.html (plots, confusion matrix, worst images) and RUN_DIR/README.md")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.set_defaults(func=cmd_report)
