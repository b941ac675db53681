"""Budget-aware transfer search: which layer, input size and head.

Everything but the last layer transfers well only when the user's images
look like ImageNet photos; for scans, drawings or icons an earlier layer
often transfers better, and on a phone an earlier tap at a smaller input is
10-50x cheaper. So the choice is measured, every run:

1. **Candidates**: input sizes (halving from the backbone's default down to
   32 px: the extraction of all of them costs at most 4/3 of the largest
   alone) x tap points (the end of each stage, and the final features) x
   heads (the softmax head unless told otherwise; any registered kind of
   ``edgetl.heads`` can be asked for). One forward pass per size yields every tap
   (``export_backbone(taps=True)``), through the feature cache, so trying a
   candidate again costs nothing.
2. **Costs first**: MACs, model size and batch-1 latency of every (size,
   tap) are known before any image is read; candidates over the device
   budget are dropped, and when none is left the error names the cheapest.
3. **Selection on validation data only**: stratified k-fold over the
   labeled images when the set is small (repeated for the smallest), the
   run's holdout split otherwise; the test set is never seen. Above
   ``sample_images`` labeled images (``edgetl.training.sampling``) both run
   on a stratified sample of the train and validation splits. The softmax
   head is scored by its closed-form proxy (``heads.ridge``: every fold and
   penalty from one eigendecomposition), other heads by real fits (the
   hidden-layer head on the best few (size, tap) only). The reference
   (every tap joined, ``"all"``, at the default size; else the naive head)
   is kept unless a candidate beats it by more than ``SIGNIFICANCE_Z``
   standard errors of the paired per-image gain, or costs CHEAPER_FACTOR
   times fewer MACs and is confidently at most EQUIVALENCE_MARGIN below it; among those, a
   candidate within ``TIE_TOLERANCE`` of the best is a tie, and ties go to
   the cheaper.
4. **Baselines, always**: a linear classifier (closed-form ridge) on raw pixels, and the naive
   head (softmax on the final layer at the default size), both on the same
   holdout split the chosen model is reported on.

The stages, one file each: ``sizes`` (input sizes, budget), ``costs`` (what a
(size, tap) costs on the device), ``candidates`` (planning, table, choice),
``scoring`` (selection protocol, score cache, holdout fit and refit),
``baseline`` (the naive baseline), ``searcher`` (the ``Search`` that runs
them), ``summary`` (console lines), ``plot`` (accuracy vs MACs)."""

from __future__ import annotations

from ..heads import HEAD_KINDS as HEADS

# The heads a search tries unless told otherwise: the one the device keeps
# training. The others (``--heads softmax,ncm,mlp``) are scored by real fits.
SEARCH_HEADS = ("softmax",)
from .baseline import NaiveBaseline, naive_baseline
from .cache import JsonCache
from .candidates import (CHEAPER_FACTOR, EQUIVALENCE_MARGIN, SIGNIFICANCE_Z, TIE_TOLERANCE, Candidate, choose,
                         format_table, no_fit_message, not_worse, plan_candidates, significantly_better)
from .costs import TapCost, candidate_taps, head_cost, tap_costs
from .scoring import (FEWER_FOLDS_ABOVE, KFOLD_BELOW_IMAGES, MAX_FOLDS, NUM_MLP_PAIRS, holdout_and_refit,
                      make_scorer, score_candidates, selection_folds, single_thread)
from .searcher import Search
from .sizes import MIN_SEARCH_SIZE, Budget, native_side, parse_count, search_sizes, with_native_size
from .summary import search_summary

__all__ = ["CHEAPER_FACTOR", "EQUIVALENCE_MARGIN", "FEWER_FOLDS_ABOVE", "HEADS", "KFOLD_BELOW_IMAGES", "MAX_FOLDS", "MIN_SEARCH_SIZE", "NUM_MLP_PAIRS",
           "SEARCH_HEADS", "SIGNIFICANCE_Z", "TIE_TOLERANCE", "Budget", "Candidate", "JsonCache", "NaiveBaseline",
           "Search", "TapCost", "candidate_taps", "choose", "format_table", "head_cost", "holdout_and_refit", "make_scorer",
           "naive_baseline", "native_side", "no_fit_message", "not_worse", "parse_count", "plan_candidates", "score_candidates",
           "search_sizes", "search_summary", "selection_folds", "significantly_better", "single_thread", "tap_costs",
           "with_native_size"]
