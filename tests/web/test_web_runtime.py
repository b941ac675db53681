"""The web runtime (issue 14) in a real browser: the exported app's files, its
predictions against ``edgetl predict``, learning in the browser against
``Personalizer.fit``, the state in IndexedDB (reload, a tab closed mid-save),
bad input, and the app offline."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import load as load_safetensors

from webtools import open_harness, serve
from edgetl.runtime import Personalizer, Predictor

FIT_EPOCHS = 5


def test_export_writes_a_complete_offline_app(digits_bundle):
    web = os.path.join(digits_bundle.run_dir, "web")
    info = json.load(open(os.path.join(web, "bundle", "bundle.json")))
    assert info["format"] == "edgetl.web/1" and info["precision"] == "int8"
    assert info["labels"] == list("01234") and info["features"] == "bundle/features.int8.onnx"
    for rel in ("index.html", "app.js", "edgetl.js", "preprocess.js", "rng.js", "manifest.webmanifest",
                "icon-192.png", "ort/ort.wasm.min.mjs", "ort/ort-wasm-simd-threaded.wasm", info["features"],
                info["train_step"], info["head"]):
        assert os.path.isfile(os.path.join(web, rel)), rel
    # The service worker caches every file of the app, and nothing else.
    every = sorted("./" + os.path.relpath(os.path.join(r, f), web).replace(os.sep, "/")
                   for r, _d, fs in os.walk(web) for f in fs if f != "sw.js")
    sw = open(os.path.join(web, "sw.js")).read()
    listed = json.loads(sw[sw.index("const FILES = ") + 14 : sw.index(";\nconst VERSION")])
    assert sorted(set(listed) - {"./", "./sw.js"}) == every
    manifest = json.load(open(os.path.join(web, "manifest.webmanifest")))
    assert manifest["start_url"] == "./index.html" and manifest["display"] == "standalone"
    record = json.load(open(os.path.join(digits_bundle.run_dir, "metrics.json")))["exports"]["web"]
    assert record["precision"] == "int8" and 0 < record["page_mb"] < 6 and record["wasm_mb"] > 5
    fp32 = json.load(open(os.path.join(digits_bundle.fp32_dir, "web", "bundle", "bundle.json")))
    assert fp32["precision"] == "fp32" and fp32["features"] == "bundle/features.onnx"


def _web_predictions(page, urls, restore=False):
    return page.evaluate("""async ([urls, restore]) => {
        const m = await edgetl.load('./web/', {restore});
        const out = [];
        for (const url of urls) {
            const [best] = await m.predict(await blobOf(url), {topK: 1});
            out.push(best.label);
        }
        return out;
    }""", [urls, restore])


@pytest.mark.parametrize("precision, isolated", [("fp32", False), ("int8", True)])
def test_predictions_agree_with_edgetl_predict(browser, digits_bundle, precision, isolated, page_errors):
    """fp32 served as python -m http.server does (one wasm thread); int8
    served cross-origin isolated (COOP/COEP): onnxruntime-web uses threads."""
    run = digits_bundle.fp32_dir if precision == "fp32" else digits_bundle.run_dir
    urls = [url for url, _path, _label in digits_bundle.held_out]
    paths = [path for _url, path, _label in digits_bundle.held_out]
    expected = [p.label for p in Predictor(run, int8=precision == "int8").predict(paths)]
    with serve(run, isolated=isolated) as url:
        context, page = open_harness(browser, url, page_errors)
        got = _web_predictions(page, urls)
        info = page.evaluate("edgetl.runtimeInfo()")
        context.close()
    assert info["crossOriginIsolated"] is isolated and info["onnxruntimeWeb"] == "1.30.0"
    assert (info["threads"] > 1) is isolated, info
    agree = np.mean([a == b for a, b in zip(got, expected)])
    print(f"{precision}: web agrees with edgetl predict on {agree:.1%} of {len(urls)} held-out images")
    assert agree >= (0.995 if precision == "fp32" else 0.99)
    assert page_errors == []


def _fit_in_browser(page, urls, label, epochs):
    """addExamples + fit in the page; returns the exported state (safetensors) and the losses."""
    result = page.evaluate("""async ([urls, label, epochs]) => {
        const m = await edgetl.load('./web/', {restore: false});
        const blobs = await Promise.all(urls.map(blobOf));
        await m.addExamples(blobs, label);
        const records = await m.fit({epochs});
        const bytes = new Uint8Array(await m.exportState().arrayBuffer());
        let s = ''; for (const b of bytes) s += String.fromCharCode(b);
        return {state: btoa(s), losses: records.map((r) => r.loss), labels: m.labels};
    }""", [urls, label, epochs])
    return load_safetensors(base64.b64decode(result["state"])), result


def test_a_fit_in_the_browser_matches_personalizer_fit(browser, digits_bundle, tmp_path, page_errors):
    """Same bundle (fp32), same 5 photos of a new class, same epochs: the
    browser's head equals Personalizer's within 1e-4 (relative), and both
    predict the same labels."""
    run = digits_bundle.fp32_dir
    new = digits_bundle.new[:5]
    with serve(run) as url:
        context, page = open_harness(browser, url, page_errors)
        state, result = _fit_in_browser(page, [u for u, _p in new], "seven", FIT_EPOCHS)
        check_urls = [u for u, _p, _l in digits_bundle.held_out[::4]] + [u for u, _p in digits_bundle.new[5:]]
        web_labels = page.evaluate("""async ([b64, urls]) => {
            const m = await edgetl.load('./web/', {restore: false});
            await m.importState(new Blob([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))]));
            const out = [];
            for (const u of urls) out.push((await m.predict(await blobOf(u), {topK: 1}))[0].label);
            return out;
        }""", [result["state"], check_urls])
        context.close()
    p = Personalizer(run, tmp_path / "state")
    p.add_examples([path for _u, path in new], "seven")
    history = p.fit(epochs=FIT_EPOCHS)
    # The stored features: the browser's ONNX Runtime (wasm) vs the host's.
    np.testing.assert_allclose(state["features"], p.stored_features, rtol=1e-4, atol=1e-4)
    for name, ours in (("weight", p.weight), ("bias", p.bias)):
        rel = np.abs(state[name] - ours).max() / np.abs(ours).max()
        print(f"{name}: max relative difference {rel:.2e}")
        assert rel <= 1e-4
    np.testing.assert_allclose(result["losses"], [h["loss"] for h in history], rtol=1e-4)
    assert result["labels"] == p.labels == list("01234") + ["seven"]
    check_paths = [path for _u, path, _l in digits_bundle.held_out[::4]] + [path for _u, path in digits_bundle.new[5:]]
    assert web_labels == [x.label for x in p.predict(check_paths)]
    assert page_errors == []


def test_imprinting_in_the_browser_matches_personalizer(browser, digits_bundle, tmp_path, page_errors):
    """A new class from 5 photos and another from 1, no fit: the browser's
    imprinted rows and biases (shrinkage discriminant, out-of-fold scores of
    the stored examples, the bundle's exemplar_optimism, leave-one-out bias)
    equal Personalizer's."""
    run = digits_bundle.fp32_dir
    assert "exemplar_optimism" in load_safetensors(open(os.path.join(run, "head.safetensors"), "rb").read())
    new = digits_bundle.new
    with serve(run) as url:
        context, page = open_harness(browser, url, page_errors)
        b64 = page.evaluate("""async ([five, one]) => {
            const m = await edgetl.load('./web/', {restore: false});
            await m.addExamples(await Promise.all(five.map(blobOf)), 'seven');
            await m.addExamples(await Promise.all(one.map(blobOf)), 'lone');
            const bytes = new Uint8Array(await m.exportState().arrayBuffer());
            let s = ''; for (const b of bytes) s += String.fromCharCode(b);
            return btoa(s);
        }""", [[u for u, _p in new[:5]], [new[5][0]]])
        context.close()
    state = load_safetensors(base64.b64decode(b64))
    p = Personalizer(run, tmp_path / "state")
    p.add_examples([path for _u, path in new[:5]], "seven")
    p.add_examples([new[5][1]], "lone")
    for name, ours in (("weight", p.weight), ("bias", p.bias)):
        rel = np.abs(state[name] - ours).max() / np.abs(ours).max()
        print(f"imprint {name}: max relative difference {rel:.2e}")
        assert rel <= 1e-4
    assert page_errors == []


def test_the_state_survives_a_reload_and_a_reset_forgets_it(browser, digits_bundle, page_errors):
    urls = [u for u, _p in digits_bundle.new[:5]]
    with serve(digits_bundle.run_dir) as url:
        context, page = open_harness(browser, url, page_errors)
        before = page.evaluate("""async (urls) => {
            const m = await edgetl.load('./web/');
            await m.reset();
            await m.addExamples(await Promise.all(urls.map(blobOf)), 'seven');
            await m.fit({epochs: 2});
            await m.save();
            return {labels: m.labels, stored: m.numStored, bias: Array.from(m.bias), history: m.history.length};
        }""", urls)
        page.reload()
        page.wait_for_function("window.harnessReady === true")
        after = page.evaluate("""async () => {
            const m = await edgetl.load('./web/');
            const out = {labels: m.labels, stored: m.numStored, bias: Array.from(m.bias), history: m.history.length,
                         note: m.stateNote};
            await m.reset();
            const again = await edgetl.load('./web/');
            out.afterReset = again.labels;
            return out;
        }""")
        context.close()
    assert before["labels"] == list("01234") + ["seven"]
    assert after["note"] is None
    assert {k: after[k] for k in before} == before
    assert after["afterReset"] == list("01234")
    assert page_errors == []


def _load_state(context, url):
    check = context.new_page()
    check.goto(url + "harness.html")
    check.wait_for_function("window.harnessReady === true")
    state = check.evaluate("""async () => {
        const m = await edgetl.load('./web/');
        const db = await new Promise((ok) => { const r = indexedDB.open('edgetl', 1); r.onsuccess = () => ok(r.result); });
        const keys = await new Promise((ok) => { const r = db.transaction('states').objectStore('states').getAllKeys();
                                                 r.onsuccess = () => ok(r.result); });
        db.close();
        return {note: m.stateNote, stored: m.numStored, labels: m.labels, rows: m.weight.length / m.dim,
                features: m._features.length / m.dim, records: keys.length};
    }""")
    check.close()
    return state


def _start_save(context, url, urls, stop: str):
    """A page that adds ``urls`` as more 'seven' and starts saving; ``stop`` runs in it meanwhile."""
    page = context.new_page()
    page.goto(url + "harness.html")
    page.wait_for_function("window.harnessReady === true")
    page.evaluate("""async ([urls, stop]) => {
        const m = await edgetl.load('./web/');
        await m.addExamples(await Promise.all(urls.map(blobOf)), 'seven');
        window.saving = m.save().catch((err) => { window.saveError = err.message; });
        await eval(stop);
    }""", [urls, stop])
    return page


def test_a_tab_killed_mid_save_keeps_a_whole_state(browser, digits_bundle):
    """Killed after the new state is written but before the switch: the next
    visit has the previous state and the unreferenced copy is swept. Then the
    renderer is crashed at several moments of a save: the next visit finds
    the previous state or the new one, whole, never a mix."""
    urls = [u for u, _p in digits_bundle.new[:8]]
    with serve(digits_bundle.run_dir) as url:
        context, page = open_harness(browser, url)
        first = page.evaluate("""async (urls) => {
            const m = await edgetl.load('./web/');
            await m.reset();
            await m.addExamples(await Promise.all(urls.slice(0, 3).map(blobOf)), 'seven');
            await m.save();
            return m.numStored;
        }""", urls)
        # The process dies between the two transactions: the switch never runs.
        stop = """(async () => {
            const open = IDBDatabase.prototype.transaction;
            IDBDatabase.prototype.transaction = function (stores, mode, opts) {
                if (mode === 'readwrite' && [].concat(stores).includes('current')) throw new Error('killed');
                return open.call(this, stores, mode, opts);
            };
            await window.saving;
        })()"""
        page = _start_save(context, url, urls, stop)
        assert page.evaluate("window.saveError") == "killed"
        page.close()
        state = _load_state(context, url)
        assert state["note"] is None and state["stored"] == first and state["records"] == 1, state
        context.close()
    print(f"killed between the two transactions: previous state kept ({first} examples), copy swept")


def _pids_with(marker: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if marker.encode() in fh.read():
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


@pytest.mark.slow  # six browser starts, ~30 s
def test_a_browser_killed_mid_save_keeps_a_whole_state(browser, digits_bundle, tmp_path):
    """The whole browser is killed (SIGKILL, as a phone kills an app) at
    several moments of a save; started again on the same profile, the app
    finds the previous state or the new one, whole, never a mix."""
    import signal

    from webtools import CHROMIUM, CHROMIUM_FLAGS

    profile = str(tmp_path / "profile")
    urls = [u for u, _p in digits_bundle.new[:8]]
    seen, killed = [], 0

    def launch():
        context = browser.browser_type.launch_persistent_context(profile, executable_path=CHROMIUM,
                                                                 args=CHROMIUM_FLAGS, headless=True)
        return context

    with serve(digits_bundle.run_dir) as url:
        context = launch()
        previous = _start_save(context, url, urls[:3], "window.saving.then(() => edgetl.load('./web/'))")
        previous.close()
        before = _load_state(context, url)["stored"]
        for delay in (0, 2, 5, 10, 20):
            _start_save(context, url, urls, f"new Promise((r) => setTimeout(r, {delay}))")
            for pid in _pids_with(profile):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
            with contextlib.suppress(Exception):
                context.close()
            context = launch()
            state = _load_state(context, url)
            assert state["note"] is None, state
            assert state["rows"] == len(state["labels"]) and state["features"] == state["stored"]
            # A state saved whole: the one before, or it plus these 8 examples.
            assert state["stored"] in (before, before + len(urls)), (state, before)
            seen.append((before, state["stored"]))
            before = state["stored"]
        context.close()
    assert killed
    print(f"(examples before the save, after the kill and restart): {seen}")


def test_bad_images_are_refused_with_a_clear_message_and_nothing_stored(browser, digits_bundle, tmp_path):
    import struct
    import zlib

    from PIL import Image

    images = os.path.join(digits_bundle.run_dir, "images")
    with open(os.path.join(images, "bad-notes.png"), "w") as fh:
        fh.write("these are my notes, not a photo\n")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(os.path.join(images, "bad-tiny.png"))
    ihdr = struct.pack(">IIBBBBB", 10000, 10000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    header = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    with open(os.path.join(images, "bad-huge.png"), "wb") as fh:
        fh.write(header)
    good = digits_bundle.new[0][0]
    with serve(digits_bundle.run_dir) as url:
        context, page = open_harness(browser, url)
        results = page.evaluate("""async ([bad, good]) => {
            const m = await edgetl.load('./web/', {restore: false});
            const out = {};
            for (const name of bad) {
                const before = m.numStored;
                try {
                    await m.addExamples([await blobOf(good), new File([await blobOf('images/' + name)], name)], 'x');
                    out[name] = {error: null};
                } catch (err) {
                    out[name] = {error: err.message, kind: err.name, stored: m.numStored - before, labels: m.labels.length};
                }
                try { await m.predict(new File([await blobOf('images/' + name)], name)); out[name].predict = null; }
                catch (err) { out[name].predict = err.message; }
            }
            return out;
        }""", [["bad-notes.png", "bad-tiny.png", "bad-huge.png"], good])
        context.close()
    for name, r in results.items():
        print(name, "->", r["error"])
        assert r["error"] and r["kind"] == "EdgetlError" and "\n" not in r["error"] and name in r["error"]
        assert r["stored"] == 0 and r["labels"] == 5, r  # nothing stored, no class made
        assert r["predict"] and name in r["predict"]
    assert "readable" in results["bad-notes.png"]["error"]
    assert "small" in results["bad-tiny.png"]["error"]
    assert "10000" in results["bad-huge.png"]["error"].replace(",", "").replace(" ", "")


def test_the_app_predicts_offline_after_the_first_visit(browser, digits_bundle, tmp_path):
    """First visit online (the service worker caches every file), then the
    server is gone and the network off: the app still opens and predicts."""
    served = shutil.copytree(digits_bundle.run_dir, tmp_path / "run")
    photo = os.path.join(served, digits_bundle.held_out[0][0])
    context = browser.new_context()
    page = context.new_page()
    with serve(str(served / "web")) as url:
        page.goto(url + "index.html")
        page.wait_for_function("document.body.dataset.ready === '1'", timeout=30000)
        page.evaluate("async () => { await navigator.serviceWorker.ready; }")
        page.reload()  # now controlled by the service worker
        page.wait_for_function("document.body.dataset.ready === '1' && !!navigator.serviceWorker.controller",
                               timeout=30000)
    context.set_offline(True)
    page.reload()
    page.wait_for_function("document.body.dataset.ready === '1'", timeout=30000)
    page.set_input_files("#predict-file", photo)
    page.wait_for_selector("#predictions li", timeout=30000)
    label = page.locator("#predictions li").first.get_attribute("data-label")
    context.close()
    assert label == Predictor(digits_bundle.run_dir, int8=True).predict([photo])[0].label
