"""``edgetl extract DATA_DIR --out FEATURES [--engine ray] [--feature-dtype
float16]``: the features a ``train`` with the same settings uses, into the
cache and as Parquet (FEATURES: a local folder or a pyarrow.fs URI such as
``s3://bucket/prefix``). The flags are ``edgetl train``'s that decide which
features, and ``--feature-dtype``, which only decides how they are stored."""

from __future__ import annotations

from ..training.features_export import FEATURE_DTYPES
from .train import add_train_flags, train_config

# The settings that decide which features a run needs (sizes, taps, the budget that filters them, the engine).
EXTRACT_FIELDS = ("data_dir", "out", "backbone", "weights", "image_size", "image_sizes", "crop_fraction", "search",
                  "tap", "heads", "max_latency_ms", "max_macs", "max_model_mb", "grayscale", "overwrite", "engine",
                  "ray_address")


def cmd_extract(args) -> int:
    from ..training.features_export import extract_features

    manifest = extract_features(train_config(args), feature_dtype=args.feature_dtype, cache_dir=args.cache_dir)
    print(f"{manifest['num_images']} images in {len(manifest['classes'])} classes; {manifest['extracted']} "
          f"extracted, {manifest['from_cache']} from cache ({manifest['engine']} engine)")
    for item in manifest["skipped"][:10]:
        print(f"  skipped {item['path']}: {item['reason']}")
    print(f"wrote {args.out}: " + ", ".join(f["file"] for f in manifest["files"]) + ", manifest.json")
    return 0


def register(sub, common, verbose_flag) -> None:
    p = sub.add_parser("extract", parents=[common],
                       help="extract the features 'edgetl train' would use (into the cache and as Parquet)")
    p.add_argument("--config", default=None, metavar="TOML", help="settings from a TOML file, as 'edgetl train'")
    add_train_flags(p, only=EXTRACT_FIELDS, helps={
        "out": "where the Parquet files go (required): a folder, or a pyarrow.fs URI (s3://bucket/prefix, "
               "file:///abs/path, ...); features-<size>px.parquet, then manifest.json (complete iff present)",
        "overwrite": "replace FEATURES if an earlier 'edgetl extract' wrote it"}, metavars={"out": "FEATURES"})
    p.add_argument("--feature-dtype", choices=FEATURE_DTYPES, default="float32",
                   help="how the features are stored: float32 (default, as extracted) or float16 (half the size)")
    p.set_defaults(func=cmd_extract)
