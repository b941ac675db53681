"""RUN_DIR/report.html: one self-contained page (every image inlined as
base64) and the same plots as PNG files in RUN_DIR/plots/."""

from __future__ import annotations

import base64
import html
import io
import os
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from .._files import write_bytes
from .run import inside, load_run, model_figures, recorded_data_dir, run_name, worst_predictions, write_text_atomic

PLOTS_DIR = "plots"
REPORT = "report.html"
_THUMB = 112


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, plots_dir: str, name: str) -> bytes:
    """The figure as PNG bytes, also written to plots_dir/name (temp + rename)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _figure().close(fig)
    data = buf.getvalue()
    write_bytes(os.path.join(plots_dir, name), data)
    return data


def _img(data: bytes, alt: str, css: str = "plot") -> str:
    return (f'<img class="{css}" alt="{html.escape(alt)}" '
            f'src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">')


def plain(text) -> str:
    """``text`` as matplotlib shows it literally: a label such as ``$`` or
    ``$x$`` is a class name, not mathtext (which would fail on ``$$``)."""
    return str(text).replace("$", r"\$")


def plot_confusion(cm: np.ndarray, labels: list[str], normalised: bool):
    plt = _figure()
    labels = [plain(c) for c in labels]
    n = len(labels)
    values = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalised else cm
    side = min(2.5 + 0.45 * n, 14)
    fig, ax = plt.subplots(figsize=(side, side * 0.85))
    im = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalised else max(1, values.max()))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ticks = range(n)
    ax.set_xticks(ticks, labels, rotation=45, ha="right", fontsize=8 if n > 10 else 10)
    ax.set_yticks(ticks, labels, fontsize=8 if n > 10 else 10)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix" + (" (each row sums to 1)" if normalised else " (counts)"))
    if n <= 25:
        top = values.max() if values.size else 1
        for i in range(n):
            for j in range(n):
                text = f"{values[i, j]:.2f}" if normalised else f"{int(values[i, j])}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7 if n > 10 else 9,
                        color="white" if values[i, j] > 0.6 * top else "black")
    return fig


def plot_per_class(per_class: dict, labels: list[str]):
    plt = _figure()
    n = len(labels)
    fig, ax = plt.subplots(figsize=(min(3 + 0.5 * n, 16), 3.5))
    x = np.arange(n)
    ax.bar(x - 0.2, [per_class[c]["precision"] for c in labels], 0.4, label="precision")
    ax.bar(x + 0.2, [per_class[c]["recall"] for c in labels], 0.4, label="recall")
    ax.set_xticks(x, [plain(c) for c in labels], rotation=45 if n > 6 else 0, ha="right" if n > 6 else "center")
    ax.set_ylim(0, 1.18)
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.legend(loc="upper center", ncol=2, frameon=False)
    ax.set_title("per-class precision and recall (validation)")
    return fig


def plot_history(history: list[dict]):
    plt = _figure()
    epochs = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.3))
    for key, style in (("train_loss", "-"), ("val_loss", "--")):
        if all(key in h for h in history):
            a1.plot(epochs, [h[key] for h in history], style, marker=".", label=key.replace("_", " "))
    a1.set_xlabel("epoch")
    a1.set_ylabel("loss")
    if any(h.get("train_loss", 0) > 0 for h in history):
        a1.set_yscale("log")
    if a1.get_legend_handles_labels()[0]:  # a head without epochs (nearest class mean) has no loss
        a1.legend()
    a1.set_title("head training: loss")
    for key in ("train_accuracy", "val_accuracy"):
        if all(key in h for h in history):
            a2.plot(epochs, [h[key] for h in history], marker=".", label=key.replace("_", " "))
    a2.set_xlabel("epoch")
    a2.set_ylabel("accuracy")
    a2.set_ylim(0, 1.02)
    a2.legend(loc="lower right")
    a2.set_title("head training: accuracy")
    return fig


def plot_search(candidates: list[dict], chosen: dict | None, reference: dict | None = None):
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    fits = [c for c in candidates if c.get("fits_budget", True)]
    over = [c for c in candidates if not c.get("fits_budget", True)]
    for group, colour, name in ((fits, "tab:blue", "fits the budget"), (over, "tab:gray", "over budget")):
        if group:
            ax.scatter([c["macs"] / 1e6 for c in group], [c["val_accuracy"] for c in group], c=colour,
                       label=name, alpha=0.8)
    if chosen and chosen.get("macs") is not None and chosen.get("val_accuracy") is not None:
        ax.scatter([chosen["macs"] / 1e6], [chosen["val_accuracy"]], marker="*", s=250, c="tab:red",
                   label="chosen", zorder=3)
    if reference and reference.get("macs") and reference.get("val_accuracy") is not None:
        ax.scatter([reference["macs"] / 1e6], [reference["val_accuracy"]], marker="D", c="tab:orange",
                   label="final layer (baseline)")
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("MACs per image (millions, log scale)")
    ax.set_ylabel("validation accuracy")
    ax.set_title("search: accuracy vs compute")
    ax.legend(loc="lower right")
    return fig


def _thumbnail(path: str) -> bytes | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((_THUMB, _THUMB))
            if min(im.size) < 48:  # tiny images (8x8 digits) enlarged so they can be seen
                scale = 48 / min(im.size)
                im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.NEAREST)
            buf = io.BytesIO()
            im.save(buf, format="PNG")
            return buf.getvalue()
    except Exception:  # an unreadable image is left out of the gallery, not the report
        return None


def _fmt(v, spec: str = ".3f", none: str = "–") -> str:
    if v is None:
        return none
    if isinstance(v, float):
        return format(v, spec)
    return html.escape(str(v))


def _table(headers: list[str], rows: list[list], css: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


_CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;
padding:0 1em;color:#1d2330}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #dde;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0} td,th{border:1px solid #dde;padding:.25em .6em;text-align:right}
th{background:#f3f5f9} td:first-child,th:first-child{text-align:left}
.cards{display:flex;flex-wrap:wrap;gap:.8em} .card{background:#f3f5f9;border-radius:8px;padding:.6em 1em}
.card b{display:block;font-size:1.5em} .row{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
.row img.plot{max-width:calc(50% - .5em)} img.plot{max-width:100%;height:auto;display:block;margin:.5em 0}
.gallery{display:flex;flex-wrap:wrap;gap:1em} figure{margin:0;width:140px;font-size:.85em}
figure img{width:112px;height:auto;image-rendering:pixelated;border:2px solid #c33}
figure.ok img{border-color:#3a3} .muted{color:#667}
"""


@dataclass
class _Page:
    """What every section of the report reads, gathered once."""

    run_dir: str
    metrics: dict  # metrics.json (labels from labels.txt)
    labels: list[str]
    plots_dir: str
    figs: dict
    chosen: dict
    data_dir: str | None  # the run's data folder (config.toml): the only images the page may show

    def plot(self, fig, name: str, alt: str) -> str:
        """The figure as an inline <img>, also saved as plots_dir/name."""
        return _img(_save(fig, self.plots_dir, name), alt)


def _header(p: _Page, title: str) -> list[str]:
    metrics, figs, chosen = p.metrics, p.figs, p.chosen
    counts = metrics.get("counts", {})
    cards = [("validation accuracy", _fmt(metrics.get("val_accuracy"), ".1%")),
             ("classes", str(len(p.labels))),
             ("images (train / val)", f"{_fmt(counts.get('train', '?'))} / {_fmt(counts.get('val', '?'))}"),
             ("backbone", html.escape(str(metrics.get("backbone", "?")))),
             ("MACs per image", f"{figs['macs'] / 1e6:.1f} M" if figs.get("macs") else "–")]
    for key in ("fp32", "int8"):
        f = figs[key]
        if f["model_mb"] is not None:
            cards.append((f"{key} model", f"{f['model_mb']:.2f} MB"))
        if f["latency_ms"] is not None:
            cards.append((f"{key} latency", f"{f['latency_ms']:.2f} ms"))
    spec = metrics.get("input_spec") or {}
    return [f"<h1>{html.escape(title)}</h1>",
            f'<p class="muted">generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by edgetl '
            f'{html.escape(str(metrics.get("edgetl_version", "")))} · input '
            f'{_fmt(spec.get("image_size", "?"))}×{_fmt(spec.get("image_size", "?"))} '
            f'{_fmt(spec.get("channels", ""))}'
            + (f' · tap {html.escape(str(chosen["tap"]))}' if chosen.get("tap") else "")
            + (f' · head {html.escape(str(chosen["head"]))}' if chosen.get("head") else "") + "</p>",
            '<div class="cards">' + "".join(f'<div class="card">{k}<b>{v}</b></div>' for k, v in cards) + "</div>"]


def _size_and_speed(p: _Page) -> list[str]:
    rows = [[f["file"], _fmt(f["model_mb"], ".2f"), _fmt(f["latency_ms"], ".2f"), html.escape(f["latency_source"])]
            for f in (p.figs["fp32"], p.figs["int8"])]
    parts = ["<h2>Model size, compute and speed</h2>",
             _table(["model", "size (MB)", "latency (ms, 1 image)", "latency from"], rows)]
    agreement = [(k, p.metrics[k]) for k in ("agreement_fp32", "agreement_int8") if k in p.metrics]
    if agreement:
        parts.append("<p>Exported models agree with the host head on validation images: "
                     + ", ".join(f"{k.split('_')[1]} {v:.1%}" for k, v in agreement) + ".</p>")
    return parts


def _exports(p: _Page) -> list[str]:
    exports = p.metrics.get("exports") or {}
    if not exports:
        return []
    rows = [[html.escape(fmt), html.escape(", ".join(str(rec[k]) for k in ("file", "file_int8") if rec.get(k))),
             _fmt(rec.get("model_mb"), ".2f"), _fmt(rec.get("model_mb_int8"), ".2f"),
             _fmt(rec.get("agreement"), ".1%"), _fmt(rec.get("agreement_int8"), ".1%"),
             html.escape(str(rec.get("converter", "")))] for fmt, rec in exports.items()]
    return ["<h2>Exports</h2>" + _table(
        ["format", "files", "MB", "int8 MB", "agrees with ONNX", "int8 agrees", "converter"], rows)]


def _confusion(p: _Page) -> list[str]:
    cm = np.asarray(p.metrics.get("confusion_matrix") or [], dtype=np.int64)
    if not cm.size:
        return []
    return ["<h2>Confusion matrix (validation)</h2><p>Rows: true class; columns: predicted class.</p>",
            '<div class="row">'
            + p.plot(plot_confusion(cm, p.labels, False), "confusion_matrix.png", "confusion matrix, counts")
            + p.plot(plot_confusion(cm, p.labels, True), "confusion_matrix_normalized.png",
                     "confusion matrix, normalised by row") + "</div>"]


def _per_class(p: _Page) -> list[str]:
    per_class = p.metrics.get("per_class") or {}
    if not (per_class and all(c in per_class for c in p.labels)):
        return []
    rows = [[html.escape(c), _fmt(per_class[c].get("precision")), _fmt(per_class[c].get("recall")),
             _fmt(per_class[c].get("f1")), _fmt(per_class[c].get("support"))] for c in p.labels]
    return ["<h2>Per-class precision and recall</h2>",
            '<div class="row">' + _table(["class", "precision", "recall", "F1", "val images"], rows)
            + p.plot(plot_per_class(per_class, p.labels), "per_class.png", "per-class precision and recall")
            + "</div>"]


def _training_curve(p: _Page) -> list[str]:
    head = p.metrics.get("head") or {}
    history = head.get("history") or []
    if not (history and all("epoch" in h for h in history)):
        return []
    parts = ["<h2>Training curve</h2>"]
    if head.get("best_epoch"):
        parts.append(f"<p>The head kept is the one from epoch {_fmt(head['best_epoch'])} (early stopping on "
                     f"validation loss).</p>")
    parts.append(p.plot(plot_history(history), "training_curve.png", "training curve"))
    return parts


def _baselines_of(metrics: dict) -> dict:
    return metrics.get("baselines") if isinstance(metrics.get("baselines"), dict) else {}


def _baselines(p: _Page) -> list[str]:
    rows = [[html.escape(name.replace("_", " ")), _fmt(b.get("val_accuracy"), ".1%")]
            for name, b in _baselines_of(p.metrics).items() if isinstance(b, dict) and b.get("val_accuracy") is not None]
    if not rows:
        return []
    rows.append(["this model", _fmt(p.metrics.get("val_accuracy"), ".1%")])
    return ["<h2>Baselines</h2>" + _table(["model", "validation accuracy"], rows) + _sample_note(p.metrics)]


def _sample_note(metrics: dict) -> str:
    """One line when the search and the raw-pixel baseline ran on a sample (metrics.json ``sample``)."""
    sample = metrics.get("sample")
    if not isinstance(sample, dict) or not sample.get("description"):
        return ""
    return f'<p class="muted">Sampled: {html.escape(str(sample["description"]))}.</p>'


_SEARCH_KEYS = ["tap", "image_size", "head", "macs", "latency_ms", "model_mb", "val_accuracy", "fits_budget"]


def _search_row(c: dict, chosen: dict) -> list[str]:
    cells = []
    for k in _SEARCH_KEYS:
        v = c.get(k)
        if k == "macs" and v is not None:
            cells.append(f"{v / 1e6:.1f} M")
        elif k == "val_accuracy" and v is not None:
            cells.append(f"{v:.1%}")
        elif k == "fits_budget":
            cells.append("yes" if v or v is None else "no")
        else:
            cells.append(_fmt(v, ".2f"))
    if chosen and all(c.get(k) == chosen.get(k) for k in ("tap", "image_size", "head")):
        cells[0] = f"<b>{cells[0]} (chosen)</b>"
    return cells


def _search(p: _Page) -> list[str]:
    search = p.metrics.get("search") if isinstance(p.metrics.get("search"), dict) else {}
    candidates = [c for c in search.get("candidates") or [] if isinstance(c, dict)]
    if not candidates:
        return []
    order = sorted(candidates, key=lambda c: -float(c.get("val_accuracy") or 0))
    parts = [f"<h2>Search ({len(candidates)} candidates)</h2>",
             '<div class="row">' + _table(_SEARCH_KEYS, [_search_row(c, p.chosen) for c in order])]
    with_macs = [c for c in candidates if c.get("macs") and c.get("val_accuracy") is not None]
    if with_macs:
        final = _baselines_of(p.metrics).get("final_layer")
        parts.append(p.plot(plot_search(with_macs, p.chosen, final if isinstance(final, dict) else None),
                            "accuracy_vs_macs.png", "accuracy vs MACs"))
    parts.append("</div>")
    return parts


def _figure_of(r: dict, data_dir: str | None) -> str | None:
    """One gallery entry: thumbnail, true and predicted label (None if the image is unreadable).
    Only an image inside the run's data folder is shown; any other path
    (metrics.json is only a file: it may have been edited) is named, not read."""
    name = html.escape(os.path.basename(r["path"]))
    if inside(data_dir, r["path"]):
        data = _thumbnail(r["path"])
        if data is None:
            return None
        picture = _img(data, os.path.basename(r["path"]), "thumb")
    else:
        picture = f'<p class="muted">{name}: not shown, outside the run\'s data folder</p>'
    ok = r.get("predicted") == r.get("label")
    return (f'<figure class="{"ok" if ok else "bad"}">{picture}'
            f'<figcaption>true <b>{html.escape(str(r.get("label")))}</b><br>predicted '
            f'<b>{html.escape(str(r.get("predicted")))}</b> ({float(r.get("probability") or 0):.0%})'
            f'<br><span class="muted">{name}</span></figcaption></figure>')


def _worst(p: _Page) -> list[str]:
    items = [item for r in worst_predictions(p.metrics) if (item := _figure_of(r, p.data_dir)) is not None]
    if not items:
        return ["<h2>Worst-classified validation images</h2>",
                '<p class="muted">No validation images to show (metrics.json lists none, or they were '
                'moved since training).</p>']
    return ["<h2>Worst-classified validation images</h2>",
            '<p>Misclassified first (red border, most confident first), then the least confident '
            'correct ones (green).</p><div class="gallery">' + "".join(items) + "</div>"]


def _skipped(p: _Page) -> list[str]:
    skipped = p.metrics.get("skipped") or []
    if not skipped:
        return []
    return [f"<h2>Skipped files ({len(skipped)})</h2><ul>"
            + "".join(f"<li>{html.escape(str(s))}</li>" for s in skipped[:50]) + "</ul>"]


# The page after its header, section by section, in order.
SECTIONS = (_size_and_speed, _exports, _confusion, _per_class, _training_curve, _baselines, _search, _worst, _skipped)


def render_report(run_dir: str, plots_dir: str | None = None) -> str:
    """The HTML text of the report (also writes the PNGs to plots_dir)."""
    run_dir = os.fspath(run_dir)
    metrics = load_run(run_dir)
    plots_dir = plots_dir or os.path.join(run_dir, PLOTS_DIR)
    os.makedirs(plots_dir, exist_ok=True)
    chosen = metrics.get("chosen") if isinstance(metrics.get("chosen"), dict) else {}
    page = _Page(run_dir, metrics, metrics["labels"], plots_dir, model_figures(run_dir, metrics), chosen,
                 recorded_data_dir(run_dir))
    title = f"edgetl run: {run_name(run_dir)}"
    parts = _header(page, title) + [part for section in SECTIONS for part in section(page)]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>'
            f'<body>{"".join(parts)}</body></html>\n')


def write_report(run_dir) -> str:
    """Write RUN_DIR/report.html and RUN_DIR/plots/*.png; return the page's path."""
    run_dir = os.fspath(run_dir)
    page = render_report(run_dir)
    return write_text_atomic(os.path.join(run_dir, REPORT), page)
