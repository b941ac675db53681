"""Folder of labeled images -> on-device bundle: ``train(config)``.

One dispatcher, two paths. The settings (``config.TrainConfig``) are
checked first, then the run folder (``rundir``: writable, claimed for the
whole run, replaced only if it is an edgetl run), then the folder is
scanned once; ``--strategy auto`` is resolved here, before dispatch, so
each path runs once: ``head_path`` (frozen base, cached features, the
layer/size/head search) or ``finetune_path`` (bias, last-K, full,
scratch). Both end in the same bundle tail (``bundle``)."""

from __future__ import annotations

import os
import shutil

from ..errors import DataError, RunExistsError
from .config import FINETUNE_DEFAULTS, TrainConfig
from .result import TrainResult

__all__ = ["TrainConfig", "TrainResult", "train"]


def train(config: TrainConfig | str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None, *,
          cache_dir: str | None = None, progress: bool | None = None, **settings) -> TrainResult:
    """Transfer-learn a classifier for the images in ``config.data_dir`` and
    write the bundle to ``config.out``; returns the metrics (also in
    metrics.json) and what was fitted.

    ``train(TrainConfig(...))``, or ``train(data_dir, out_dir, **settings)``
    with the fields of :class:`TrainConfig` as keywords (its help says what
    each does). By default the layer (tap), input size and head are searched
    under the device budget ``max_latency_ms`` / ``max_macs`` /
    ``max_model_mb``; ``tap``, ``image_size`` (or ``image_sizes``) and
    ``heads`` pin parts of it; ``search="off"`` is the naive recipe.
    ``strategy``: ``head`` (default) or ``bias``, ``last-K``, ``full``,
    ``scratch``, ``auto`` (``edgetl.finetune``), under ``max_memory_mb``;
    ``resume`` continues a killed fine-tuning run.

    The resolved settings are saved as ``config.toml`` in the run folder;
    ``edgetl train --config RUN_DIR/config.toml`` repeats the run."""
    from ..data.folder import scan_folder
    from ..finetune import parse_strategy

    config = _as_config(config, out_dir, settings)
    kind, _ = parse_strategy(config.strategy)
    from ..features.parquet import is_features_location

    if is_features_location(config.data_dir):
        return _train_from_features(config, kind, cache_dir, progress)
    if kind == "head" and config.resume:
        raise DataError("--resume continues a fine-tuning run (--strategy bias, last-K, full, scratch); the head "
                        "strategy caches its features and restarts quickly without it")
    _check_engine(config, kind)
    from .rundir import check_out_path, check_out_writable, claim_run

    check_out_path(config.out, config.data_dir)  # before --out's parent is created: never inside the data folder
    check_out_writable(config.out)
    with claim_run(config.out):  # held until the run is published or given up
        if kind == "head":
            from .rundir import check_out_dir

            check_out_dir(config.out, config.data_dir, config.overwrite)
        else:
            _check_state(config)
        _sweep_cache(cache_dir)
        folder = scan_folder(config.data_dir)
        if kind == "head":
            from .head_path import train_head

            return train_head(config, folder, cache_dir=cache_dir, progress=progress)
        return _fine_tune(config, folder, cache_dir, progress)


def _train_from_features(config: TrainConfig, kind: str, cache_dir, progress) -> TrainResult:
    """DATA_DIR is what 'edgetl extract' wrote: the head streamed from its Parquet features."""
    from .parquet_path import train_from_features
    from .rundir import check_out_dir, check_out_writable, claim_run

    if kind not in ("head", "auto"):
        raise DataError(f"'{config.data_dir}' holds features ('edgetl extract' wrote it), and --strategy "
                        f"{config.strategy} fine-tunes on images: pass the image folder, or leave out --strategy")
    if config.engine == "ray" or config.resume:
        raise DataError(f"'{config.data_dir}' holds features already extracted: leave out "
                        f"{'--engine ray' if config.engine == 'ray' else '--resume'}")
    check_out_writable(config.out)
    with claim_run(config.out):
        check_out_dir(config.out, config.data_dir, config.overwrite)
        _sweep_cache(cache_dir)
        return train_from_features(config, cache_dir=cache_dir, progress=progress)


def _check_engine(config: TrainConfig, kind: str) -> None:
    """--engine ray: the extra installed and a path that extracts features, refused before any work."""
    if config.engine != "ray":
        if config.ray_address:
            raise DataError("--ray-address names the Ray cluster of --engine ray; add --engine ray or leave it out")
        return
    if kind not in ("head", "auto"):
        raise DataError(f"--engine ray extracts the frozen base's features (--strategy head); --strategy "
                        f"{config.strategy} fine-tunes in this process: leave out --engine ray")
    from ..features.ray_engine import import_ray

    import_ray()


def _sweep_cache(cache_dir: str | None) -> None:
    """Temporaries that killed processes left in the cache: exported graphs,
    fetched weights, the JSON caches at its top (only theirs: $EDGETL_CACHE_DIR
    may be a folder holding other files); feature shards sweep themselves when
    their folder is opened."""
    from .._files import cache_path, sweep_temporaries
    from ..zoo.weights import weights_cache_dir

    sweep_temporaries(cache_path(cache_dir), (".json",))
    sweep_temporaries(cache_path(cache_dir, "models"))
    sweep_temporaries(weights_cache_dir(), (".pth", ".safetensors"))


def _as_config(config, out_dir, settings: dict) -> TrainConfig:
    if isinstance(config, TrainConfig):
        if out_dir is not None or settings:
            config = config.replace(**settings, **({"out": os.fspath(out_dir)} if out_dir is not None else {}))
    else:
        config = TrainConfig.from_mapping(dict(settings, data_dir=config, out=out_dir), "edgetl.train")
    config.require_paths()
    return config.replace(data_dir=os.fspath(config.data_dir), out=os.fspath(config.out))


def _check_state(config: TrainConfig) -> None:
    """An interrupted fine-tuning run of the same --out: continued only with
    --resume, thrown away only with --overwrite."""
    from .rundir import check_out_dir, state_dir_for

    state_dir = state_dir_for(config.out)
    ckpt_path = os.path.join(state_dir, "checkpoint.pt")
    if config.resume and not os.path.isfile(ckpt_path):
        raise DataError(f"--resume: no interrupted run of '{config.out}' to continue (no {ckpt_path}); "
                        f"drop --resume to start one")
    if not config.resume and os.path.isfile(ckpt_path):
        if not config.overwrite:
            raise RunExistsError(f"An interrupted run of '{config.out}' is saved in {state_dir}; pass --resume to "
                                 f"continue it or --overwrite to start again")
        shutil.rmtree(state_dir, ignore_errors=True)
    check_out_dir(config.out, config.data_dir, config.overwrite or config.resume)


def _fine_tune(config: TrainConfig, folder, cache_dir, progress) -> TrainResult:
    """Resolve the strategy (``auto``) and the batch size under the memory
    budget, then run the path it names."""
    from ..finetune.planner import choose
    from ..zoo import get_spec
    from .inputs import fine_tune_input_spec

    input_spec = fine_tune_input_spec(get_spec(config.backbone), folder.paths, config.image_size, config.grayscale,
                                      config.crop_fraction)
    batch_size = config.batch_size or FINETUNE_DEFAULTS["batch_size"]
    strategy, plan = choose(config.backbone, config.strategy, len(folder.paths), len(folder.classes), input_spec,
                            batch_size, config.max_memory_mb, config.val_split)
    if strategy == "head":  # auto chose the frozen base: the head path, with its search and its defaults
        from .head_path import train_head

        record = {"name": "head", "asked": config.strategy, "plan": plan.to_dict()}
        return train_head(config, folder, cache_dir=cache_dir, progress=progress, strategy_record=record)
    from .finetune_path import train_finetuned

    return train_finetuned(config.with_defaults(FINETUNE_DEFAULTS), folder, strategy, plan, input_spec,
                           cache_dir=cache_dir, progress=progress)
