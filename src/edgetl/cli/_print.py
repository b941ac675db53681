"""Output helpers shared by the command modules."""

from __future__ import annotations

import json


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2))


def print_predictions(paths, preds, as_json: bool) -> None:
    """``[{"path", "label", "probability"}]`` with --json, else one tab-separated line per image."""
    if as_json:
        print_json([{"path": p, "label": r.label, "probability": r.probability} for p, r in zip(paths, preds)])
    else:
        for path, r in zip(paths, preds):
            print(f"{path}\t{r.label}\t{r.probability:.3f}")
