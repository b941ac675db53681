"""After training: ``edgetl export`` (other formats, written beside the
bundle; the choices come from the format registry) and ``edgetl report``."""

from __future__ import annotations

import json
import os


def cmd_export(args) -> int:
    from ..export import export_model

    from ..errors import DataError

    if args.fp32 and args.format != "web":
        raise DataError("--fp32 applies to --format web only (the other formats write fp32, and int8 with --int8)")
    options = {"fp32": True} if args.fp32 else {}
    record = export_model(args.run_dir, args.format, int8=args.int8, images=args.images, **options)
    from ..report import write_model_card

    write_model_card(args.run_dir)  # the model card names the files the export added (model.int8.ort, ...)
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    if args.format == "web":
        folder = os.path.join(args.run_dir, record["folder"])
        print(f"web: wrote {folder} ({record['precision']}: {record['page_mb']:.1f} MB to download, plus "
              f"{record['wasm_mb']:.1f} MB of onnxruntime-web wasm); works offline after the first visit")
        print(f"serve it: {record['serve']}  then open http://127.0.0.1:8000/")
        return 0
    files = [record.get("file"), record.get("file_int8")]
    print(f"{args.format}: wrote {', '.join(f for f in files if f)} in {args.run_dir}")
    if args.format == "tflite":
        line = f"LiteRT vs ONNX Runtime on {record['num_check_images']} images: fp32 agree {record['agreement']:.1%}"
        if "agreement_int8" in record:
            line += (f", int8 agree {record['agreement_int8']:.1%} with model.int8.onnx "
                     f"({record['agreement_int8_vs_fp32']:.1%} with model.onnx)")
        print(line)
    elif args.format == "ort":
        print(f"ORT format checked against ONNX Runtime; operators each file needs: "
              f"{os.path.join(args.run_dir, 'ort_operators.json')}")
    elif args.format == "coreml":
        print(f"spec checked: image input {record['spec']['inputs'][0].get('width')}x"
              f"{record['spec']['inputs'][0].get('height')}, labels ok: {record['labels_ok']}; "
              f"prediction needs macOS/iOS")
    return 0


def cmd_report(args) -> int:
    from ..report import write_model_card, write_report

    html = write_report(args.run_dir)
    card = write_model_card(args.run_dir)
    print(f"wrote {html} and {card}")
    return 0


def register(sub, common, verbose_flag) -> None:
    from ..export import FORMATS

    p = sub.add_parser("export", parents=[common],
                       help="convert a bundle to TFLite, Core ML, ORT or a web app (written beside it), checked on this machine")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--format", required=True, choices=list(FORMATS))
    p.add_argument("--int8", action="store_true", help="also export the int8 model")
    p.add_argument("--fp32", action="store_true", help="web: ship the fp32 feature model (default: int8, 3-4x smaller)")
    p.add_argument("--images", nargs="+", metavar="PATH",
                   help="images or folders to check the TFLite export on (default: the run's validation images)")
    p.add_argument("--json", action="store_true", help="print the record added to metrics.json 'exports'")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("report", parents=[common],
                       help="write RUN_DIR/report.html (plots, confusion matrix, worst images) and RUN_DIR/README.md")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.set_defaults(func=cmd_report)
