"""Validation accuracy against compute, one point per scored candidate."""

from __future__ import annotations

from .._files import atomic_path
from ..heads import head_kinds

# matplotlib's ten categorical colours: one per head kind, in registration order.
HEAD_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
               "tab:olive", "tab:cyan")


def _plain(text) -> str:
    """Names (a registered backbone's, its taps') drawn as written, never parsed as mathtext ('$')."""
    return str(text).replace("$", r"\$")


def plot_candidates(candidates, chosen, path: str, baselines: dict | None = None, title: str = "") -> str:
    """Write a PNG scatter (MACs on a log axis) to ``path`` atomically; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    scored = [c for c in candidates if c.val_accuracy is not None]
    sizes = sorted({c.image_size for c in scored})
    markers = dict(zip(sizes, "os^Dvp<>h"))
    colors = {kind: HEAD_COLORS[i % len(HEAD_COLORS)] for i, kind in enumerate(head_kinds())}
    fig, ax = plt.subplots(figsize=(10, 5), dpi=110)
    for head, color in colors.items():
        for size in sizes:
            pts = [c for c in scored if c.head == head and c.image_size == size]
            if pts:
                ax.scatter([c.macs for c in pts], [100 * c.val_accuracy for c in pts], c=color,
                           marker=markers[size], s=36, alpha=0.8, label=_plain(f"{head} @ {size} px"))
    ax.scatter([chosen.macs], [100 * chosen.val_accuracy], s=260, facecolors="none", edgecolors="red",
               linewidths=2, label=_plain(f"chosen: {chosen.tap} @ {chosen.image_size} px, {chosen.head}"))
    for name, value in (baselines or {}).items():
        if value is not None:
            ax.axhline(100 * value, linestyle="--", linewidth=1, color="gray")
            ax.text(min(c.macs for c in scored), 100 * value, _plain(f" {name}"),
                    va="bottom", fontsize=8, color="dimgray")
    ax.set_xscale("log")
    ax.set_xlabel("MACs per image (backbone up to the tap + head, log scale)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(_plain(title or "edgetl search: every candidate"))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return path
