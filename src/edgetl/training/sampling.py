"""Data sets too big to score every candidate on: the search's selection
and the raw-pixel baseline on a stratified sample (``TrainConfig.sample_images``),
the chosen head on every image.

Scoring a candidate costs O(n d^2) (the closed-form ridge proxy) and the
raw-pixel baseline decodes every image again; on a million images both
dominate the run while a sample of tens of thousands ranks the candidates
and rates the baseline to within a fraction of a point."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..data.folder import stratified_sample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSample:
    """The rows (indices into the run's labeled images) the search scores on
    and the raw-pixel baseline fits (``train``) and is scored on (``val``).

    Above ``threshold`` labeled images: a stratified sample of the train
    split and one of the validation split, ``threshold`` images together, in
    the proportions of the split. So the search keeps its protocol
    (``search.scoring.selection_folds``) on the sample: the holdout split,
    restricted to it, where candidates are fitted on sampled training images
    and scored on sampled held-out ones that never trained them; or k-fold
    across the sample when ``threshold`` is below KFOLD_BELOW_IMAGES,
    exactly what a data set of that size would get. At or below it: the
    whole splits (nothing sampled)."""

    train: np.ndarray
    val: np.ndarray
    threshold: int
    of_train: int  # the whole splits' sizes
    of_val: int

    @property
    def sampled(self) -> bool:
        return len(self.train) + len(self.val) < self.of_train + self.of_val

    def record(self) -> dict | None:
        """metrics.json's ``sample``: None when nothing was sampled."""
        if not self.sampled:
            return None
        n, total = len(self.train) + len(self.val), self.of_train + self.of_val
        counts = {"train": int(len(self.train)), "val": int(len(self.val))}
        return {"threshold": self.threshold, "labeled_images": total, "search": dict(counts),
                "raw_pixel_baseline": dict(counts),
                "description": f"{total} labeled images, more than sample_images ({self.threshold}): the search "
                               f"scored its candidates, and the raw-pixel baseline was fitted and scored, on a "
                               f"stratified sample of {n} ({len(self.train)} of the {self.of_train} training images, "
                               f"{len(self.val)} of the {self.of_val} validation images); the chosen head was trained "
                               f"on every training image and is validated on all {self.of_val} validation images"}


def sample_splits(y: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray, threshold: int, seed: int) -> RunSample:
    """The run's :class:`RunSample`: ``train_idx``/``val_idx`` (the run's
    holdout split of the labeled rows ``y``) whole when there are at most
    ``threshold`` rows, else each cut to its share of ``threshold`` by
    ``data.folder.stratified_sample`` (every class of a split keeps at least
    one image there; the same seed, the same sample)."""
    total = len(train_idx) + len(val_idx)
    if total <= threshold:
        return RunSample(train_idx, val_idx, threshold, len(train_idx), len(val_idx))
    n_val = min(max(int(round(threshold * len(val_idx) / total)), 1), max(threshold - 1, 1))
    n_train = max(threshold - n_val, 1)
    sample = RunSample(train_idx[stratified_sample(y[train_idx], n_train, seed)],
                       val_idx[stratified_sample(y[val_idx], n_val, seed)], threshold, len(train_idx), len(val_idx))
    log.info("%d labeled images, more than sample_images = %d: the search and the raw-pixel baseline use a "
             "stratified sample of %d training and %d validation images", total, threshold, len(sample.train),
             len(sample.val))
    return sample
