"""Classification metrics, from scikit-learn, in a JSON-ready shape, and as a
plain-text table (``edgetl evaluate``)."""

from __future__ import annotations

import numpy as np


def classification_metrics(y_true, y_pred, labels: list[str]) -> dict:
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    y_true = np.asarray(y_true, np.int64)
    y_pred = np.asarray(y_pred, np.int64)
    idx = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=idx, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        "n": int(len(y_true)),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i])}
            for i, name in enumerate(labels)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=idx).tolist(),
        "labels": list(labels),
    }


def format_report(metrics: dict) -> str:
    """Per-class table and confusion matrix as plain text."""
    labels = metrics["labels"]
    width = max(8, *(len(name) for name in labels))
    lines = [f"{'class':<{width}}  precision  recall  support"]
    for name in labels:
        row = metrics["per_class"][name]
        lines.append(f"{name:<{width}}  {row['precision']:9.3f}  {row['recall']:6.3f}  {row['support']:7d}")
    lines.append(f"accuracy {metrics['accuracy']:.4f} on {metrics['n']} images")
    if len(labels) <= 20:
        lines.append("confusion matrix (rows: true, columns: predicted)")
        cell = max(4, *(len(str(v)) + 1 for row in metrics["confusion_matrix"] for v in row))
        lines.append(" " * width + "".join(f"{i:>{cell}}" for i in range(len(labels))))
        for i, (name, row) in enumerate(zip(labels, metrics["confusion_matrix"])):
            lines.append(f"{name:<{width}}" + "".join(f"{v:>{cell}}" for v in row))
    return "\n".join(lines)
