"""Training beyond the head: which layers learn, and what that costs.

Strategies (``edgetl train --strategy NAME``):

- ``head``: frozen base, cached features, a softmax head (the default path,
  with the layer/size/head search of ``edgetl.search``);
- ``bias``: every bias of the base and the head (TinyTL, Cai et al. 2020);
- ``last-K``: the last K block groups (stages) of the base and the head;
- ``full``: every layer;
- ``scratch``: the same architecture from random initialisation, every
  layer (the baseline the article compares transfer against);
- ``auto``: the strongest strategy for the amount of data that fits the
  memory budget.

Pretrained BatchNorm layers stay in eval mode (their statistics frozen; in
``full``/``last-K`` their scale and shift train). Whatever a frozen prefix
computes is computed once and cached on disk; each epoch runs only the
trainable suffix. ``edgetl.finetune.planner`` predicts the peak memory of
each strategy before anything runs."""

from __future__ import annotations

import re

from ..errors import DataError

STRATEGIES = ("head", "bias", "last-K", "full", "scratch", "auto")
# What the planner and ``auto`` consider, strongest (most layers learning) first.
CANDIDATES = ("full", "last-3", "last-2", "last-1", "bias", "head")


def parse_strategy(name: str) -> tuple[str, int]:
    """'last-2' -> ('last', 2); 'bias' -> ('bias', 0). Unknown: DataError."""
    name = str(name).strip().lower()
    m = re.fullmatch(r"last-(\d+)", name)
    if m:
        k = int(m.group(1))
        if k < 1:
            raise DataError(f"--strategy last-K needs K >= 1, got {name!r}")
        return "last", k
    if name in ("head", "bias", "full", "scratch", "auto"):
        return name, 0
    raise DataError(f"Unknown strategy {name!r}; choose from head, bias, last-K (e.g. last-2), full, scratch, auto")


def auto_candidates(images_per_class: float) -> tuple[str, ...]:
    """What ``--strategy auto`` tries, in order, for this much data per class
    (the first that fits the memory budget is taken). Measured on
    Fashion-MNIST (BENCHMARKS.md): below 1,000 photos per class the frozen
    base with the layer/size search wins (84.6 % at 100 per class, against
    79.6 % for the best fine-tuning at 32 px); from 1,000 per class training
    every layer wins (88.6 %, 89.5 % on all 60,000), then the last stages,
    then the biases, each needing less memory than the one before."""
    if images_per_class < 1000:
        return ("head", "bias")
    return ("full", "last-3", "bias", "head")
