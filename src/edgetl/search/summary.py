"""The console lines a run prints about its search: the candidate table,
the choice and the baselines on the same holdout split."""

from __future__ import annotations


def search_summary(metrics: dict, searcher=None, limit: int = 12) -> list[str]:
    """Console lines: the candidate table (best first), the choice, the
    baselines on the same holdout split, and a plain sentence when transfer
    does not beat the raw-pixel baseline."""
    s, ch, b = metrics["search"], metrics["chosen"], metrics["baselines"]
    lines = []
    n_scored = sum(c["val_accuracy"] is not None for c in s["candidates"])
    if s["enabled"] and searcher is not None:
        lines.append(f"search: {n_scored} of {len(s['candidates'])} candidates scored by "
                     f"{s['protocol']['description']} (ties within {s['protocol']['tie_tolerance']:.1%} go to the "
                     f"cheaper); the best {min(limit, n_scored)}:")
        lines.append(searcher.table(limit=limit))
        if s.get("plot"):
            lines.append(f"  (every candidate is in metrics.json; accuracy vs MACs: {s['plot']} in the run folder)")
    lat = f", {ch['latency_ms']:.2f} ms" if ch["latency_ms"] is not None else ""
    lines.append(f"chosen: {ch['head']} head on {ch['tap']} at {ch['image_size']} px: {ch['macs'] / 1e6:.1f}M MACs"
                 f"{lat}, {ch['model_mb']:.2f} MB fp32")
    fl, raw = b.get("final_layer"), b["raw_pixels"]  # (no naive head from Parquet features: training.parquet_path)
    rows = [(f"chosen ({ch['tap']}, {ch['image_size']} px, {ch['head']})", ch["val_accuracy"], ch["macs"]),
            *([(f"naive (final layer, {fl['image_size']} px, softmax)", fl["val_accuracy"], fl["macs"])] if fl else []),
            (f"raw pixels ({raw['image_size']} px, ridge classifier)", raw["val_accuracy"], None)]
    width = max(len(r[0]) for r in rows)
    same = "the same split for all three" if len(rows) == 3 else "the same split for both"
    if raw.get("sampled"):  # above sample_images: training.sampling
        same = (f"the same split; the raw-pixel baseline on a stratified sample of {raw['val_images']} of them, "
                f"fitted on {raw['train_images']} training images")
    lines.append(f"holdout validation accuracy ({metrics['counts']['val']} images, {same}):")
    for name, acc, macs in rows:
        lines.append(f"  {name:<{width}}  {acc:6.1%}" + (f"  {macs / 1e6:8.1f}M MACs" if macs is not None else ""))
    if ch["val_accuracy"] <= raw["val_accuracy"]:
        lines.append("  -> transfer does NOT beat the raw-pixel baseline on this data: the pretrained backbone is "
                     "not earning its cost here.")
    return lines
