"""``edgetl train`` and ``edgetl plan``. The train flags are derived from
``TrainConfig``'s fields (name, type, choices, help), so a new setting
needs no edit here."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields

from ..training.config import TrainConfig, flag_name, read_toml


def train_config(args) -> TrainConfig:
    """Flags given on the command line over the --config file over the defaults."""
    settings = read_toml(args.config) if args.config else {}
    for f in fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            settings[f.name] = value
    config = TrainConfig.from_mapping(settings)
    config.require_paths()
    return config


def cmd_train(args) -> int:
    from ..search import search_summary
    from ..training import train

    result = train(train_config(args), cache_dir=args.cache_dir)
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


def cmd_plan(args) -> int:
    from ..training.planning import plan_strategies

    strategies = tuple(s.strip() for s in args.strategies.split(",")) if args.strategies else None
    report = plan_strategies(args.data_dir, args.backbone, args.image_size, args.batch_size, strategies,
                             args.max_memory_mb)
    size, idle = report["image_size"], report["idle_mb"]
    if args.json:
        print(json.dumps([dict(p, image_size=size, idle_mb=idle) for p in report["plans"]], indent=2))
        return 0
    print(f"{args.backbone} at {size} px, batch {args.batch_size}, {report['num_images']} images in "
          f"{report['num_classes']} classes; peak training memory above the idle footprint "
          f"(Python + torch: {idle:.0f} MB here)")
    print(f"{'strategy':<9} {'estimate MB':>11} {'trains':>12} {'MACs/epoch':>11} {'cache on disk':>13}"
          + ("  fits" if args.max_memory_mb is not None else ""))
    for p in report["plans"]:
        fits = ("  yes" if p["fits"] else "  no") if args.max_memory_mb is not None else ""
        print(f"{p['strategy']:<9} {p['estimated_mb']:>11.0f} {p['trainable_params']:>12,} "
              f"{p['macs_per_epoch'] / 1e9:>10.1f}G {p['cache_disk_mb']:>10.1f} MB{fits}")
    return 0


_PARSE = {int: int, float: float, str: str, tuple: str}


def add_train_flags(p, only: tuple[str, ...] | None = None, helps: dict | None = None,
                    metavars: dict | None = None) -> None:
    """One flag per TrainConfig field (``only``: these fields; ``helps``,
    ``metavars``: others than the field's); every default is None ("not
    given"), so the --config file and then TrainConfig's own default apply."""
    for f in fields(TrainConfig):
        meta = dict(f.metadata, help=(helps or {}).get(f.name, f.metadata["help"]),
                    metavar=(metavars or {}).get(f.name, f.metadata["metavar"]))
        if meta["flag"] == "" or (only is not None and f.name not in only):  # "": Python and config files only
            continue
        if f.name == "data_dir":
            p.add_argument("data_dir", metavar="DATA_DIR", nargs="?", default=None)
            continue
        kwargs = {"default": None, "help": meta["help"]}
        if meta["type"] is bool:  # tri-state (--grayscale / --no-grayscale) when unset means "decide"
            kwargs["action"] = argparse.BooleanOptionalAction if f.default is None else "store_true"
        else:
            kwargs.update(type=_PARSE[meta["type"]], metavar=meta["metavar"], choices=meta["choices"])
        p.add_argument(flag_name(f), **kwargs)


def register(sub, common, verbose_flag) -> None:
    p = sub.add_parser("train", parents=[common], help="transfer-learn a classifier from DATA_DIR/<class>/<image>")
    p.add_argument("--config", default=None, metavar="TOML",
                   help="settings from a TOML file (keys as the flags: image_size or image-size, ...; optionally under "
                        "[train]); flags given here win. Each run saves its resolved config.toml")
    add_train_flags(p)
    p.set_defaults(func=cmd_train)

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
