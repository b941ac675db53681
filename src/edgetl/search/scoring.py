"""How candidates are scored on validation data only: k-fold for small
sets (repeated for the smallest), the run's holdout split for large ones,
each image's correctness kept for the choice's significance test; and the
holdout fit + refit on everything that ships."""

from __future__ import annotations

import contextlib

import numpy as np

from ..events import emit
from ..heads import head_class

NUM_MLP_PAIRS = 3  # an expensive head (the hidden-layer one) is tried on this many best (size, tap) pairs
KFOLD_BELOW_IMAGES = 2000  # k-fold selection below this many labeled images (holdout above)
MAX_FOLDS = 5
FEWER_FOLDS_ABOVE = 500


@contextlib.contextmanager
def single_thread():
    """Heads on small problems gain nothing from a second thread, and
    spinning BLAS/OpenMP workers slow them many times when the cores are shared."""
    from threadpoolctl import threadpool_limits

    # The heads are numpy (heads.fitting): its BLAS is the pool that matters.
    with threadpool_limits(limits=1):
        yield


REPEAT_BELOW_IMAGES = 500  # below this many images the k-fold split is drawn SELECTION_REPEATS times
SELECTION_REPEATS = 3


def selection_folds(y: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray, num_classes: int, seed: int,
                    kfold_below: int = KFOLD_BELOW_IMAGES) -> tuple[list[np.ndarray], dict]:
    """(fold arrays, protocol dict): each array gives every labelled row its
    fold. Below ``kfold_below`` images, stratified k-fold over all of them
    (5 folds for small sets, 3 above FEWER_FOLDS_ABOVE; drawn
    SELECTION_REPEATS times below REPEAT_BELOW_IMAGES: a closed-form score
    costs little, and the repeats halve the noise of the choice);
    otherwise the run's holdout split (train rows -1, validation rows 0)."""
    from ..heads.ridge import stratified_folds

    min_class = int(np.bincount(y, minlength=num_classes).min())
    if len(y) < kfold_below and min_class >= 2:
        k = max(2, min(MAX_FOLDS if len(y) < FEWER_FOLDS_ABOVE else 3, min_class))
        repeats = SELECTION_REPEATS if len(y) < REPEAT_BELOW_IMAGES else 1
        folds = [stratified_folds(y, k, seed + r) for r in range(repeats)]
        times = f", {repeats} times" if repeats > 1 else ""
        return folds, {"kind": "kfold", "folds": k, "repeats": repeats, "images": int(len(y)),
                       "description": f"stratified {k}-fold cross-validation on {len(y)} labeled images{times}"}
    folds = np.full(len(y), -1, np.int64)
    folds[val_idx] = 0
    return [folds], {"kind": "holdout", "train": int(len(train_idx)), "val": int(len(val_idx)),
                     "description": f"fit on {len(train_idx)} images, scored on the {len(val_idx)} held out"}


def make_scorer(y: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray, num_classes: int, seed: int,
                head_params: dict, head_kwargs, kfold_below: int = KFOLD_BELOW_IMAGES):
    """(score(X, kind) -> per-image correctness, protocol dict). Each image
    scored (all of them under k-fold, the validation split under holdout)
    gets the share of the repeats in which a ``kind`` head fitted without
    it classified it right (``Head.fold_correct``: the closed-form proxy
    for the softmax head, real fits for the others). ``head_kwargs(kind,
    head_params)`` gives a kind's hyper-parameters (``Search.head_kwargs``)."""
    from ..heads import make_head

    folds, protocol = selection_folds(y, train_idx, val_idx, num_classes, seed, kfold_below)
    scored = folds[0] >= 0

    def score(X, kind):
        head = make_head(kind, **head_kwargs(kind, head_params))
        repeats = folds if head.fast_fold_scoring else folds[:1]  # real fits: one draw of the folds
        right = np.mean([head.fold_correct(X, y, f, num_classes) for f in repeats], axis=0)
        return right[scored]
    return score, protocol


def score_candidates(live: list, score) -> None:
    """Set ``correct`` (per-image correctness) and ``val_accuracy`` (its
    mean) of the candidates ``live`` with ``score(candidate)``.

    Heads that are cheap to score are scored on every (size, tap); an
    expensive one (``Head.expensive``: the hidden-layer head) only on the
    NUM_MLP_PAIRS pairs where the cheap heads did best (on every pair when
    no cheap head is tried); the others get a note instead."""
    cheap = [c for c in live if not head_class(c.head).expensive]
    for c in cheap:
        c.correct = score(c)
        c.val_accuracy = float(np.mean(c.correct))
        _scored(c)
    pair_score: dict[tuple[int, str], float] = {}
    for c in cheap:
        key = (c.image_size, c.tap)
        pair_score[key] = max(pair_score.get(key, -1.0), c.val_accuracy)
    expensive = [c for c in live if head_class(c.head).expensive]
    best_pairs = (set(sorted(pair_score, key=lambda k: -pair_score[k])[:NUM_MLP_PAIRS]) if cheap
                  else {(c.image_size, c.tap) for c in expensive})
    for c in expensive:
        if (c.image_size, c.tap) in best_pairs:
            c.correct = score(c)
            c.val_accuracy = float(np.mean(c.correct))
            _scored(c)
        else:
            c.note = f"not tried: the {head_class(c.head).label} is fitted on the {NUM_MLP_PAIRS} best taps only"


def _scored(c) -> None:
    emit("candidate", image_size=int(c.image_size), tap=str(c.tap), head=str(c.head),
         val_accuracy=round(float(c.val_accuracy), 4))


def holdout_and_refit(kind: str, kwargs: dict, X: np.ndarray, y: np.ndarray, train_idx: np.ndarray,
                      val_idx: np.ndarray, num_classes: int):
    """(head of ``kind`` with hyper-parameters ``kwargs``, fitted on the train
    split and early-stopped on the holdout; the same head refitted on all
    rows, ``Head.refit_all``: for the epochs early stopping chose). The first
    gives honest validation figures; the second is what ships: selection
    done, no labeled image is left unused."""
    from ..heads import make_head

    head = make_head(kind, **kwargs).fit(X[train_idx], y[train_idx], X[val_idx], y[val_idx],
                                         num_classes=num_classes)
    return head, head.refit_all(X, y, num_classes=num_classes)
