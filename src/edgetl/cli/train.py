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
    from ..data.folder import scan_folder
    from ..finetune import CANDIDATES
    from ..finetune.planner import idle_mb, plan, warm_up
    from ..training.inputs import fine_tune_input_spec
    from ..zoo import get_spec

    # Bounded as 'edgetl train' bounds them (TrainConfig's checks: 16 to 1024 px, batch >= 1, budget > 0).
    TrainConfig(data_dir=args.data_dir, backbone=args.backbone, image_size=args.image_size,
                batch_size=args.batch_size, max_memory_mb=args.max_memory_mb)
    folder = scan_folder(args.data_dir)
    input_spec = fine_tune_input_spec(get_spec(args.backbone), folder.paths, args.image_size)
    size = input_spec.image_size
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


_PARSE = {int: int, float: float, str: str, tuple: str}


def add_train_flags(p) -> None:
    """One flag per TrainConfig field; every default is None ("not given"),
    so the --config file and then TrainConfig's own default apply."""
    for f in fields(TrainConfig):
        meta = f.metadata
        if meta["flag"] == "":  # Python and config files only
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
