"""RUN_DIR/README.md: a model card written from the run folder alone."""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass

from ..data.folder import visible
from .run import load_run, model_figures, run_name, write_text_atomic

CARD = "README.md"


# What Markdown (CommonMark and GitHub's tables) would read as syntax in a
# label: HTML (entities), emphasis, code, links, table cells (backslash).
_MD_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}
_MD_PUNCTUATION = set("\\`*_[]|~")


def _md(text) -> str:
    """``text`` (a label, or anything else metrics.json holds) as literal
    Markdown text, also inside a table cell: a class named
    ``<img src=x onerror=...>`` or ``a|b`` is shown, never rendered or split.
    Control characters are shown escaped (a label is one line)."""
    out = []
    for ch in str(text):
        if ch in _MD_ENTITIES:
            out.append(_MD_ENTITIES[ch])
        elif ch in _MD_PUNCTUATION:
            out.append("\\" + ch)
        elif unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            out.append("\\" + ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def _code(text) -> str:
    """``text`` as inline code when that is literal (no backtick, pipe, HTML
    character or control character in it), else as :func:`_md` text."""
    text = str(text)
    if any(ch in "`|<>&" for ch in text) or visible(text) != text:
        return _md(text)
    return f"`{text}`"


def _pct(v) -> str:
    return f"{v:.1%}" if isinstance(v, (int, float)) else "–"


def _describe(backbone: str) -> str:
    try:
        from ..zoo import get_spec

        desc = get_spec(backbone).description
    except Exception:  # an unknown or renamed backbone: the card still gets written
        return ""
    return f" ({desc.rstrip('.')})" if desc else ""


@dataclass
class _Run:
    """What every section of the card reads, gathered once."""

    run_dir: str
    m: dict  # metrics.json (labels from labels.txt)
    labels: list[str]
    name: str
    counts: dict
    spec: dict
    chosen: dict
    figs: dict
    backbone: str
    size: object  # the input size (int), or "?"
    channels: str

    @classmethod
    def load(cls, run_dir: str) -> "_Run":
        m = load_run(run_dir)
        spec = m.get("input_spec") or {}
        size = spec.get("image_size")
        channels = spec.get("channels")
        # metrics.json is only a file: what goes into code blocks below is a number or a known word.
        return cls(run_dir=run_dir, m=m, labels=m["labels"], name=visible(run_name(run_dir)),
                   counts=m.get("counts") or {}, spec=spec,
                   chosen=m.get("chosen") if isinstance(m.get("chosen"), dict) else {},
                   figs=model_figures(run_dir, m), backbone=str(m.get("backbone", "?")),
                   size=size if isinstance(size, int) else "?",
                   channels=channels if channels in ("RGB", "L") else "RGB")


def _intro(r: _Run) -> list[str]:
    return [f"# {_md(r.name)}: an image classifier for {len(r.labels)} classes\n",
            f"Made with edgetl {_md(r.m.get('edgetl_version', ''))} by transfer learning: the convolutional base of "
            f"{_code(r.backbone)}, pretrained on ImageNet, is kept frozen and a small head is trained on your photos. "
            f"Everything below comes from this folder (`metrics.json`); the full report with plots is "
            f"[report.html](report.html).\n"]


def _data(r: _Run) -> list[str]:
    counts, spec, size = r.counts, r.spec, r.size
    per = counts.get("per_class") or {}
    lines = ["## Data\n",
             f"- {_md(counts.get('images_used', '?'))} images used of {_md(counts.get('images_found', '?'))} found "
             f"({_md(counts.get('skipped', 0))} skipped: unreadable or not images); {_md(counts.get('train', '?'))} "
             f"to train, {_md(counts.get('val', '?'))} to validate (stratified split, seed "
             f"{_md((r.m.get('config') or {}).get('seed', '?'))}).",
             "- Classes, in output order (`labels.txt`): " + ", ".join(
                 f"{_code(c)} ({_md(per[c])})" if c in per else _code(c) for c in r.labels) + "."]
    if per and all(isinstance(v, int) for v in per.values()):
        lo, hi = min(per.values()), max(per.values())
        if hi > 2 * lo:
            lines.append(f"- The classes are unbalanced ({lo} to {hi} images): expect lower recall on the small ones.")
    resize = f"{size / float(spec['crop_fraction']):.0f}" if isinstance(size, int) and spec.get("crop_fraction") else "?"
    lines.append(f"- Input: {r.channels} image, shorter side resized to {resize} px, "
                 f"centre crop {size}×{size}, `(pixel − mean) / std` with mean {_md(spec.get('mean'))} and std "
                 f"{_md(spec.get('std'))} (pixel units).\n")
    return lines


def _backbone(r: _Run) -> list[str]:
    search = r.m.get("search") if isinstance(r.m.get("search"), dict) else {}
    cands = [c for c in search.get("candidates") or [] if isinstance(c, dict)]
    chosen = r.chosen
    if chosen and cands:
        fits = [c for c in cands if c.get("fits_budget", True)]
        why = (f"{_code(r.backbone)} tapped at {_code(chosen.get('tap'))} with a {_code(chosen.get('head'))} head at "
               f"{_md(chosen.get('image_size'))} px was chosen by a search over {len(cands)} candidates (tap layer × "
               f"input size × head): the most accurate on validation of the {len(fits)} that fit the device budget "
               f"({_pct(chosen.get('val_accuracy'))}, {(chosen.get('macs') or 0) / 1e6:.1f} M MACs). See the search "
               f"table and the accuracy-vs-MACs plot in the report.\n")
    else:
        why = (f"{_code(r.backbone)} at {r.size} px{_describe(r.backbone)}: the default backbone, chosen for phones "
               f"(small, fast, int8-friendly) and because ImageNet features transfer well to everyday photos. Its "
               f"pooled features feed a softmax layer trained on your images.\n")
    return ["## Backbone and why\n", why]


def _figures_rows(r: _Run) -> list[str]:
    """Metrics table rows: agreement, MACs, sizes, latencies, exports."""
    m, figs = r.m, r.figs
    rows = [f"| {key.replace('_', ' ')} (exported model vs host) | {_pct(m[key])} |"
            for key in ("agreement_fp32", "agreement_int8") if key in m]
    if figs.get("macs"):
        rows.append(f"| MACs per image | {figs['macs'] / 1e6:.1f} M |")
    for key in ("fp32", "int8"):
        f = figs[key]
        if f["model_mb"] is not None:
            rows.append(f"| `{f['file']}` size | {f['model_mb']:.2f} MB |")
        if f["latency_ms"] is not None:
            rows.append(f"| `{f['file']}` latency, 1 image, this computer's CPU | {f['latency_ms']:.2f} ms |")
    for fmt, rec in (m.get("exports") or {}).items():
        if "agreement" in rec:
            rows.append(f"| {_md(fmt)} export agrees with ONNX (fp32) | {_pct(rec['agreement'])} |")
        if "agreement_int8" in rec:
            rows.append(f"| {_md(fmt)} export agrees with ONNX (int8) | {_pct(rec['agreement_int8'])} |")
    return rows


def _metrics(r: _Run) -> list[str]:
    m = r.m
    lines = ["## Metrics (validation)\n", f"| | value |\n|---|---|\n| accuracy | {_pct(m.get('val_accuracy'))} |"]
    if "train_accuracy" in m:
        lines.append(f"| training accuracy | {_pct(m.get('train_accuracy'))} |")
    lines += _figures_rows(r) + [""]
    per_class = m.get("per_class") or {}
    if per_class:
        lines.append("| class | precision | recall | validation images |\n|---|---|---|---|")
        for c in r.labels:
            row = per_class.get(c) or {}
            lines.append(f"| {_md(c)} | {row.get('precision', 0):.3f} | {row.get('recall', 0):.3f} | "
                         f"{_md(row.get('support', '?'))} |")
        lines.append("")
    return lines


def _baselines(r: _Run) -> list[str]:
    base = r.m.get("baselines") if isinstance(r.m.get("baselines"), dict) else {}
    rows = [(k.replace("_", " "), v.get("val_accuracy")) for k, v in base.items()
            if isinstance(v, dict) and v.get("val_accuracy") is not None]
    if not rows:
        return ["## Baselines\n",
                "No baseline was recorded for this run (`edgetl demo` shows the raw-pixel baseline on digits).\n"]
    return (["## Baselines\n", "| model | validation accuracy |\n|---|---|"]
            + [f"| {_md(k)} | {_pct(v)} |" for k, v in rows]
            + [f"| **this model** | **{_pct(r.m.get('val_accuracy'))}** |\n"])


def _limits(r: _Run) -> list[str]:
    val = r.counts.get("val", "?")
    few = isinstance(val, int) and val < 200
    val = _md(val)
    return [
        "## Intended use and limits\n",
        f"- Intended: labelling photos like the training photos into exactly these {len(r.labels)} classes, on the "
        f"device, offline. It always answers one of them: an image of something else still gets a label, "
        f"so check the probability (e.g. ignore answers below 0.5) or add an \"other\" class.",
        f"- Validated on {val} images only"
        + (": with so few, the accuracy above is uncertain by several points." if few else ".")
        + " Photos taken with other cameras, light or backgrounds than the training ones may do worse; "
        "evaluate on your own held-out photos with `edgetl evaluate`.",
        "- The backbone was pretrained on ImageNet, whose biases (content, places, people) it carries. "
        "Not for decisions about people, medical or safety use.",
        "- The int8 models are smaller and faster; their predictions can differ from fp32 on a few "
        "borderline images (agreement above).\n",
    ]


def _run_python(r: _Run) -> list[str]:
    return ["## Run it\n", "### Python (ONNX Runtime, no torch)\n",
            "```python\nfrom edgetl.runtime import Predictor\n\n"
            f"p = Predictor(\"{r.name}/\", int8=True)         # model.int8.onnx; int8=False for model.onnx\n"
            "print(p.predict([\"photo.jpg\"])[0])          # Prediction(label=..., probability=..., index=...)\n```\n",
            f"or {_code(f'edgetl predict {r.name}/ photo.jpg --json')}.\n"]


def _run_android(r: _Run) -> list[str]:
    size, depth = r.size, 1 if r.channels == "L" else 3
    return [
        "### Android\n",
        "LiteRT (`edgetl export RUN_DIR --format tflite --int8` writes `model.tflite`, `model.int8.tflite`, "
        f"`model.tflite.json`): input `[1, {size}, {size}, {depth}]` float32 NHWC, normalised as above; output "
        "`probabilities` in `labels.txt` order.\n",
        "```kotlin\n// build.gradle: implementation(\"com.google.ai.edge.litert:litert:2.+\")\n"
        "val interpreter = Interpreter(FileUtil.loadMappedFile(context, \"model.int8.tflite\"))\n"
        f"val input = ByteBuffer.allocateDirect(4 * {size} * {size} * {depth}).order(ByteOrder.nativeOrder())\n"
        f"// for each pixel of the {size}x{size} centre crop: putFloat((value - mean[c]) / std[c])\n"
        f"val output = Array(1) {{ FloatArray({len(r.labels)}) }}\n"
        "interpreter.run(input, output)\n"
        "val best = output[0].indices.maxBy { output[0][it] }   // labels[best]\n```\n",
        "Or ONNX Runtime Android (`com.microsoft.onnxruntime:onnxruntime-android`) with `model.onnx`: "
        "input `input` N×C×H×W float32, output `probabilities`.\n",
    ]


def _run_ios(r: _Run) -> list[str]:
    return [
        "### iOS\n",
        "Core ML (`edgetl export RUN_DIR --format coreml [--int8]` writes `model.mlpackage`): an image "
        "classifier with the labels and the normalisation inside; Vision does the resize and crop.\n",
        "```swift\nlet model = try VNCoreMLModel(for: MLModel(contentsOf: compiledURL))  // Xcode compiles "
        "model.mlpackage\n"
        "let request = VNCoreMLRequest(model: model) { request, _ in\n"
        "    let best = (request.results as? [VNClassificationObservation])?.first\n"
        "    print(best?.identifier ?? \"?\", best?.confidence ?? 0)\n}\n"
        "request.imageCropAndScaleOption = .centerCrop\n"
        "try VNImageRequestHandler(cgImage: image).perform([request])\n```\n",
        "Core ML predictions need macOS or iOS: edgetl checks the converted model's spec (input, outputs, labels) "
        "on any machine but cannot run it on Linux.\n",
    ]


def _files(r: _Run) -> list[str]:
    files = sorted(f for f in os.listdir(r.run_dir) if not f.startswith("."))
    return ["## Files\n", ", ".join(f"`{f}`" for f in files) + "\n"]


# The card, section by section, in order.
SECTIONS = (_intro, _data, _backbone, _metrics, _baselines, _limits, _run_python, _run_android, _run_ios, _files)


def render_model_card(run_dir: str) -> str:
    """The Markdown text of RUN_DIR/README.md."""
    run = _Run.load(os.fspath(run_dir))
    return "\n".join(line for section in SECTIONS for line in section(run))


def write_model_card(run_dir) -> str:
    """Write RUN_DIR/README.md (temp + rename); return its path."""
    run_dir = os.fspath(run_dir)
    text = render_model_card(run_dir)
    return write_text_atomic(os.path.join(run_dir, CARD), text)
