"""Classify photos with a backbone's own ImageNet head: no training needed
(the article's dog-breed example: 120 dog breeds are ImageNet classes)."""

from __future__ import annotations

import os

import numpy as np

from .errors import DataError


def classify_imagenet(images, backbone: str = "efficientnet_lite0", top: int = 5, cache_dir: str | None = None) -> list[dict]:
    """``[{"path", "top": [{"index", "label", "probability"}, ...]}, ...]``."""
    from .export.backbone_onnx import INPUT_NAME, LOGITS_NAME, export_backbone
    from .runtime.predictor import to_image
    from .runtime.session import make_session
    from .zoo import imagenet_classes

    if top < 1:
        raise DataError(f"--top must be at least 1, got {top}")
    graph = export_backbone(backbone, weights="default", cache_dir=cache_dir)
    if not graph.has_logits:
        raise DataError(f"Backbone '{backbone}' has no ImageNet classifier in its weights; pick another --backbone")
    names = imagenet_classes()
    session = make_session(graph.onnx_path)
    spec = graph.input_spec
    results = []
    for item in images:
        batch = spec.batch([to_image(item)])
        logits = session.run([LOGITS_NAME], {INPUT_NAME: batch})[0][0].astype(np.float64)
        proba = np.exp(logits - logits.max())
        proba /= proba.sum()
        order = np.argsort(-proba)[: min(top, len(proba))]
        results.append({
            "path": os.fspath(item) if isinstance(item, (str, os.PathLike)) else None,
            "top": [{"index": int(i), "label": names[i], "probability": float(proba[i])} for i in order],
        })
    return results
