"""Command line: one subcommand per public function. Handlers parse, call,
print. Errors a user can cause are one line on stderr, exit code 2; no
traceback unless --verbose."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from . import __version__
from .errors import EdgetlError

EXIT_USER_ERROR = 2
EXIT_INTERNAL = 1


def _json(obj) -> None:
    print(json.dumps(obj, indent=2))


def cmd_models(args) -> int:
    from .zoo import get_spec, list_backbones
    from .zoo.profile import profile_backbone
    from .zoo.weights import weights_status

    rows = []
    for name in list_backbones():
        spec = get_spec(name)
        row = profile_backbone(name).to_dict()
        row["weights"] = weights_status(spec)
        row["top1"] = spec.top1
        row["description"] = spec.description
        rows.append(row)
    if args.json:
        _json(rows)
        return 0
    print(f"{'name':<22} {'params':>8} {'MACs':>8} {'conv p/MAC':>11} {'FC p/MAC':>11} {'size':>5} {'top-1':>6}  weights")
    for r in rows:
        top1 = f"{r['top1']:.1f}" if r["top1"] else "-"
        weights = "on this machine" if r["weights"]["available"] else "missing: " + r["weights"]["how"].split("; ", 1)[-1]
        print(f"{r['name']:<22} {r['params'] / 1e6:7.2f}M {r['macs'] / 1e9:7.3f}G "
              f"{r['conv_param_share']:5.0%}/{r['conv_mac_share']:4.0%} {r['fc_param_share']:5.0%}/{r['fc_mac_share']:4.0%} "
              f"{r['input_size']:>5} {top1:>6}  {weights}")
    return 0


def cmd_imagenet(args) -> int:
    from .imagenet import classify_imagenet

    results = classify_imagenet(args.images, backbone=args.backbone, top=args.top, cache_dir=args.cache_dir)
    if args.json:
        _json(results)
        return 0
    for res in results:
        print(res["path"])
        for item in res["top"]:
            print(f"  {item['probability']:6.1%}  {item['label']} ({item['index']})")
    return 0


# Flag defaults of 'edgetl train'. The parser's defaults are None, so a flag
# given on the command line overrides the --config file, which overrides these.
TRAIN_DEFAULTS = {
    "data_dir": None, "out": None, "backbone": "efficientnet_lite0", "weights": None, "image_size": None,
    "image_sizes": None, "crop_fraction": None, "search": "on", "tap": None, "heads": None, "max_latency_ms": None,
    "max_macs": None, "max_model_mb": None, "val_split": 0.2, "epochs": None, "learning_rate": 1e-3, "l2": 1e-4,
    "patience": None, "seed": 0, "grayscale": None, "overwrite": False, "strategy": "head", "batch_size": None,
    "max_memory_mb": None, "resume": False,
}


def _read_config(path: str) -> dict:
    import tomllib

    from .errors import DataError

    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise DataError(f"Config file '{path}' does not exist; pass the path of a TOML file") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DataError(f"Config file '{path}' is not valid TOML ({exc}); fix it or pass the settings as flags") from None
    out = {}
    for key, value in raw.get("train", raw).items():
        name = key.replace("-", "_")
        if name not in TRAIN_DEFAULTS:
            raise DataError(f"Config file '{path}': unknown setting {key!r}; known: {', '.join(sorted(TRAIN_DEFAULTS))}")
        out[name] = value
    return out


def train_settings(args) -> dict:
    """Command line over --config file over defaults: the keyword arguments of training.train."""
    from .errors import DataError

    settings = dict(TRAIN_DEFAULTS)
    if args.config:
        settings.update(_read_config(args.config))
    for name in TRAIN_DEFAULTS:
        value = getattr(args, name, None)
        if value is not None:
            settings[name] = value
    if not settings["data_dir"] or not settings["out"]:
        raise DataError("'edgetl train' needs DATA_DIR and --out RUN_DIR (on the command line or in --config)")
    if isinstance(settings["heads"], str):
        settings["heads"] = tuple(h.strip() for h in settings["heads"].split(",") if h.strip())
    if isinstance(settings["search"], bool):
        settings["search"] = "on" if settings["search"] else "off"
    settings["weights"] = settings["weights"] or "default"
    return settings


def cmd_train(args) -> int:
    from .search import search_summary
    from .training import train

    settings = train_settings(args)
    result = train(settings.pop("data_dir"), settings.pop("out"), cache_dir=args.cache_dir, **settings)
    m = result.metrics
    c = m["counts"]
    st = m.get("strategy")
    if st and st.get("name") != "head":
        plan = st["plan"]
        resumed = f", resumed after epoch {st['resumed_after_epoch']}" if st.get("resumed_after_epoch") else ""
        print(f"strategy {st['name']}: {st['trainable_params']:,} of {st['total_params']:,} parameters trained at "
              f"{m['input_spec']['image_size']} px, batch {st['batch_size']}, {st['epochs_run']} epochs (best "
              f"{st['best_epoch']}){resumed}; planned peak {plan['estimated_mb']:.0f} MB above {st['idle_mb']:.0f} MB "
              f"idle")
    print(f"trained on {c['train']} images, validated on {c['val']} ({len(m['labels'])} classes); "
          f"{m['features']['extracted']} extracted, {m['features']['from_cache']} from cache")
    if c["skipped"]:
        print(f"skipped {c['skipped']} files (listed in metrics.json):")
        for item in m["skipped"][:10]:
            print(f"  {item['path']}: {item['reason']}")
    if result.searcher is not None:
        for line in search_summary(result.metrics, result.searcher):
            print(line)
    print(f"val accuracy {m['val_accuracy']:.1%}; exported models agree with the host on "
          f"{m['agreement_fp32']:.1%} (fp32) and {m['agreement_int8']:.1%} (int8) of {m['agreement_n']} val images")
    print(f"wrote {result.run_dir}: model.onnx {m['model_mb']['fp32']:.1f} MB, model.int8.onnx "
          f"{m['model_mb']['int8']:.1f} MB, labels.txt, metrics.json ({m['timings_s']['total_s']:.0f} s)")
    return 0


def cmd_evaluate(args) -> int:
    from .evaluation import evaluate
    from .report import format_report

    metrics = evaluate(args.run_dir, args.data_dir, int8=args.int8)
    if args.json:
        _json(metrics)
    else:
        print(f"{metrics['model']} on {args.data_dir}")
        print(format_report(metrics))
        if metrics["skipped"]:
            print(f"skipped {len(metrics['skipped'])} files")
    return 0


def cmd_predict(args) -> int:
    from .runtime import Predictor

    predictor = Predictor(args.run_dir, int8=args.int8)
    _print_predictions(args.images, predictor.iter_predict(args.images), args.json)
    return 0


def _print_predictions(paths, preds, as_json: bool) -> None:
    if as_json:
        _json([{"path": p, "label": r.label, "probability": r.probability} for p, r in zip(paths, preds)])
    else:
        for path, r in zip(paths, preds):
            print(f"{path}\t{r.label}\t{r.probability:.3f}")


def cmd_device(args) -> int:
    """The phone's side, on this machine: edgetl.runtime only (never torch)."""
    from .runtime.personalize import Personalizer

    if args.device_command == "add":
        p = Personalizer(args.run_dir, args.state_dir, int8=args.int8)
        new = args.label not in p.labels
        n = p.add_examples(args.images, args.label)
        p.save()
        what = "new class, usable now; 'edgetl device fit' refines it" if new else "known class"
        print(f"added {n} example{'s' if n != 1 else ''} of '{args.label}' ({what}); "
              f"{p.counts()[args.label]} stored for it, {len(p.labels)} classes in {args.state_dir}")
        return 0
    if args.device_command == "fit":
        p = Personalizer(None, args.state_dir)
        history = p.fit(epochs=args.epochs)
        p.save()
        print(f"trained the head for {args.epochs} epochs on {len(p.stored_labels)} stored examples of "
              f"{len(p.labels)} classes: loss {history[0]['loss']:.3f} -> {history[-1]['loss']:.3f}")
        return 0
    if args.device_command == "predict":
        p = Personalizer(None, args.state_dir)
        _print_predictions(args.images, p.predict(args.images), args.json)
        return 0
    args.device_parser.print_help(sys.stderr)
    return EXIT_USER_ERROR


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(out_dir=args.out, cache_dir=args.cache_dir)
    return 0


def cmd_weights(args) -> int:
    from .zoo.fetch import fetch_weights, import_weights, list_weights

    if args.weights_command == "fetch":
        path = fetch_weights(args.name, url=args.url)
        print(f"{args.name}: {path}")
        return 0
    if args.weights_command == "import":
        path = import_weights(args.name, args.file)
        print(f"{args.name}: {path}")
        return 0
    if args.weights_command == "list":
        rows = list_weights()
        if args.json:
            _json(rows)
            return 0
        print(f"{'name':<22} {'source':<9} weights")
        for r in rows:
            where = r["path"] if r["available"] else "missing: " + r["how"].split("; ", 1)[-1]
            print(f"{r['name']:<22} {r['source']:<9} {where}")
        return 0
    args.weights_parser.print_help(sys.stderr)
    return EXIT_USER_ERROR


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgetl", description="Transfer learning for mobile and edge ML: labeled photos in, on-device bundle out."
    )
    parser.add_argument("--version", action="version", version=f"edgetl {__version__}")
    verbose_flag = argparse.ArgumentParser(add_help=False)
    verbose_flag.add_argument("--verbose", "-v", action="store_true", help="debug logging and tracebacks on errors")
    common = argparse.ArgumentParser(add_help=False, parents=[verbose_flag])
    common.add_argument("--cache-dir", default=None, help="feature/model cache (default $EDGETL_CACHE_DIR or ~/.cache/edgetl)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", parents=[common], help="train on scikit-learn's handwritten digits, end to end")
    p.add_argument("--out", default="edgetl-demo-run", help="bundle folder (default ./edgetl-demo-run)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("models", parents=[common], help="list the backbones: parameters, MACs, shares, weights")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("imagenet", parents=[common], help="classify photos with the pretrained 1000-class ImageNet head")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_imagenet)

    p = sub.add_parser("train", parents=[common], help="transfer-learn a classifier from DATA_DIR/<class>/<image>")
    p.add_argument("data_dir", metavar="DATA_DIR", nargs="?", default=None)
    p.add_argument("--out", metavar="RUN_DIR", default=None, help="the bundle folder (required)")
    p.add_argument("--config", default=None, metavar="TOML",
                   help="settings from a TOML file (keys as the flags: image_size or image-size, ...; optionally under "
                        "[train]); flags given here win. Each run saves its resolved config.toml")
    p.add_argument("--backbone", default=None, help="default efficientnet_lite0; see 'edgetl models'")
    p.add_argument("--weights", default=None, metavar="PATH", help="backbone weights (.pth/.safetensors); default: packaged ImageNet")
    p.add_argument("--image-size", type=int, default=None,
                   help="pin the input size in pixels (default: searched, the backbone's default size and halvings)")
    p.add_argument("--search", choices=("on", "off"), default=None,
                   help="on (default): choose tap, input size and head by validation accuracy within the budget; "
                        "off: softmax head on the final layer at the default size (the naive recipe)")
    p.add_argument("--tap", default=None, help="pin the tap point (e.g. block7, final); see metrics.json for the list")
    p.add_argument("--heads", default=None, metavar="LIST", help="heads to try, comma-separated: softmax,ncm,mlp")
    p.add_argument("--max-latency-ms", type=float, default=None, help="budget: batch-1 latency measured here (ONNX Runtime, 1 thread)")
    p.add_argument("--max-macs", default=None, help="budget: multiply-accumulates per image, e.g. 40M or 0.5G")
    p.add_argument("--max-model-mb", type=float, default=None, help="budget: fp32 model size in MB")
    p.add_argument("--val-split", type=float, default=None, help="default 0.2")
    p.add_argument("--epochs", type=int, default=None,
                   help="maximum epochs (default 100 for head, 15 otherwise); early stopping on the validation split")
    p.add_argument("--strategy", default=None, metavar="NAME",
                   help="what learns: head (default; frozen base, cached features), bias, last-K (e.g. last-2), full, "
                        "scratch, auto; see 'edgetl plan'")
    p.add_argument("--batch-size", type=int, default=None, help="fine-tuning batch size (default 32)")
    p.add_argument("--max-memory-mb", type=float, default=None,
                   help="peak training memory budget in MB (above Python + torch's own footprint): the batch size is "
                        "lowered to fit, or the run refused before it starts")
    p.add_argument("--resume", action="store_true", default=None,
                   help="continue a fine-tuning run of RUN_DIR that was interrupted (same settings)")
    p.add_argument("--seed", type=int, default=None, help="default 0")
    p.add_argument("--overwrite", action="store_true", default=None,
                   help="replace RUN_DIR if it exists (only once the new run is complete)")
    p.set_defaults(func=cmd_train)

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

    p = sub.add_parser("device", help="learn on the device: add examples and classes, fit, predict (no torch)")
    p.set_defaults(func=cmd_device, device_command=None, device_parser=p, verbose=False)
    dsub = p.add_subparsers(dest="device_command", metavar="ACTION")
    d = dsub.add_parser("add", parents=[verbose_flag], help="embed images as examples of a label (a new label is a new class)")
    d.add_argument("run_dir", metavar="RUN_DIR")
    d.add_argument("state_dir", metavar="STATE_DIR", help="where the device keeps what it learned (created if missing)")
    d.add_argument("--label", required=True, metavar="NAME")
    d.add_argument("images", nargs="+", metavar="IMAGE")
    d.add_argument("--int8", action="store_true", help="embed with features.int8.onnx (when starting a state)")
    d = dsub.add_parser("fit", parents=[verbose_flag], help="train the head on all stored examples (train_step.onnx)")
    d.add_argument("state_dir", metavar="STATE_DIR")
    d.add_argument("--epochs", type=int, default=20)
    d = dsub.add_parser("predict", parents=[verbose_flag], help="label images with the personalized model")
    d.add_argument("state_dir", metavar="STATE_DIR")
    d.add_argument("images", nargs="+", metavar="IMAGE")
    d.add_argument("--json", action="store_true")

    p = sub.add_parser("weights", help="fetch, import or list pretrained backbone weights ($EDGETL_WEIGHTS_DIR)")
    p.set_defaults(func=cmd_weights, weights_command=None, weights_parser=p, verbose=False)
    wsub = p.add_subparsers(dest="weights_command", metavar="ACTION")
    w = wsub.add_parser("fetch", parents=[verbose_flag], help="download a backbone's published checkpoint (sha256-checked)")
    w.add_argument("name", metavar="NAME")
    w.add_argument("--url", default=None, help="download from this address instead (a mirror); same checks")
    w = wsub.add_parser("import", parents=[verbose_flag], help="use a checkpoint file you have as a backbone's default weights")
    w.add_argument("name", metavar="NAME")
    w.add_argument("file", metavar="FILE", help=".pth state dict or .safetensors file")
    w = wsub.add_parser("list", parents=[verbose_flag], help="which backbones have their weights on this machine")
    w.add_argument("--json", action="store_true")

    from .commands_ext import add_commands

    add_commands(sub, common, verbose_flag)
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


if __name__ == "__main__":
    sys.exit(main())
