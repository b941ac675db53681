"""The screenshots of edgetl studio in docs/: a real studio (`edgetl studio
PROJECT --no-browser`, 127.0.0.1, a free port) on a new project of real images (scikit-learn's
digits as PNG files), walked step by step in headless Debian chromium driven
by Playwright for Python, as a user would: classes made and images uploaded
in the page, a training followed to its end, a confusion-matrix cell opened,
a photo previewed, a web export made.

    python bench/studio_screenshots.py [--out docs] [--classes 0,1,2] [--per-class 30]

Writes OUT/studio-gather.png, studio-train.png, studio-results.png,
studio-preview.png, studio-export.png: 1280 CSS px wide, at most
``--max-height`` px tall, each squeezed to a 256-colour palette when the
plain PNG is over ``--max-kb``. The feature cache goes to a temporary folder
(deleted at the end) unless EDGETL_CACHE_DIR is set.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time

from bench_studio import Studio  # the real 'edgetl studio' in a subprocess (bench/ is on sys.path)

WIDTH = 1280
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]


def save(page, path: str, max_height: int, max_kb: int, clip_top: int = 0) -> None:
    """A full-page screenshot from ``clip_top``, at most ``max_height`` tall;
    a palette PNG when the plain one is too big."""
    from PIL import Image

    page.evaluate("window.scrollTo(0, 0)")  # the sticky header at the top, not where the last click scrolled
    page.wait_for_timeout(200)
    height = page.evaluate("document.documentElement.scrollHeight")
    clip = {"x": 0, "y": clip_top, "width": WIDTH, "height": min(max_height, height - clip_top)}
    data = page.screenshot(full_page=True, clip=clip, animations="disabled", caret="hide")
    if len(data) > max_kb * 1024:
        img = Image.open(io.BytesIO(data)).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                                                                    dither=Image.Dither.NONE)
        out = io.BytesIO()
        img.save(out, "PNG", optimize=True)
        data = out.getvalue()
    with open(path, "wb") as f:
        f.write(data)
    print(f"  {path}: {clip['width']} x {clip['height']} px, {len(data) / 1024:.0f} KB")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs"))
    ap.add_argument("--classes", default="0,1,2", help="digits to use as classes (default: 0,1,2: one validation image wrong)")
    ap.add_argument("--per-class", type=int, default=25, help="images uploaded per class (default: 25)")
    ap.add_argument("--budget", default="none", help="the Train step's budget (default: none)")
    ap.add_argument("--max-height", type=int, default=1800, help="tallest screenshot in px (default: 1800)")
    ap.add_argument("--max-kb", type=int, default=400, help="palette PNG above this size (default: 400)")
    args = ap.parse_args(argv)
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)

    from playwright.sync_api import sync_playwright

    from edgetl.demo import write_digits_folder

    with tempfile.TemporaryDirectory(prefix="edgetl-studio-shots-") as tmp:
        os.environ.setdefault("EDGETL_CACHE_DIR", os.path.join(tmp, "cache"))
        every = os.path.join(tmp, "digits")
        write_digits_folder(every)
        files = {c: sorted(os.path.join(every, c, n) for n in os.listdir(os.path.join(every, c))) for c in classes}
        studio = Studio(os.path.join(tmp, "digits-project"), os.environ["EDGETL_CACHE_DIR"])  # edgetl studio, as a user
        url, token = studio.base, studio.token
        errors: list[str] = []
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
                context = browser.new_context(viewport={"width": WIDTH, "height": 900}, device_scale_factor=1)
                page = context.new_page()
                page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
                page.on("console", lambda msg: msg.type == "error" and errors.append(f"console: {msg.text}"))
                page.set_default_timeout(60000)
                page.goto(f"{url}/?token={token}")
                page.wait_for_selector('body[data-ready="1"]')

                print("gather")
                for c in classes:
                    page.fill("#new-class-name", c)
                    page.click("#new-class-button")
                    page.wait_for_selector(f'#classes li[data-class="{c}"]')
                for c in classes:
                    page.click(f'#classes li[data-class="{c}"]')
                    page.wait_for_function("c => document.querySelector('#current-class').textContent === c", arg=c)
                    page.set_input_files("#upload-files", files[c][:args.per_class])
                    page.wait_for_function("([c, n]) => document.querySelector(`#classes li[data-class='${c}'] .count`)"
                                           "?.textContent === String(n)", arg=[c, args.per_class])
                page.wait_for_function("n => document.querySelectorAll('#thumbs img[data-name]').length === n",
                                       arg=args.per_class)
                page.wait_for_function("() => [...document.querySelectorAll('#thumbs img')].every((i) => i.complete)")
                page.click("#duplicates-refresh")
                page.wait_for_timeout(500)
                save(page, os.path.join(out, "studio-gather.png"), args.max_height, args.max_kb)

                print("train")
                page.click("#tab-train")
                page.select_option("#budget", args.budget)
                page.click("#plan-button")
                page.wait_for_selector("#plan tbody tr", timeout=300000)
                t0 = time.monotonic()
                page.click("#train-button")
                page.wait_for_selector('#train-status[data-status="running"]')
                page.wait_for_selector('#train-status:is([data-status="done"], [data-status="failed"])', timeout=900000)
                status = page.get_attribute("#train-status", "data-status")
                print(f"  training {status} in {time.monotonic() - t0:.1f} s")
                if status != "done":
                    raise SystemExit(f"the training failed: {page.text_content('#train-status')}")
                page.evaluate("document.querySelector('.log-box').open = false")
                save(page, os.path.join(out, "studio-train.png"), args.max_height, args.max_kb)

                print("results")
                page.click("#tab-results")
                page.wait_for_selector("#val-accuracy[data-value]")
                page.wait_for_selector("#confusion td.cell")
                cells = page.evaluate("""() => [...document.querySelectorAll('#confusion td.cell')]
                    .map((td) => [td.dataset.true, td.dataset.pred, Number(td.textContent)])""")
                wrong = sorted((c for c in cells if c[0] != c[1] and c[2]), key=lambda c: -c[2])
                t, p, n = wrong[0] if wrong else max(cells, key=lambda c: c[2])
                page.click(f'#confusion td.cell[data-true="{t}"][data-pred="{p}"]')
                page.wait_for_function("n => document.querySelectorAll('#cell-images figure').length === n", arg=n)
                page.wait_for_function("() => document.querySelector('#search-plot').complete")
                page.wait_for_function("() => [...document.querySelectorAll('#results img')].every((i) => i.complete)")
                save(page, os.path.join(out, "studio-results.png"), args.max_height, args.max_kb)

                print("preview")
                photo = files[classes[-1]][args.per_class + 5]
                page.click("#tab-preview")
                page.set_input_files("#preview-file", photo)
                page.wait_for_selector("#preview-int8 li[data-label]", timeout=120000)
                page.wait_for_selector("#preview-fp32 li[data-label]", timeout=120000)
                save(page, os.path.join(out, "studio-preview.png"), args.max_height, args.max_kb)

                print("export")
                page.click("#tab-export")
                page.click("#export-web")
                page.wait_for_selector('#export-links li[data-format="web"]', timeout=600000)
                save(page, os.path.join(out, "studio-export.png"), args.max_height, args.max_kb)
                context.close()
                browser.close()
        finally:
            studio.close()
    if errors:
        print("page errors:", *errors, sep="\n  ")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
