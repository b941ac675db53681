"""What ``edgetl.train`` returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class TrainResult:
    run_dir: str
    metrics: dict  # also in RUN_DIR/metrics.json
    train_paths: list[str]
    val_paths: list[str]
    val_targets: np.ndarray
    searcher: object = None  # edgetl.search.Search: candidates, features, graphs (the head path)
    baseline_models: dict = field(default_factory=dict)  # fitted baselines, each with score(paths, y)
