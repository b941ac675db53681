"""What a run folder tells about its model: classification metrics
(``metrics``), the self-contained HTML report (``html``) and the model card
(``card``), both written from the folder alone (``run`` reads it)."""

from __future__ import annotations

from .metrics import classification_metrics, format_report


def write_report(run_dir) -> str:
    """RUN_DIR/report.html (self-contained) + RUN_DIR/plots/*.png; returns the page's path."""
    from .html import write_report as _write

    return _write(run_dir)


def write_model_card(run_dir) -> str:
    """RUN_DIR/README.md: data, backbone and why, metrics, baselines, use and limits, how to run it."""
    from .card import write_model_card as _write

    return _write(run_dir)


__all__ = ["classification_metrics", "format_report", "write_model_card", "write_report"]
