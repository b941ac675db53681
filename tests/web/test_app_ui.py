"""The exported app's page (index.html + app.js) on an emulated phone, driven
the way a person uses it: predict a photo, teach a new class from five
photos, train, predict again; bad files get a clear message and change
nothing; the state survives a reload, and export / reset / import work; the
live camera predicts a frame."""

from __future__ import annotations

import re
import struct
import zlib

import pytest

from webtools import CHROMIUM, CHROMIUM_FLAGS, serve

# A mid-range Android phone (Pixel 7 class).
PHONE = dict(viewport={"width": 412, "height": 915}, device_scale_factor=2.6, is_mobile=True, has_touch=True,
             user_agent="Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) "
                        "Chrome/120.0.0.0 Mobile Safari/537.36")
NEW = "sevens-new"  # the bundle knows digits 0-4; photos of 7 under this label make a new class


def open_app(browser, url, errors=None, **options):
    context = browser.new_context(**PHONE, **options)
    page = context.new_page()
    if errors is not None:
        errors.watch(page)
    page.on("dialog", lambda dialog: dialog.accept())  # the reset's confirm()
    page.goto(url + "web/index.html")
    page.wait_for_function("document.body.dataset.ready === '1' || document.body.dataset.failed === '1'",
                           timeout=30000)
    assert page.get_attribute("body", "data-ready") == "1", page.text_content("#message")
    return context, page


def idle(page):
    """Wait until the action started by the last click / file choice is over."""
    page.wait_for_function("!document.body.dataset.busy", timeout=30000)


def message(page):
    return page.eval_on_selector("#message", "e => ({kind: e.className, text: e.textContent})")


def predictions(page):
    return page.eval_on_selector_all(
        "#predictions li", "ls => ls.map(l => [l.dataset.label, Number(l.dataset.probability)])")


def counts(page):
    return page.eval_on_selector_all(
        "#counts li", "ls => Object.fromEntries(ls.map(l => [l.dataset.label, Number(l.dataset.count)]))")


def predict(page, path):
    page.set_input_files("#predict-file", path)
    idle(page)
    return predictions(page)


def add(page, paths, label):
    page.fill("#label-input", label)
    page.set_input_files("#examples-file", paths)
    page.click("#add-button")
    idle(page)


@pytest.fixture
def bad_files(tmp_path):
    """A text file named .png, a 1x1 PNG, and a PNG header claiming 10,000 x 10,000 pixels."""
    from PIL import Image

    notes = tmp_path / "notes.png"
    notes.write_text("these are my notes, not a photo\n")
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1), (200, 10, 10)).save(tiny)
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", 10000, 10000, 8, 2, 0, 0, 0)
    huge = tmp_path / "huge.png"
    huge.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr)))
    return {"notes.png": (str(notes), "readable"), "tiny.png": (str(tiny), "small"),
            "huge.png": (str(huge), "10000 x 10000")}


def test_predict_teach_a_new_class_train_and_predict_again(browser, digits_bundle, page_errors, tmp_path):
    sevens = [path for _url, path in digits_bundle.new]
    _url, zero, digit = digits_bundle.held_out[0]
    with serve(digits_bundle.run_dir) as url:
        context, page = open_app(browser, url, page_errors, accept_downloads=True)
        assert page.evaluate("typeof window.edgetl.load === 'function' && window.app.labels.length") == 5
        assert page.text_content("#model-precision") == "int8"
        assert page.text_content("#model-classes") == "5 classes"
        assert counts(page) == {d: page.evaluate(f"app.counts()['{d}']") for d in "01234"}

        top = predict(page, zero)
        assert [label for label, _p in top][0] == digit and len(top) == 3
        assert all(a[1] >= b[1] for a, b in zip(top, top[1:])) and 0 < sum(p for _l, p in top) <= 1.0001
        assert re.fullmatch(r"\d+ ms", page.text_content("#latency"))
        assert page.is_visible("#preview")

        before = counts(page)
        add(page, sevens[:5], NEW)
        assert message(page)["kind"] == "ok" and NEW in message(page)["text"]
        assert counts(page) == {**before, NEW: 5}
        assert page.text_content("#model-classes") == "6 classes"
        assert NEW in page.eval_on_selector_all("#label-options option", "os => os.map(o => o.value)")

        page.fill("#epochs", "20")
        page.click("#train-button")
        idle(page)
        assert message(page)["kind"] == "ok" and "Saved" in message(page)["text"], message(page)
        losses = page.evaluate("app.history.map(h => h.loss)")
        assert len(losses) == 20 and losses[-1] < losses[0]
        assert float(page.text_content("#loss-value")) == pytest.approx(losses[-1], abs=1e-4)
        points = page.get_attribute("#loss-chart polyline:not(.old)", "points").split()
        assert len(points) == 20

        # Digit 7 scans the new class never saw are now predicted as the new class.
        tops = [predict(page, path)[0][0] for path in sevens[5:9]]
        assert tops.count(NEW) >= 3, tops
        assert predict(page, zero)[0][0] == digit

        # A label is text, never markup.
        add(page, sevens[9:10], '<img src=x onerror="window.pwned=1">')
        assert page.evaluate("window.pwned") is None
        assert counts(page)['<img src=x onerror="window.pwned=1">'] == 1

        # The state is kept: a reload restores it; export, reset, import.
        learned = counts(page)
        page.reload()
        page.wait_for_function("document.body.dataset.ready === '1'", timeout=30000)
        assert counts(page) == learned and "Restored" in message(page)["text"]
        with page.expect_download() as download:
            page.click("#export-state")
        state = str(tmp_path / "state.safetensors")
        download.value.save_as(state)
        assert download.value.suggested_filename.endswith(".safetensors")
        page.click("#reset-button")
        idle(page)
        assert counts(page) == before and page.text_content("#model-classes") == "5 classes"
        page.set_input_files("#import-state", state)
        idle(page)
        assert counts(page) == learned and message(page)["kind"] == "ok"
        page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
        context.close()
    assert page_errors == []


def test_bad_files_get_a_clear_message_and_change_nothing(browser, digits_bundle, bad_files, page_errors):
    good = digits_bundle.new[0][1]
    with serve(digits_bundle.run_dir) as url:
        context, page = open_app(browser, url, page_errors)
        predict(page, good)
        before = counts(page)
        for name, (path, says) in bad_files.items():
            add(page, [good, path], "broken")
            shown = message(page)
            assert shown["kind"] == "error" and name in shown["text"] and says in shown["text"], shown
            assert counts(page) == before  # all or nothing: not even the good photo, and no class "broken"
            assert predict(page, path) == []
            shown = message(page)
            assert shown["kind"] == "error" and name in shown["text"], shown
            assert not page.is_visible("#preview")
        # Nothing to add, no label: said, not thrown.
        page.fill("#label-input", "")
        page.set_input_files("#examples-file", [good])
        page.click("#add-button")
        idle(page)
        assert message(page)["kind"] == "error" and "label" in message(page)["text"]
        assert counts(page) == before
        # The buttons work again after every error.
        assert page.is_enabled("#train-button") and page.is_enabled("#predict-file")
        context.close()
    assert page_errors == []


def test_the_live_camera_predicts_a_frame(browser, digits_bundle):
    """Chromium's fake camera (a moving test pattern) stands in for a phone's."""
    fake = browser.browser_type.launch(
        executable_path=CHROMIUM, headless=True,
        args=CHROMIUM_FLAGS + ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"])
    try:
        with serve(digits_bundle.run_dir) as url:
            context, page = open_app(fake, url, permissions=["camera"])
            page.click("#camera-start")
            idle(page)
            page.wait_for_function("document.getElementById('camera-video').videoWidth > 0", timeout=10000)
            page.click("#camera-snap")
            idle(page)
            assert len(predictions(page)) == 3 and message(page)["kind"] == "ok", message(page)
            assert re.fullmatch(r"\d+ ms", page.text_content("#latency"))
            page.click("#camera-stop")
            assert not page.is_visible("#camera-video")
            context.close()
    finally:
        fake.close()
