"""``edgetl train --strategy bias|last-K|full|scratch``: folder -> bundle.

The same bundle as the head path (model.onnx + int8, features.onnx + int8,
head.safetensors, train_step.onnx, labels, metrics, report, model card), so
the device runtime does not care how the model was trained: the fine-tuned
backbone is exported as ``features.onnx`` and its new classifier becomes the
softmax head. Work in progress lives in ``.RUN.state/`` beside the run
folder (decoded images, the frozen prefix's outputs, ``checkpoint.pt``) and
is removed once the bundle is published; ``--resume`` continues from it."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time

import numpy as np

from ..errors import DataError, RunExistsError, storage_error
from . import CANDIDATES, auto_candidates, parse_strategy

log = logging.getLogger(__name__)

DEFAULT_EPOCHS = 15
DEFAULT_PATIENCE = 3
DEFAULT_BATCH = 32


def state_dir_for(out_dir: str) -> str:
    parent, base = os.path.split(os.path.abspath(out_dir))
    return os.path.join(parent, f".{base}.state")


def fine_tune_size(default: int, native: int | None) -> int:
    """Input size when none is given: the smallest of the search ladder
    (default, halved, ... 32) that keeps the images' own resolution; a
    network whose weights learn adapts to the scale, and each halving is a
    quarter of the work."""
    from ..search import search_sizes

    ladder = sorted(search_sizes(default))
    if not native:
        return default
    return next((s for s in ladder if s >= native), default)


def choose(backbone: str, strategy: str, num_images: int, num_classes: int, input_spec, batch_size: int,
           max_memory_mb: float | None, val_split: float):
    """(strategy, plan) to run: ``auto`` resolved; the batch size lowered
    (halving, never below 1) until the plan fits ``max_memory_mb``. Refuses
    with one line naming the strategies that fit when the asked one cannot."""
    from .planner import estimate, fit_batch, profile_strategy

    num_val = max(1, int(round(num_images * val_split)))
    counts = {"num_train": num_images - num_val, "num_val": num_val, "num_images": num_images}
    kind, _ = parse_strategy(strategy)
    order = auto_candidates(num_images / max(1, num_classes)) if kind == "auto" else (strategy,)
    profiles = {}
    for s in order:
        try:
            profiles[s] = profile_strategy(backbone, s, num_classes, input_spec)
        except DataError:
            if kind != "auto":
                raise
            continue  # last-K on a family without stages
        if max_memory_mb is None:
            return s, estimate(profiles[s], batch_size, max_memory_mb=None, **counts)
        plan = fit_batch(profiles[s], batch_size, max_memory_mb, **counts)
        if plan is not None:
            if plan.batch_size < batch_size:
                log.info("--max-memory-mb %g: batch size lowered from %d to %d for %s", max_memory_mb,
                         batch_size, plan.batch_size, s)
            return s, plan
    fitting = []
    for s in CANDIDATES + ("scratch",):
        try:
            prof = profiles.get(s) or profile_strategy(backbone, s, num_classes, input_spec)
        except DataError:
            continue
        plan = fit_batch(prof, batch_size, max_memory_mb, **counts)
        if plan is not None:
            fitting.append(f"{s} (batch {plan.batch_size}, {plan.estimated_mb:.0f} MB)")
    need = estimate(profiles[list(profiles)[-1]], 1, **counts).estimated_mb
    what = "auto (" + ", ".join(order) + ")" if kind == "auto" else strategy
    raise DataError(
        f"--strategy {what} needs {need:.0f} MB even at batch size 1, over --max-memory-mb {max_memory_mb:g}; "
        + (f"strategies that fit: {', '.join(fitting)}" if fitting else
           "no strategy fits: raise --max-memory-mb or lower --image-size"))


def _decode_store(paths: list[str], input_spec, state_dir: str, progress, key: str):
    """Every image decoded and preprocessed once into a RowStore (reused when
    complete and made from the same images and InputSpec: ``key``).
    Returns (store, rows that decoded, skipped)."""
    from ..data.image import decode_image
    from .store import RowStore

    shape = (input_spec.num_channels, input_spec.image_size, input_spec.image_size)
    store = RowStore(os.path.join(state_dir, f"images-{key}.f32"), shape, len(paths))
    status_path = os.path.join(state_dir, f"images-{key}.status.json")
    if store.complete and os.path.isfile(status_path):
        with open(status_path, encoding="utf-8") as fh:
            status = json.load(fh)
        return store, np.asarray(status["ok"], np.int64), status["skipped"]
    ok, skipped = [], []
    writer = store.writer()
    row = np.zeros(shape, np.float32)
    try:
        bar = _bar(len(paths), "decoding", progress)
        for i, path in enumerate(paths):
            try:
                with open(path, "rb") as fh:
                    input_spec.to_array(decode_image(fh.read(), path, "native"), out=row)
                ok.append(i)
            except (DataError, OSError) as exc:
                skipped.append({"path": path, "reason": str(exc)})
                log.warning("skipped %s: %s", path, exc)
                row[:] = 0.0
            writer.write(row[None])
            bar.update(1)
        bar.close()
        writer.finish()
    except BaseException:
        writer.close()
        raise
    tmp = status_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"ok": ok, "skipped": skipped}, fh)
    os.replace(tmp, status_path)
    return store, np.asarray(ok, np.int64), skipped


def _bar(total: int, desc: str, progress):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not progress, leave=False)


def _data_fingerprint(paths: list[str]) -> list:
    out = []
    for p in paths:
        st = os.stat(p)
        out.append([p, st.st_size, st.st_mtime_ns])
    return out


def train_finetuned(data_dir: str, out_dir: str, settings: dict, *, progress=None) -> "object":
    """The fine-tuning path of ``edgetl.training.train`` (see its doc)."""
    import torch

    from ..data.folder import scan_folder, stratified_split
    from ..export.backbone_onnx import export_module, features_module
    from ..export.fuse import feature_model
    from ..heads.softmax import SoftmaxHead
    from ..report import classification_metrics
    from ..runtime.bundle import LABELS
    from ..search import native_side
    from ..training import (
        EXEMPLARS_PER_CLASS,
        TrainResult,
        _calibration_batches,
        _check_out_dir,
        _sweep_dead_runs,
        check_agreement,
        config_toml,
        exemplar_rows,
        finish_bundle,
        folder_is_grayscale,
        metrics_header,
        prediction_rows,
        write_device_files,
    )
    from ..zoo import get_spec, resolve_weights
    from .engine import cache_prefix, config_hash, finetune
    from .net import build_net
    from .planner import idle_mb, warm_up

    s = settings
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    backbone = s["backbone"]
    spec = get_spec(backbone)
    epochs = s.get("epochs") or DEFAULT_EPOCHS
    patience = s.get("patience") or DEFAULT_PATIENCE
    batch_size = int(s.get("batch_size") or DEFAULT_BATCH)
    if batch_size < 1:
        raise DataError(f"--batch-size must be at least 1, got {batch_size}")
    if epochs < 1:
        raise DataError(f"--epochs must be at least 1, got {epochs}")
    resume = bool(s.get("resume"))
    state_dir = state_dir_for(out_dir)
    ckpt_path = os.path.join(state_dir, "checkpoint.pt")
    if resume and not os.path.isfile(ckpt_path):
        raise DataError(f"--resume: no interrupted run of '{out_dir}' to continue (no {ckpt_path}); "
                        f"drop --resume to start one")
    if not resume and os.path.isfile(ckpt_path):
        if not s.get("overwrite"):
            raise RunExistsError(f"An interrupted run of '{out_dir}' is saved in {state_dir}; pass --resume to "
                                 f"continue it or --overwrite to start again")
        shutil.rmtree(state_dir, ignore_errors=True)
    _check_out_dir(out_dir, data_dir, s.get("overwrite") or resume)
    folder = scan_folder(data_dir)
    input_spec = spec.input_spec
    grayscale = s.get("grayscale")
    if grayscale is None:
        grayscale = folder_is_grayscale(folder.paths)
    if grayscale:
        from ..zoo.grayscale import gray_input_spec

        input_spec = gray_input_spec(input_spec)
    if s.get("crop_fraction") is not None:
        input_spec = input_spec.replace(crop_fraction=float(s["crop_fraction"]))
    size = s.get("image_size") or fine_tune_size(spec.input_spec.image_size, native_side(folder.paths))
    if size < 16:
        raise DataError(f"--image-size must be at least 16 pixels, got {size}")
    input_spec = input_spec.replace(image_size=int(size))
    num_classes = len(folder.classes)
    strategy, plan = choose(backbone, s["strategy"], len(folder.paths), num_classes, input_spec, batch_size,
                            s.get("max_memory_mb"), s["val_split"])
    if strategy == "head":  # auto chose the frozen base: the head path, with its search
        from ..training import train

        rest = {k: v for k, v in s.items()
                if k not in ("strategy", "batch_size", "max_memory_mb", "resume", "cache_dir")}
        rest.update(epochs=s.get("epochs"), patience=s.get("patience"))
        result = train(data_dir, out_dir, progress=progress, cache_dir=s.get("cache_dir"), **rest)
        result.metrics["strategy"] = {"name": "head", "asked": s["strategy"], "plan": plan.to_dict()}
        from ..training import _atomic_write_text

        _atomic_write_text(os.path.join(out_dir, "metrics.json"), json.dumps(result.metrics, indent=2) + "\n")
        return result
    batch_size = plan.batch_size
    os.makedirs(state_dir, exist_ok=True)
    _, weights_id = resolve_weights(backbone, s.get("weights") or "default")
    config = {
        "data": _data_fingerprint(folder.paths), "classes": folder.classes, "backbone": backbone,
        "weights": weights_id, "strategy": strategy, "input_spec": input_spec.to_json(), "batch_size": batch_size,
        "epochs": epochs, "patience": patience, "learning_rate": s["learning_rate"], "l2": s["l2"],
        "seed": s["seed"], "val_split": s["val_split"],
    }
    warm_up()
    idle = idle_mb()
    parent = os.path.dirname(os.path.abspath(out_dir))
    try:
        t = time.perf_counter()
        data_key = config_hash([config["data"], config["input_spec"]])
        store, ok, skipped = _decode_store(folder.paths, input_spec, state_dir, progress, data_key)
        timings["decode_s"] = time.perf_counter() - t
        used = folder.subset(ok)
        for idx, cls in enumerate(used.classes):
            n = int((used.targets == idx).sum())
            if n < 2:
                raise DataError(f"Class '{cls}' has {n} usable image{'s' if n != 1 else ''}; each class needs at "
                                f"least 2 (one to train, one to validate): add images to "
                                f"{os.path.join(data_dir, cls)}")
        y_all = np.zeros(len(folder.paths), np.int64)
        y_all[ok] = used.targets
        tr, va = stratified_split(used.targets, s["val_split"], s["seed"])
        train_rows, val_rows = ok[tr], ok[va]
        torch.manual_seed(s["seed"])
        net = build_net(backbone, s.get("weights") or "default", strategy, num_classes, input_spec)
        t, cpu = time.perf_counter(), time.process_time()
        log.info("%s: caching the frozen prefix, then training %d of %d parameters at %d px, batch %d "
                 "(planned peak %.0f MB above %.0f MB idle)", strategy, plan.trainable_params, plan.total_params,
                 input_spec.image_size, batch_size, plan.estimated_mb, idle)
        cached = cache_prefix(net, store, state_dir, key=config_hash([data_key, weights_id]))
        timings["cache_s"] = time.perf_counter() - t
        result = finetune(net, cached, y_all, train_rows, val_rows, epochs=epochs, batch_size=batch_size,
                          learning_rate=s["learning_rate"], patience=patience, seed=s["seed"], state_dir=state_dir,
                          config=config, resume=resume, weight_decay=s["l2"])
        timings["train_s"] = time.perf_counter() - t
        timings["train_cpu_s"] = time.process_time() - cpu
        from .engine import _evaluate

        val_acc, _, val_proba = _evaluate(net, cached, val_rows, y_all, batch_size)
        train_acc = _evaluate(net, cached, train_rows, y_all, batch_size)[0]
        val_pred = val_proba.argmax(1)
        y_val = y_all[val_rows]
        val_metrics = classification_metrics(y_val, val_pred, used.classes)

        # The fine-tuned backbone's features (for the bundle's features.onnx,
        # the head's exemplars and the int8 calibration).
        net.set_mode(False)
        model = net.model
        head_params = [p for p in model.parameters() if id(p) in net.head_ids]
        weight = next(p for p in head_params if p.dim() == 2).detach().numpy()
        bias = next(p for p in head_params if p.dim() == 1).detach().numpy()
        head = SoftmaxHead(l2=s["l2"])
        head.coef_, head.intercept_ = weight.astype(np.float32), bias.astype(np.float32)
        head.mean_ = np.zeros(weight.shape[1], np.float32)
        head.scale_ = np.ones(weight.shape[1], np.float32)
        keep = train_rows[exemplar_rows(y_all[train_rows], EXEMPLARS_PER_CLASS, s["seed"])]
        with torch.no_grad():
            feats = np.concatenate([model.forward_features(torch.from_numpy(store.read(keep[i:i + 64])))
                                    .numpy() for i in range(0, len(keep), 64)])

        _sweep_dead_runs(out_dir)
        tmp_dir = os.path.join(parent, f".{os.path.basename(os.path.abspath(out_dir))}.tmp-{os.getpid()}")
        shutil.rmtree(tmp_dir, ignore_errors=True)
        os.makedirs(tmp_dir)
    except OSError as exc:
        raise storage_error(exc, f"the training state '{state_dir}'", parent) from None
    try:
        t = time.perf_counter()
        with open(os.path.join(tmp_dir, LABELS), "w", encoding="utf-8") as fh:
            fh.write("".join(f"{c}\n" for c in used.classes))
        onnx_path = export_module(features_module(model), input_spec, os.path.join(state_dir, "backbone.onnx"),
                                  ["features"])
        features = feature_model(onnx_path, used.classes, input_spec, backbone)
        calib = _calibration_batches(used.paths, input_spec, s["seed"])
        write_device_files(tmp_dir, features, head, feats, y_all[keep], calib, s["seed"])
        timings["bundle_s"] = time.perf_counter() - t

        t = time.perf_counter()
        val_paths = [folder.paths[i] for i in val_rows]
        agreement = check_agreement(tmp_dir, val_paths, val_pred, y_val, s["seed"])
        timings["agreement_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - t0
        history = result.history
        metrics = {
            **metrics_header(backbone, weights_id, input_spec, used.classes, val_metrics, train_acc, agreement),
            "chosen": {"tap": "final", "image_size": input_spec.image_size, "head": "softmax",
                       "dim": int(weight.shape[1]), "val_accuracy": val_metrics["accuracy"]},
            "strategy": {
                "name": strategy, "asked": s["strategy"], "batch_size": batch_size,
                "trainable_params": plan.trainable_params, "total_params": plan.total_params,
                "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
                "resumed_after_epoch": result.resumed_from,
                "plan": plan.to_dict(), "idle_mb": round(idle, 1),
                "max_memory_mb": s.get("max_memory_mb"),
                "train_cpu_s": round(timings["train_cpu_s"], 2),
            },
            "counts": {
                "images_found": len(folder.paths), "images_used": len(used.paths), "train": int(len(train_rows)),
                "val": int(len(val_rows)), "skipped": len(folder.skipped) + len(skipped),
                "duplicates": len(folder.duplicates), "per_class": used.counts(),
            },
            "skipped": folder.skipped + skipped,
            "duplicates": folder.duplicates,
            "features": {"extracted": int(len(ok)), "from_cache": 0, "dim": int(weight.shape[1])},
            "head": {"type": "softmax", "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
                     "learning_rate": s["learning_rate"], "l2": s["l2"], "history": history,
                     "shipped": f"the {strategy} fine-tuned network at its best validation epoch"},
            "config": {"val_split": s["val_split"], "epochs": epochs, "seed": s["seed"],
                       "image_size": input_spec.image_size, "strategy": strategy, "batch_size": batch_size},
            "val_predictions": prediction_rows(val_paths, used.classes, y_val, val_pred, val_proba),
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
        }
        finish_bundle(tmp_dir, out_dir, metrics, config_toml(
            {k: v for k, v in s.items() if k not in ("cache_dir", "resume")}, data_dir, out_dir))
    except OSError as exc:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise storage_error(exc, f"the bundle '{out_dir}'", parent) from None
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    shutil.rmtree(state_dir, ignore_errors=True)  # published: the work in progress is no longer needed
    return TrainResult(out_dir, metrics, [folder.paths[i] for i in train_rows],
                       [folder.paths[i] for i in val_rows], y_val)
