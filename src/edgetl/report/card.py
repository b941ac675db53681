"""RUN_DIR/README.md: a model card written from the run folder alone."""

from __future__ import annotations

import os

from .run import load_run, model_figures, run_name, write_text_atomic

CARD = "README.md"


def _pct(v) -> str:
    return f"{v:.1%}" if isinstance(v, (int, float)) else "–"


def _describe(backbone: str) -> str:
    try:
        from ..zoo import get_spec

        desc = get_spec(backbone).description
    except Exception:  # an unknown or renamed backbone: the card still gets written
        return ""
    return f" ({desc.rstrip('.')})" if desc else ""


def render_model_card(run_dir: str) -> str:
    run_dir = os.fspath(run_dir)
    m = load_run(run_dir)
    labels = m["labels"]
    name = run_name(run_dir)
    counts = m.get("counts") or {}
    spec = m.get("input_spec") or {}
    chosen = m.get("chosen") if isinstance(m.get("chosen"), dict) else {}
    figs = model_figures(run_dir, m)
    backbone = m.get("backbone", "?")
    size = spec.get("image_size", "?")
    channels = spec.get("channels", "RGB")
    exports = m.get("exports") or {}
    L: list[str] = []
    add = L.append

    add(f"# {name}: an image classifier for {len(labels)} classes\n")
    add(f"Made with edgetl {m.get('edgetl_version', '')} by transfer learning: the convolutional base of "
        f"`{backbone}`, pretrained on ImageNet, is kept frozen and a small head is trained on your photos. "
        f"Everything below comes from this folder (`metrics.json`); the full report with plots is "
        f"[report.html](report.html).\n")

    add("## Data\n")
    per = counts.get("per_class") or {}
    add(f"- {counts.get('images_used', '?')} images used of {counts.get('images_found', '?')} found "
        f"({counts.get('skipped', 0)} skipped: unreadable or not images); {counts.get('train', '?')} to train, "
        f"{counts.get('val', '?')} to validate (stratified split, seed {(m.get('config') or {}).get('seed', '?')}).")
    add("- Classes, in output order (`labels.txt`): " + ", ".join(
        f"`{c}` ({per[c]})" if c in per else f"`{c}`" for c in labels) + ".")
    if per:
        lo, hi = min(per.values()), max(per.values())
        if hi > 2 * lo:
            add(f"- The classes are unbalanced ({lo} to {hi} images): expect lower recall on the small ones.")
    resize = f"{size / float(spec['crop_fraction']):.0f}" if isinstance(size, int) and spec.get("crop_fraction") else "?"
    add(f"- Input: {channels} image, shorter side resized to {resize} px, "
        f"centre crop {size}×{size}, `(pixel − mean) / std` with mean {spec.get('mean')} and std "
        f"{spec.get('std')} (pixel units).\n")

    add("## Backbone and why\n")
    search = m.get("search") if isinstance(m.get("search"), dict) else {}
    cands = [c for c in search.get("candidates") or [] if isinstance(c, dict)]
    if chosen and cands:
        fits = [c for c in cands if c.get("fits_budget", True)]
        add(f"`{backbone}` tapped at `{chosen.get('tap')}` with a `{chosen.get('head')}` head at "
            f"{chosen.get('image_size')} px was chosen by a search over {len(cands)} candidates (tap layer × input "
            f"size × head): the most accurate on validation of the {len(fits)} that fit the device budget "
            f"({_pct(chosen.get('val_accuracy'))}, {(chosen.get('macs') or 0) / 1e6:.1f} M MACs). See the search table "
            f"and the accuracy-vs-MACs plot in the report.\n")
    else:
        add(f"`{backbone}` at {size} px{_describe(backbone)}: the default backbone, chosen for phones (small, fast, "
            f"int8-friendly) and because ImageNet features transfer well to everyday photos. Its pooled features "
            f"feed a softmax layer trained on your images.\n")

    add("## Metrics (validation)\n")
    add(f"| | value |\n|---|---|\n| accuracy | {_pct(m.get('val_accuracy'))} |")
    if "train_accuracy" in m:
        add(f"| training accuracy | {_pct(m.get('train_accuracy'))} |")
    for key in ("agreement_fp32", "agreement_int8"):
        if key in m:
            add(f"| {key.replace('_', ' ')} (exported model vs host) | {_pct(m[key])} |")
    if figs.get("macs"):
        add(f"| MACs per image | {figs['macs'] / 1e6:.1f} M |")
    for key in ("fp32", "int8"):
        f = figs[key]
        if f["model_mb"] is not None:
            add(f"| `{f['file']}` size | {f['model_mb']:.2f} MB |")
        if f["latency_ms"] is not None:
            add(f"| `{f['file']}` latency, 1 image, this computer's CPU | {f['latency_ms']:.2f} ms |")
    for fmt, rec in exports.items():
        if "agreement" in rec:
            add(f"| {fmt} export agrees with ONNX (fp32) | {_pct(rec['agreement'])} |")
        if "agreement_int8" in rec:
            add(f"| {fmt} export agrees with ONNX (int8) | {_pct(rec['agreement_int8'])} |")
    add("")
    per_class = m.get("per_class") or {}
    if per_class:
        add("| class | precision | recall | validation images |\n|---|---|---|---|")
        for c in labels:
            r = per_class.get(c) or {}
            add(f"| {c} | {r.get('precision', 0):.3f} | {r.get('recall', 0):.3f} | {r.get('support', '?')} |")
        add("")

    add("## Baselines\n")
    base = m.get("baselines") if isinstance(m.get("baselines"), dict) else {}
    rows = [(k.replace("_", " "), v.get("val_accuracy")) for k, v in base.items()
            if isinstance(v, dict) and v.get("val_accuracy") is not None]
    if rows:
        add("| model | validation accuracy |\n|---|---|")
        for k, v in rows:
            add(f"| {k} | {_pct(v)} |")
        add(f"| **this model** | **{_pct(m.get('val_accuracy'))}** |\n")
    else:
        add("No baseline was recorded for this run (`edgetl demo` shows the raw-pixel baseline on digits).\n")

    add("## Intended use and limits\n")
    add(f"- Intended: labelling photos like the training photos into exactly these {len(labels)} classes, on the "
        f"device, offline. It always answers one of them: an image of something else still gets a label, "
        f"so check the probability (e.g. ignore answers below 0.5) or add an \"other\" class.")
    add(f"- Validated on {counts.get('val', '?')} images only"
        + (": with so few, the accuracy above is uncertain by several points." if isinstance(counts.get('val'), int)
           and counts['val'] < 200 else ".")
        + " Photos taken with other cameras, light or backgrounds than the training ones may do worse; "
        "evaluate on your own held-out photos with `edgetl evaluate`.")
    add("- The backbone was pretrained on ImageNet, whose biases (content, places, people) it carries. "
        "Not for decisions about people, medical or safety use.")
    add("- The int8 models are smaller and faster; their predictions can differ from fp32 on a few "
        "borderline images (agreement above).\n")

    add("## Run it\n")
    add("### Python (ONNX Runtime, no torch)\n")
    add("```python\nfrom edgetl.runtime import Predictor\n\n"
        f"p = Predictor(\"{name}/\", int8=True)         # model.int8.onnx; int8=False for model.onnx\n"
        "print(p.predict([\"photo.jpg\"])[0])          # Prediction(label=..., probability=..., index=...)\n```\n")
    add(f"or `edgetl predict {name}/ photo.jpg --json`.\n")
    add("### Android\n")
    add("LiteRT (`edgetl export RUN_DIR --format tflite --int8` writes `model.tflite`, `model.int8.tflite`, "
        "`model.tflite.json`): input `[1, "
        f"{size}, {size}, {1 if channels == 'L' else 3}]` float32 NHWC, normalised as above; output "
        "`probabilities` in `labels.txt` order.\n")
    add("```kotlin\n// build.gradle: implementation(\"com.google.ai.edge.litert:litert:2.+\")\n"
        "val interpreter = Interpreter(FileUtil.loadMappedFile(context, \"model.int8.tflite\"))\n"
        f"val input = ByteBuffer.allocateDirect(4 * {size} * {size} * {1 if channels == 'L' else 3})"
        ".order(ByteOrder.nativeOrder())\n"
        f"// for each pixel of the {size}x{size} centre crop: putFloat((value - mean[c]) / std[c])\n"
        f"val output = Array(1) {{ FloatArray({len(labels)}) }}\n"
        "interpreter.run(input, output)\n"
        "val best = output[0].indices.maxBy { output[0][it] }   // labels[best]\n```\n")
    add("Or ONNX Runtime Android (`com.microsoft.onnxruntime:onnxruntime-android`) with `model.onnx`: "
        "input `input` N×C×H×W float32, output `probabilities`.\n")
    add("### iOS\n")
    add("Core ML (`edgetl export RUN_DIR --format coreml [--int8]` writes `model.mlpackage`): an image "
        "classifier with the labels and the normalisation inside; Vision does the resize and crop.\n")
    add("```swift\nlet model = try VNCoreMLModel(for: MLModel(contentsOf: compiledURL))  // Xcode compiles model.mlpackage\n"
        "let request = VNCoreMLRequest(model: model) { request, _ in\n"
        "    let best = (request.results as? [VNClassificationObservation])?.first\n"
        "    print(best?.identifier ?? \"?\", best?.confidence ?? 0)\n}\n"
        "request.imageCropAndScaleOption = .centerCrop\n"
        "try VNImageRequestHandler(cgImage: image).perform([request])\n```\n")
    add("Core ML predictions need macOS or iOS: edgetl checks the converted model's spec (input, outputs, labels) "
        "on any machine but cannot run it on Linux.\n")
    add("## Files\n")
    files = sorted(f for f in os.listdir(run_dir) if not f.startswith("."))
    add(", ".join(f"`{f}`" for f in files) + "\n")
    return "\n".join(L)


def write_model_card(run_dir) -> str:
    """Write RUN_DIR/README.md (temp + rename); return its path."""
    run_dir = os.fspath(run_dir)
    text = render_model_card(run_dir)
    return write_text_atomic(os.path.join(run_dir, CARD), text)
