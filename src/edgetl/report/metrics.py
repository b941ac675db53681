"""Classification metrics in a JSON-ready shape (numpy: the confusion
matrix and what follows from it, as scikit-learn defines them, with 0 where
a ratio has no denominator), and as a plain-text table (``edgetl evaluate``)."""

from __future__ import annotations

import numpy as np


def classification_metrics(y_true, y_pred, labels: list[str]) -> dict:
    y_true = np.asarray(y_true, np.int64)
    y_pred = np.asarray(y_pred, np.int64)
    k = len(labels)
    known = (y_true >= 0) & (y_true < k) & (y_pred >= 0) & (y_pred < k)
    confusion = np.bincount(y_true[known] * k + y_pred[known], minlength=k * k).reshape(k, k)
    hits = np.diag(confusion).astype(np.float64)
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    precision = np.divide(hits, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(hits, support, out=np.zeros(k), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros(k), where=total > 0)
    return {
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else 0.0,
        "n": int(len(y_true)),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i])}
            for i, name in enumerate(labels)
        },
        "confusion_matrix": confusion.tolist(),
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
