"""src/edgetl/web/preprocess.js in a real headless Chromium: the tensor it
computes from an image file must be the one the Python side computes
(``InputSpec.to_array(to_image(path))``, which ``Predictor.preprocess`` runs),
within 1/255 per element for >= 99.9 % of the elements of every image set,
on real images: scikit-learn digits, scikit-image photos as PNG and JPEG,
EXIF-rotated and grey JPEGs, transparency, palettes.

The Python tensors are written beside the images as raw float32 files; the
page fetches each image, runs decodeImage + toTensor, fetches the Python
tensor and returns per-image counts (elements, within 1/255, exactly equal,
largest difference), so tens of megabytes of floats never cross the
DevTools protocol. One tensor per set also comes back whole (base64) and is
compared with numpy, which checks the in-page comparison itself."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from edgetl.data.input_spec import InputSpec
from edgetl.runtime.predictor import to_image
from webtools import serve

PREPROCESS_JS = os.path.join(os.path.dirname(__file__), "..", "..", "src", "edgetl", "web", "preprocess.js")

TOL = 1 / 255
MIN_WITHIN = 0.999

SPECS = {
    "rgb224-bilinear": InputSpec(224, 0.875),
    "l32-crop1": InputSpec(32, 1.0, mean=(127.0,), std=(128.0,), channels="L"),
    "rgb224-bicubic-imagenet": InputSpec(224, 0.875, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375),
                                         resample="bicubic"),
}

PAGE = """<!doctype html><meta charset="utf-8"><title>preprocess.js test</title><link rel="icon" href="data:,">
<script type="module">
import * as P from './preprocess.js';
window.P = P;

const bytesOf = async (url) => {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
};
const f32Of = async (url) => new Float32Array((await bytesOf(url)).buffer);
window.b64 = (u8) => {
  let s = '';
  for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode(...u8.subarray(i, i + 0x8000));
  return btoa(s);
};
// image: a URL, or {rgba, width, height} for raw RGBA bytes read as ImageData.
const decode = async (image) => {
  if (typeof image === 'string') return P.decodeImage(await (await fetch(image)).blob(), image);
  const rgba = new Uint8ClampedArray((await bytesOf(image.rgba)).buffer);
  return P.decodeImage(new ImageData(rgba, image.width, image.height), image.rgba);
};

// Per image: decodeImage + toTensor, then counts against the Python tensor.
window.compareAll = async (items, spec) => {
  const out = [];
  for (const { image, ref } of items) {
    const t0 = performance.now();
    const tensor = P.toTensor(await decode(image), spec);
    const ms = performance.now() - t0;
    const want = await f32Of(ref);
    let within = 0, exact = 0, maxAbs = 0;
    for (let i = 0; i < Math.min(tensor.length, want.length); i++) {
      const d = Math.abs(tensor[i] - want[i]);
      if (d === 0) exact++;
      if (d <= 1 / 255) within++;
      if (!(d <= maxAbs)) maxAbs = d;  // NaN sticks
    }
    out.push({ image: typeof image === 'string' ? image : image.rgba, n: tensor.length, refN: want.length,
               within, exact, maxAbs, ms });
  }
  return out;
};

window.tensorB64 = async (image, spec) => {
  const t = P.toTensor(await decode(image), spec);
  return b64(new Uint8Array(t.buffer));
};

// What decodeImage says about a file: the error's name and message, and how long it took.
window.refusal = async (url) => {
  const bytes = await bytesOf(url);
  const t0 = performance.now();
  try {
    const im = await P.decodeImage(new Blob([bytes]), url.split('/').pop());
    return { ok: true, width: im.width, height: im.height };
  } catch (e) {
    return { ok: false, name: e.name, isEdgetl: e instanceof P.EdgetlError, message: e.message,
             ms: performance.now() - t0 };
  }
};

window.sniff = async (url) => P.sniffImage(await bytesOf(url));

// The same image through every kind of input decodeImage takes: RGB as base64 each.
window.everyInput = async (url) => {
  const bytes = await bytesOf(url);
  const blob = new Blob([bytes]);
  const bitmap = await createImageBitmap(blob);
  const canvas = document.createElement('canvas');
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  canvas.getContext('2d').drawImage(bitmap, 0, 0);
  const offscreen = new OffscreenCanvas(bitmap.width, bitmap.height);
  offscreen.getContext('2d').drawImage(bitmap, 0, 0);
  const imageData = canvas.getContext('2d').getImageData(0, 0, bitmap.width, bitmap.height);
  const img = new Image();
  img.src = URL.createObjectURL(blob);
  const inputs = { blob, file: new File([bytes], 'x.png'), arrayBuffer: bytes.slice().buffer, uint8: bytes, img,
                   canvas, offscreen, bitmap, imageData };
  const out = {};
  for (const [kind, input] of Object.entries(inputs)) out[kind] = b64((await P.decodeImage(input, kind)).rgb);
  out.bitmapStillOpen = bitmap.width > 0;  // decodeImage must not close the caller's bitmap
  return out;
};
window.ready = true;
</script>"""


# ---------------------------------------------------------------------------
# The images
# ---------------------------------------------------------------------------

def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _png_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR chunk, nothing else: decoding it would fail."""
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))


def _write_images(root: str) -> dict[str, list[str]]:
    """Image sets (relative paths under ``root``), by kind."""
    import skimage.data as sd

    from edgetl.demo import write_digits_folder

    sets: dict[str, list[str]] = {}

    def save(kind: str, image: Image.Image, name: str, **kw) -> None:
        os.makedirs(os.path.join(root, kind), exist_ok=True)
        image.save(os.path.join(root, kind, name), **kw)
        sets.setdefault(kind, []).append(f"{kind}/{name}")

    digits = write_digits_folder(os.path.join(root, "digits-all"))
    os.makedirs(os.path.join(root, "digits"))
    for path in digits[:24]:  # 8 x 8 grey PNGs: upscaled 32 x by the 224 specs
        name = os.path.basename(path)
        shutil.copy(path, os.path.join(root, "digits", name))
        sets.setdefault("digits", []).append(f"digits/{name}")
    shutil.rmtree(os.path.join(root, "digits-all"))

    photos = {name: Image.fromarray(getattr(sd, name)()) for name in ("astronaut", "chelsea", "coffee", "rocket")}
    camera = Image.fromarray(sd.camera())  # grey
    for name, image in photos.items():
        save("photos-png", image, f"{name}.png")
        save("photos-jpeg", image, f"{name}.jpg", quality=90, subsampling="4:2:0")
    save("photos-png", camera, "camera.png")
    small = photos["chelsea"].resize((96, 64), Image.Resampling.LANCZOS)  # upscaled by the 224 specs
    save("photos-png", small, "chelsea-small.png")
    save("photos-jpeg", small, "chelsea-small.jpg", quality=90, subsampling="4:2:0")

    save("grey-jpeg", camera, "camera.jpg", quality=90)
    save("grey-jpeg", Image.fromarray(sd.moon()), "moon.jpg", quality=90)

    for orientation in (6, 3, 8):  # 6: a phone held upright
        save("exif-jpeg", photos["chelsea"], f"chelsea-o{orientation}.jpg", quality=90, exif=_exif(orientation))
    save("exif-jpeg", photos["coffee"], "coffee-o6.jpg", quality=90, exif=_exif(6))

    yy, xx = np.mgrid[0:512, 0:512]
    alpha = np.clip(255 * (1.15 - np.hypot(yy - 256, xx - 256) / 260), 0, 255).astype(np.uint8)  # 0 in the corners
    save("transparency", Image.fromarray(np.dstack([sd.astronaut(), alpha]), "RGBA"), "astronaut-rgba.png")
    save("transparency", Image.fromarray(np.dstack([sd.camera(), alpha]), "LA"), "camera-la.png")
    palette = photos["chelsea"].quantize(64)
    save("transparency", palette, "chelsea-palette.png")
    save("transparency", palette, "chelsea-palette-trns.png", transparency=bytes((i * 4) % 256 for i in range(64)))
    save("transparency", palette, "chelsea-palette-trns.gif", transparency=3)

    save("other-formats", photos["coffee"], "coffee.webp", quality=90)
    save("other-formats", photos["chelsea"], "chelsea-o6.webp", quality=90, exif=_exif(6))
    save("other-formats", photos["rocket"], "rocket.bmp")
    save("other-formats", palette, "chelsea.gif")

    refuse = os.path.join(root, "refuse")
    os.makedirs(refuse)
    with open(os.path.join(refuse, "notes.png"), "w") as fh:
        fh.write("these are my holiday notes, not a picture\n")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(os.path.join(refuse, "dot.png"))
    with open(os.path.join(refuse, "bomb.png"), "wb") as fh:
        fh.write(_png_header(10_000, 10_000))
    # A JPEG that is only a frame header saying 8000 x 8000 (64 MP).
    sof = b"\xff\xc0\x00\x11\x08" + struct.pack(">HH", 8000, 8000) + b"\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    with open(os.path.join(refuse, "bomb.jpg"), "wb") as fh:
        fh.write(b"\xff\xd8" + sof + b"\xff\xd9")
    open(os.path.join(refuse, "empty.jpg"), "wb").close()
    buf = io.BytesIO()
    photos["chelsea"].save(buf, "JPEG", quality=90)
    with open(os.path.join(refuse, "truncated.jpg"), "wb") as fh:
        fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
    return sets


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The served folder: preprocess.js, the page, the images and, beside
    each image, the Python tensor for each spec (``.<spec>.f32``)."""
    root = str(tmp_path_factory.mktemp("preprocess-site"))
    shutil.copy(PREPROCESS_JS, root)
    with open(os.path.join(root, "index.html"), "w") as fh:
        fh.write(PAGE)
    sets = _write_images(root)
    for paths in sets.values():
        for rel in paths:
            image = to_image(os.path.join(root, rel))  # what Predictor.preprocess decodes
            for key, spec in SPECS.items():
                spec.to_array(image).tofile(os.path.join(root, f"{rel}.{key}.f32"))
    return root, sets


@pytest.fixture(scope="module")
def page(browser, site):
    """One page for the module, its errors collected in ``page.errors``."""
    root, _ = site
    with serve(root) as url:
        context = browser.new_context()
        pg = context.new_page()
        pg.errors = []
        pg.on("pageerror", lambda exc: pg.errors.append(f"pageerror: {exc}"))
        pg.on("console", lambda msg: msg.type == "error" and pg.errors.append(f"console: {msg.text}"))
        pg.goto(url + "index.html")
        pg.wait_for_function("window.ready === true", timeout=30000)
        yield pg
        context.close()


def _spec_json(spec: InputSpec) -> dict:
    return json.loads(spec.to_json())


# ---------------------------------------------------------------------------
# The tensors
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["digits", "photos-png", "photos-jpeg", "grey-jpeg", "exif-jpeg", "transparency",
                                  "other-formats"])
def test_tensor_matches_python(page, site, kind):
    root, sets = site
    paths = sets[kind]
    n = within = exact = 0
    worst = (0.0, "")
    lines = []
    for key, spec in SPECS.items():
        items = [{"image": rel, "ref": f"{rel}.{key}.f32"} for rel in paths]
        for r in page.evaluate("([items, spec]) => compareAll(items, spec)", [items, _spec_json(spec)]):
            assert r["n"] == r["refN"], f"{r['image']} {key}: {r['n']} values, Python has {r['refN']}"
            n, within, exact = n + r["n"], within + r["within"], exact + r["exact"]
            if r["maxAbs"] > worst[0]:
                worst = (r["maxAbs"], f"{r['image']} {key}")
            if r["exact"] < r["n"]:
                lines.append(f"  {r['image']} {key}: {r['exact'] / r['n']:.5%} exact, max |diff| {r['maxAbs']}")
    # The in-page comparison, checked with numpy on one tensor of the set.
    rel, key = paths[0], "rgb224-bilinear"
    got = np.frombuffer(base64.b64decode(page.evaluate("([i, s]) => tensorB64(i, s)", [rel, _spec_json(SPECS[key])])),
                        np.float32)
    want = SPECS[key].to_array(to_image(os.path.join(root, rel))).ravel()
    assert got.shape == want.shape
    (first,) = page.evaluate("([items, spec]) => compareAll(items, spec)",
                             [[{"image": rel, "ref": f"{rel}.{key}.f32"}], _spec_json(SPECS[key])])
    diff = np.abs(got.astype(np.float64) - want)
    assert first["exact"] == int((diff == 0).sum()) and first["within"] == int((diff <= TOL).sum())

    print(f"\n{kind}: {len(paths)} images x {len(SPECS)} specs, {n:,} values: {within / n:.5%} within 1/255, "
          f"{exact / n:.5%} exactly equal, largest |diff| {worst[0]:.6g} ({worst[1] or '-'})")
    print("\n".join(lines))
    assert within / n >= MIN_WITHIN, f"{kind}: only {within / n:.4%} of the values within 1/255 of Python's"
    assert not page.errors, page.errors


def test_resize_is_pillows_exactly(page, site):
    """Pillow's resampling itself, away from any decoder: random pixels given
    as ImageData, sizes that take every path of Resample.c (integer-crop
    shortcut, no-op, upscale, downscale, one axis only, and the vertical pass
    first for tall images, which Pillow does since 13.0): the tensors must be
    bit-identical."""
    root, _ = site
    rng = np.random.default_rng(0)
    sizes = [(256, 256), (224, 224), (32, 32), (9, 13), (640, 480), (257, 300), (33, 1000), (1000, 37), (120, 700),
             (300, 451), (8, 8)]
    specs = [*SPECS.values(), InputSpec(224, 1.0, resample="bicubic", channels="L", mean=(0.5,), std=(64.0,)),
             InputSpec(8, 0.1), InputSpec(32, 1.0)]
    os.makedirs(os.path.join(root, "raw"), exist_ok=True)
    items = {i: [] for i in range(len(specs))}
    for w, h in sizes:
        for grey in (False, True):
            pixels = rng.integers(0, 256, (h, w, 1 if grey else 3), dtype=np.uint8)
            image = Image.fromarray(pixels[:, :, 0] if grey else pixels, "L" if grey else "RGB")
            rgba = np.concatenate([np.repeat(pixels, 3 // pixels.shape[2], 2), np.full((h, w, 1), 255, np.uint8)], 2)
            stem = f"raw/{w}x{h}{'-grey' if grey else ''}"
            rgba.tofile(os.path.join(root, stem + ".rgba"))
            for i, spec in enumerate(specs):
                spec.to_array(image).tofile(os.path.join(root, f"{stem}.{i}.f32"))
                items[i].append({"image": {"rgba": stem + ".rgba", "width": w, "height": h}, "ref": f"{stem}.{i}.f32"})
    bad = []
    for i, spec in enumerate(specs):
        for r in page.evaluate("([items, spec]) => compareAll(items, spec)", [items[i], _spec_json(spec)]):
            if r["exact"] != r["n"] or r["n"] != r["refN"]:
                bad.append(f"{r['image']} {spec}: {r['n'] - r['exact']} of {r['n']} differ (max {r['maxAbs']})")
    assert not bad, "\n".join(bad)
    assert not page.errors, page.errors


# ---------------------------------------------------------------------------
# Refusals, header sniffing, inputs
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name, says", [
    ("notes.png", "notes.png: not a readable image (not JPEG, PNG, BMP, GIF or WebP, or damaged)"),
    ("dot.png", "dot.png: image is too small to classify (1 x 1 pixels"),
    ("bomb.png", "bomb.png: image is too large to decode safely (10000 x 10000 pixels, limit 50,000,000)"),
    ("bomb.jpg", "bomb.jpg: image is too large to decode safely (8000 x 8000 pixels"),
    ("empty.jpg", "empty.jpg: empty file (0 bytes)"),
    ("truncated.jpg", "truncated.jpg: not a readable image"),
])
def test_refusals(page, name, says):
    r = page.evaluate("(url) => refusal(url)", f"refuse/{name}")
    assert not r["ok"], f"{name} was decoded ({r}); it must be refused"
    assert r["name"] == "EdgetlError" and r["isEdgetl"]
    assert r["message"].startswith(says), r["message"]
    assert "\n" not in r["message"] and "; " in r["message"], "one line: what is wrong; how to fix it"
    if name.startswith("bomb"):
        # From the header alone: nothing is decoded (the file holds no pixels to decode anyway).
        assert r["ms"] < 100, f"{name} took {r['ms']:.0f} ms to refuse"


def test_sniff_agrees_with_pillow(page, site):
    root, sets = site
    paths = [p for kind in sets for p in sets[kind][:3]]
    for rel in paths:
        with Image.open(os.path.join(root, rel)) as im:
            want = {"format": {"MPO": "JPEG"}.get(im.format, im.format), "width": im.size[0], "height": im.size[1]}
        assert page.evaluate("(u) => sniff(u)", rel) == want, rel
    assert page.evaluate("(u) => sniff(u)", "refuse/bomb.png") == {"format": "PNG", "width": 10000, "height": 10000}
    assert page.evaluate("(u) => sniff(u)", "refuse/notes.png") is None
    assert page.evaluate("() => P.sniffImage(new Uint8Array([0x89, 0x50, 0x4e, 0x47]))") is None


def test_every_input_kind_gives_the_same_pixels(page, site):
    root, sets = site
    rel = "photos-png/chelsea.png"
    want = np.asarray(to_image(os.path.join(root, rel)).convert("RGB")).ravel()
    out = page.evaluate("(u) => everyInput(u)", rel)
    assert out.pop("bitmapStillOpen") is True
    for kind, data in out.items():
        got = np.frombuffer(base64.b64decode(data), np.uint8)
        assert got.shape == want.shape and (got == want).all(), kind
    assert not page.errors, page.errors


def test_to_tensor_out_and_bad_spec(page, site):
    """toTensor writes into a slot of a batch, and refuses a bad spec or `out` in one line."""
    url = site[1]["digits"][0]
    r = page.evaluate("""async ([url, spec]) => {
        const im = await P.decodeImage(await (await fetch(url)).blob());
        const batch = new Float32Array(3 * 32 * 32).fill(7);
        const view = P.toTensor(im, spec, batch.subarray(1024, 2048));
        const attempts = [[{...spec, channels: 'RGBA'}], [{...spec, image_size: 4}], [{...spec, std: [0]}],
                          [{...spec, resample: 'lanczos'}], [null], [spec, new Float32Array(5)]];
        const errors = attempts.map(([bad, out]) => {
          try { P.toTensor(im, bad, out); return null; } catch (e) { return e.name + ': ' + e.message; }
        });
        return {same: view.buffer === batch.buffer, before: batch[1023], after: batch[2048],
                written: Array.from(batch.subarray(1024, 2048)).every((v) => v !== 7), errors};
    }""", [url, _spec_json(SPECS["l32-crop1"])])
    assert r["same"] and r["before"] == 7 and r["after"] == 7 and r["written"]
    for message in r["errors"]:
        assert message and message.startswith("EdgetlError: ") and "\n" not in message, r["errors"]
