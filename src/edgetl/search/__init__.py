"""Budget-aware transfer search: which layer, input size and head.

Everything but the last layer transfers well only when the user's images
look like ImageNet photos; for scans, drawings or icons an earlier layer
often transfers better, and on a phone an earlier tap at a smaller input is
10-50x cheaper. So the choice is measured, every run:

1. **Candidates**: input sizes (halving from the backbone's default down to
   32 px: the extraction of all of them costs at most 4/3 of the largest
   alone) x tap points (the end of each stage, and the final features) x
   heads (every registered kind of ``edgetl.heads``: softmax, nearest class
   mean, one hidden layer). One forward pass per size yields every tap
   (``export_backbone(taps=True)``), through the feature cache, so trying a
   candidate again costs nothing.
2. **Costs first**: MACs, model size and batch-1 latency of every (size,
   tap) are known before any image is read; candidates over the device
   budget are dropped, and when none is left the error names the cheapest.
3. **Selection on validation data only**: stratified k-fold over the
   labeled images when the set is small, the run's holdout split otherwise;
   the test set is never seen. Heads cheap to fit are scored for every
   (size, tap); the hidden-layer head for the best few. A candidate within
   ``TIE_TOLERANCE`` of the best is a tie, and ties go to the cheaper.
4. **Baselines, always**: logistic regression on raw pixels, and the naive
   head (softmax on the final layer at the default size), both on the same
   holdout split the chosen model is reported on.

The stages, one file each: ``sizes`` (input sizes, budget), ``costs`` (what a
(size, tap) costs on the device), ``candidates`` (planning, table, choice),
``scoring`` (selection protocol, score cache, holdout fit and refit),
``baseline`` (the naive baseline), ``searcher`` (the ``Search`` that runs
them), ``summary`` (console lines), ``plot`` (accuracy vs MACs)."""

from __future__ import annotations

from ..heads import HEAD_KINDS as HEADS
from .baseline import NaiveBaseline, naive_baseline
from .cache import JsonCache
from .candidates import TIE_TOLERANCE, Candidate, choose, format_table, no_fit_message, plan_candidates
from .costs import TapCost, head_cost, tap_costs
from .scoring import (FEWER_FOLDS_ABOVE, KFOLD_BELOW_IMAGES, MAX_FOLDS, NUM_MLP_PAIRS, ScoreCache,
                      holdout_and_refit, make_scorer, score_candidates, single_thread)
from .searcher import Search
from .sizes import MIN_SEARCH_SIZE, Budget, native_side, parse_count, search_sizes, with_native_size
from .summary import search_summary

__all__ = ["FEWER_FOLDS_ABOVE", "HEADS", "KFOLD_BELOW_IMAGES", "MAX_FOLDS", "MIN_SEARCH_SIZE", "NUM_MLP_PAIRS",
           "TIE_TOLERANCE", "Budget", "Candidate", "JsonCache", "NaiveBaseline", "ScoreCache", "Search", "TapCost", "choose",
           "format_table", "head_cost", "holdout_and_refit", "make_scorer", "naive_baseline", "native_side",
           "no_fit_message", "parse_count", "plan_candidates", "score_candidates", "search_sizes", "search_summary",
           "single_thread", "tap_costs", "with_native_size"]
