"""RUN_DIR/README.md: a model card written from the run folder alone."""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass

from ..data.folder import visible
from ..data.input_spec import InputSpec
from ..errors import BundleError
from ..runtime.bundle import INPUT_NAME, KEY_SPEC, LABELS, MODEL_FP32, MODEL_INT8, OUTPUT_NAME, read_model_info
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
    input_spec: InputSpec | None  # validated: its numbers go into the phone snippets

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
                   channels=channels if channels in ("RGB", "L") else "RGB",
                   input_spec=_input_spec(run_dir, spec))


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
    sample = r.m.get("sample")  # the search and the raw-pixel baseline on a sample (training.sampling)
    rows = [(k.replace("_", " "), v.get("val_accuracy")) for k, v in base.items()
            if isinstance(v, dict) and v.get("val_accuracy") is not None]
    if not rows:
        return ["## Baselines\n",
                "No baseline was recorded for this run (`edgetl demo` shows the raw-pixel baseline on digits).\n"]
    return (["## Baselines\n", "| model | validation accuracy |\n|---|---|"]
            + [f"| {_md(k)} | {_pct(v)} |" for k, v in rows]
            + [f"| **this model** | **{_pct(r.m.get('val_accuracy'))}** |\n"]
            + ([f"Sampled: {_md(sample['description'])}.\n"] if isinstance(sample, dict) and sample.get("description")
               else []))


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


# ---------------------------------------------------------------- on the phone
# The snippets are written from the bundle: file names from what the folder
# holds (or what the named export writes), input and output names from the
# bundle contract, and every preprocessing number from its InputSpec.


def _input_spec(run_dir: str, spec: dict) -> InputSpec | None:
    """The bundle's InputSpec, validated (its numbers go into code):
    metrics.json's, else model.onnx's own; None if neither is readable."""
    try:
        return InputSpec(**{**spec, "mean": tuple(spec["mean"]), "std": tuple(spec["std"])})
    except (TypeError, KeyError, ValueError):
        pass
    try:
        return InputSpec.from_json(read_model_info(os.path.join(run_dir, MODEL_FP32)).metadata[KEY_SPEC])
    except (BundleError, KeyError, ValueError, TypeError, AttributeError):
        return None


def _ort_name(onnx_name: str) -> str:
    """What ONNX Runtime's converter ('edgetl export --format ort') names the ORT file of ``onnx_name``."""
    return onnx_name.removesuffix(".onnx") + ".ort"


def app_model_file(run_dir: str) -> str:
    """The model file the phone snippets load: the int8 model in ORT format
    when 'edgetl export --format ort' wrote it, else model.int8.onnx (else the fp32 ones)."""
    for name in (_ort_name(MODEL_INT8), MODEL_INT8, _ort_name(MODEL_FP32), MODEL_FP32):
        if os.path.isfile(os.path.join(run_dir, name)):
            return name
    return MODEL_INT8


def _num(value) -> str:
    return repr(float(value))


def _kotlin_floats(values) -> str:
    return ", ".join(f"{_num(v)}f" for v in values)


def _swift_floats(values) -> str:
    return ", ".join(_num(v) for v in values)


# One pixel (an ARGB Int in Kotlin; r, g, b Ints in Swift) to its channel
# values; grey is Pillow's convert("L"), which the bundle's preprocessing uses.
_KOTLIN_PIXEL = {"RGB": "intArrayOf(p shr 16 and 0xFF, p shr 8 and 0xFF, p and 0xFF)   // R, G, B",
                 "L": "intArrayOf(((p shr 16 and 0xFF) * 19595 + (p shr 8 and 0xFF) * 38470 + (p and 0xFF) * 7471 "
                      "+ 0x8000) shr 16)   // grey, as Pillow's convert(\"L\")"}
_SWIFT_PIXEL = {"RGB": "[r, g, b]",
                "L": "[(r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16]   // grey, as Pillow's convert(\"L\")"}


def _kotlin_ort(spec: InputSpec, model: str, num_labels: int) -> str:
    """ONNX Runtime Android: load ``model``, preprocess a Bitmap as ``spec`` says, run, read the answer."""
    return (
        "// build.gradle: implementation(\"com.microsoft.onnxruntime:onnxruntime-android:latest.release\")\n"
        "import ai.onnxruntime.OnnxTensor\nimport ai.onnxruntime.OrtEnvironment\nimport android.graphics.Bitmap\n"
        "import java.nio.FloatBuffer\nimport kotlin.math.roundToInt\n\n"
        f"const val MODEL_FILE = \"{model}\"   // in app/src/main/assets, with labels.txt\n"
        f"const val LABELS_FILE = \"{LABELS}\"\n"
        f"const val INPUT_NAME = \"{INPUT_NAME}\"          // float32, N x C x H x W (NCHW)\n"
        f"const val OUTPUT_NAME = \"{OUTPUT_NAME}\"  // N x {num_labels}, in {LABELS} order\n"
        f"const val IMAGE_SIZE = {spec.image_size}\n"
        f"const val CROP_FRACTION = {_num(spec.crop_fraction)}   // centre square of this x the shorter side\n"
        f"const val CHANNELS = {spec.num_channels}   // {spec.channels}\n"
        f"val MEAN = floatArrayOf({_kotlin_floats(spec.mean)})   // pixel units, 0-255\n"
        f"val STD = floatArrayOf({_kotlin_floats(spec.std)})\n\n"
        "/** The bundle's preprocessing: the centre square of CROP_FRACTION x the shorter side, scaled to\n"
        f" *  IMAGE_SIZE x IMAGE_SIZE ({spec.resample}), then (value - MEAN[c]) / STD[c], one channel plane after "
        "another. */\n"
        "fun preprocess(bitmap: Bitmap): FloatBuffer {\n"
        "    val side = (CROP_FRACTION * minOf(bitmap.width, bitmap.height)).roundToInt().coerceAtLeast(1)\n"
        "    val square = Bitmap.createBitmap(bitmap, (bitmap.width - side) / 2, (bitmap.height - side) / 2, "
        "side, side)\n"
        "    val image = Bitmap.createScaledBitmap(square, IMAGE_SIZE, IMAGE_SIZE, true)\n"
        "    val pixels = IntArray(IMAGE_SIZE * IMAGE_SIZE)\n"
        "    image.getPixels(pixels, 0, IMAGE_SIZE, 0, 0, IMAGE_SIZE, IMAGE_SIZE)\n"
        "    val plane = IMAGE_SIZE * IMAGE_SIZE\n"
        "    val x = FloatBuffer.allocate(CHANNELS * plane)\n"
        "    for (i in 0 until plane) {\n"
        "        val p = pixels[i]\n"
        f"        val v = {_KOTLIN_PIXEL[spec.channels]}\n"
        "        for (c in 0 until CHANNELS) x.put(c * plane + i, (v[c] - MEAN[c]) / STD[c])\n"
        "    }\n"
        "    return x\n}\n\n"
        "val env = OrtEnvironment.getEnvironment()\n"
        "val session = env.createSession(context.assets.open(MODEL_FILE).readBytes())\n"
        "val labels = context.assets.open(LABELS_FILE).bufferedReader().readLines().filter { it.isNotEmpty() }\n"
        "val shape = longArrayOf(1, CHANNELS.toLong(), IMAGE_SIZE.toLong(), IMAGE_SIZE.toLong())   // N, C, H, W\n"
        "OnnxTensor.createTensor(env, preprocess(bitmap), shape).use { input ->\n"
        "    session.run(mapOf(INPUT_NAME to input)).use { result ->\n"
        "        val probabilities = (result.get(OUTPUT_NAME).get().value as Array<FloatArray>)[0]\n"
        "        val best = probabilities.indices.maxBy { probabilities[it] }   // labels[best], probabilities[best]\n"
        "    }\n}\n"
    )


def _kotlin_litert(spec: InputSpec, model: str, num_labels: int) -> str:
    """LiteRT: the same values in NHWC order (a pixel's channels together)."""
    return (
        "// build.gradle: implementation(\"com.google.ai.edge.litert:litert:2.+\")\n"
        f"val interpreter = Interpreter(FileUtil.loadMappedFile(context, \"{model}\"))\n"
        f"val input = ByteBuffer.allocateDirect(4 * {spec.image_size} * {spec.image_size} * {spec.num_channels})"
        ".order(ByteOrder.nativeOrder())   // 1 x H x W x C (NHWC)\n"
        f"// each pixel of the preprocessed {spec.image_size}x{spec.image_size} image, row by row, then its "
        f"{spec.num_channels} channel(s): input.putFloat((v[c] - MEAN[c]) / STD[c])\n"
        f"val output = Array(1) {{ FloatArray({num_labels}) }}   // {OUTPUT_NAME}\n"
        "interpreter.run(input, output)\n"
        "val best = output[0].indices.maxBy { output[0][it] }   // labels[best]\n"
    )


def _swift_ort(spec: InputSpec, model: str, num_labels: int) -> str:
    """ONNX Runtime's Objective-C API from Swift: the Kotlin snippet's steps on a CGImage."""
    return (
        "// Podfile: pod 'onnxruntime-objc'\nimport CoreGraphics\nimport onnxruntime_objc\n\n"
        f"let modelFile = \"{model}\"   // in the app bundle, with labels.txt\n"
        f"let labelsFile = \"{LABELS}\"\n"
        f"let inputName = \"{INPUT_NAME}\"          // float32, N x C x H x W (NCHW)\n"
        f"let outputName = \"{OUTPUT_NAME}\"  // N x {num_labels}, in {LABELS} order\n"
        f"let imageSize = {spec.image_size}\n"
        f"let cropFraction = {_num(spec.crop_fraction)}   // centre square of this x the shorter side\n"
        f"let channels = {spec.num_channels}   // {spec.channels}\n"
        f"let mean: [Float] = [{_swift_floats(spec.mean)}]   // pixel units, 0-255\n"
        f"let std: [Float] = [{_swift_floats(spec.std)}]\n\n"
        "/// The bundle's preprocessing: the centre square of cropFraction x the shorter side, scaled to\n"
        f"/// imageSize x imageSize ({spec.resample}), then (value - mean[c]) / std[c], one channel plane after "
        "another.\n"
        "func preprocess(_ image: CGImage) -> NSMutableData {\n"
        "    let side = max(1, Int((cropFraction * Double(min(image.width, image.height))).rounded()))\n"
        "    let square = image.cropping(to: CGRect(x: (image.width - side) / 2, y: (image.height - side) / 2,\n"
        "                                           width: side, height: side))!\n"
        "    var rgba = [UInt8](repeating: 0, count: 4 * imageSize * imageSize)\n"
        "    rgba.withUnsafeMutableBytes { buffer in\n"
        "        let context = CGContext(data: buffer.baseAddress, width: imageSize, height: imageSize, "
        "bitsPerComponent: 8,\n"
        "                                bytesPerRow: 4 * imageSize, space: CGColorSpaceCreateDeviceRGB(),\n"
        "                                bitmapInfo: CGImageAlphaInfo.noneSkipLast.rawValue)!\n"
        "        context.interpolationQuality = .medium\n"
        "        context.draw(square, in: CGRect(x: 0, y: 0, width: imageSize, height: imageSize))\n"
        "    }\n"
        "    let plane = imageSize * imageSize\n"
        "    var x = [Float](repeating: 0, count: channels * plane)\n"
        "    for i in 0..<plane {\n"
        "        let r = Int(rgba[4 * i]), g = Int(rgba[4 * i + 1]), b = Int(rgba[4 * i + 2])\n"
        f"        let v = {_SWIFT_PIXEL[spec.channels]}\n"
        "        for c in 0..<channels { x[c * plane + i] = (Float(v[c]) - mean[c]) / std[c] }\n"
        "    }\n"
        "    return NSMutableData(bytes: &x, length: x.count * MemoryLayout<Float>.size)\n}\n\n"
        "let env = try ORTEnv(loggingLevel: .warning)\n"
        "let session = try ORTSession(env: env, modelPath: Bundle.main.path(forResource: modelFile, ofType: nil)!,\n"
        "                             sessionOptions: nil)\n"
        "let labels = try String(contentsOfFile: Bundle.main.path(forResource: labelsFile, ofType: nil)!, "
        "encoding: .utf8)\n"
        "    .split(separator: \"\\n\").map(String.init)\n"
        "let shape: [NSNumber] = [1, NSNumber(value: channels), NSNumber(value: imageSize), "
        "NSNumber(value: imageSize)]  // N, C, H, W\n"
        "let input = try ORTValue(tensorData: preprocess(cgImage), elementType: .float, shape: shape)\n"
        "let outputs = try session.run(withInputs: [inputName: input], outputNames: [outputName], runOptions: nil)\n"
        "let probabilities = try (outputs[outputName]!.tensorData() as Data)\n"
        "    .withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }\n"
        "let best = probabilities.indices.max { probabilities[$0] < probabilities[$1] }!   "
        "// labels[best], probabilities[best]\n"
    )


def _swift_coreml(spec: InputSpec, package: str) -> str:
    """Core ML through Vision: the crop fraction as the region of interest, then Vision's centre crop."""
    compiled = package.removesuffix(".mlpackage")
    return (
        "import CoreML\nimport Vision\n\n"
        f"let coreMLPackage = \"{package}\"   // Xcode compiles it into the app as {compiled}.mlmodelc\n"
        f"let cropFraction = {_num(spec.crop_fraction)}\n"
        f"let compiledURL = Bundle.main.url(forResource: \"{compiled}\", withExtension: \"mlmodelc\")!\n"
        "let model = try VNCoreMLModel(for: MLModel(contentsOf: compiledURL))\n"
        "let request = VNCoreMLRequest(model: model) { request, _ in\n"
        "    let best = (request.results as? [VNClassificationObservation])?.first\n"
        "    print(best?.identifier ?? \"?\", best?.confidence ?? 0)\n}\n"
        "// The centre cropFraction of each side, then its centre square scaled to the model's input: the centre\n"
        "// square of cropFraction x the shorter side, as the bundle's preprocessing.\n"
        "request.regionOfInterest = CGRect(x: (1 - cropFraction) / 2, y: (1 - cropFraction) / 2,\n"
        "                                  width: cropFraction, height: cropFraction)\n"
        "request.imageCropAndScaleOption = .centerCrop\n"
        "try VNImageRequestHandler(cgImage: image).perform([request])\n"
    )


def _ort_check(r: _Run) -> list[str]:
    """What 'edgetl export --format ort' found about the operators, if it ran."""
    rec = (r.m.get("exports") or {}).get("ort")
    if not isinstance(rec, dict) or not isinstance(rec.get("files"), dict):
        return [f"`edgetl export RUN_DIR --format ort` converts the ONNX files to ONNX Runtime's own format "
                f"(`{_ort_name(MODEL_INT8)}` and the others: optimised for the phone's CPU, faster to load), checks "
                f"each against its `.onnx` and lists the operators each needs.\n"]
    package = rec.get("mobile_package") if isinstance(rec.get("mobile_package"), dict) else {}
    missing = package.get("missing") if isinstance(package.get("missing"), list) else []
    version = rec.get("min_runtime_version")
    text = (f"ORT format, checked with {_md(rec.get('converter', 'onnxruntime'))}: "
            + ", ".join(_code(name) for name in rec["files"]) + " each gave the outputs of its `.onnx`; their "
            f"operators (listed in {_code(rec.get('operators_file', '?'))}) all ran on ONNX Runtime's CPU kernels, "
            "which the full `onnxruntime-android` and `onnxruntime-objc` packages have"
            + (f" (version {_md(version)} or newer: an `.ort` file is read by the release that wrote it and later "
               "ones)." if version else "."))
    if missing:
        text += (" The old reduced `onnxruntime-mobile` package (up to 1.18) lacks "
                 + ", ".join(_md(m) for m in missing)
                 + f": use the full packages, or a custom build from {_code(rec.get('config_file', '?'))}.")
    return [text + "\n"]


def _run_android(r: _Run) -> list[str]:
    from ..export.tflite import TFLITE_FP32, TFLITE_INT8, TFLITE_JSON

    spec, model = r.input_spec, app_model_file(r.run_dir)
    if spec is None:
        return ["### Android\n", "This folder's input spec is missing or damaged: re-run `edgetl train`.\n"]
    return [
        "### Android\n",
        f"ONNX Runtime Android (`ai.onnxruntime`) with `{model}` and `{LABELS}` from this folder; every name and "
        "number below is this bundle's. (Image scalers differ a little: Pillow's, which edgetl uses, also reads the "
        "pixels just outside the crop, so the tensor's one-pixel border can differ from edgetl's by a few levels.)\n",
        f"```kotlin\n{_kotlin_ort(spec, model, len(r.labels))}```\n",
        *_ort_check(r),
        f"LiteRT instead: `edgetl export RUN_DIR --format tflite --int8` writes `{TFLITE_FP32}`, `{TFLITE_INT8}` and "
        f"`{TFLITE_JSON}`; the same values go in, in NHWC order `[1, {spec.image_size}, {spec.image_size}, "
        f"{spec.num_channels}]`.\n",
        f"```kotlin\n{_kotlin_litert(spec, TFLITE_INT8, len(r.labels))}```\n",
    ]


def _run_ios(r: _Run) -> list[str]:
    from ..export.coreml import COREML_FP32

    spec, model = r.input_spec, app_model_file(r.run_dir)
    if spec is None:
        return ["### iOS\n", "This folder's input spec is missing or damaged: re-run `edgetl train`.\n"]
    return [
        "### iOS\n",
        f"ONNX Runtime (`onnxruntime-objc`) from Swift, with `{model}`, the same preprocessing:\n",
        f"```swift\n{_swift_ort(spec, model, len(r.labels))}```\n",
        f"Or Core ML (`edgetl export RUN_DIR --format coreml [--int8]` writes `{COREML_FP32}`): an image classifier "
        "with the labels and the normalisation inside; Vision does the resize and crop.\n",
        f"```swift\n{_swift_coreml(spec, COREML_FP32)}```\n",
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
