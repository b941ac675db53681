"""The naive baseline every run reports: the article's recipe, a softmax
head on the final layer at the backbone's default size."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from ..zoo import FINAL_TAP
from .costs import tap_costs
from .scoring import holdout_and_refit, single_thread


@dataclass
class NaiveBaseline:
    """The article's recipe: softmax head on the final layer at the
    backbone's default size, fitted on the run's training split."""

    graph: object  # taps graph at the default size
    head: object
    summary: dict
    cache_dir: str | None = None

    def predict(self, paths: list[str]) -> np.ndarray:
        from ..features.extract import FeatureExtractor

        ex = FeatureExtractor(self.graph, cache_dir=self.cache_dir).extract(list(paths), progress=False)
        if len(ex.ok) != len(paths):
            raise DataError(f"{len(paths) - len(ex.ok)} of the images could not be read")
        return self.head.predict(ex.tap(FINAL_TAP))

    def score(self, paths: list[str], y) -> float:
        return float((self.predict(paths) == np.asarray(y)).mean())


def naive_baseline(backbone: str, graph, image_size: int, X: np.ndarray, y: np.ndarray, train_idx: np.ndarray,
                   val_idx: np.ndarray, num_classes: int, head_params: dict,
                   cache_dir: str | None = None) -> NaiveBaseline:
    """Fit the softmax head on ``X`` (the final layer's features of ``graph``,
    at ``image_size``) on the training split, score it on the holdout split, and ship it
    refitted on every row, like the chosen model."""
    with single_thread():
        head, shipped = holdout_and_refit("softmax", head_params, X, y, train_idx, val_idx, num_classes)
    acc = float((head.predict(X[val_idx]) == y[val_idx]).mean())
    cost = tap_costs(graph, backbone, measure_latency=True, cache_dir=cache_dir, taps=(FINAL_TAP,))[FINAL_TAP]
    hm, hmb = head.cost(X.shape[1], num_classes)
    summary = {"tap": FINAL_TAP, "image_size": image_size, "head": "softmax", "val_accuracy": acc,
               "macs": int(cost.macs + hm), "latency_ms": cost.latency_ms, "model_mb": cost.model_mb + hmb}
    return NaiveBaseline(graph, shipped, summary, cache_dir)
