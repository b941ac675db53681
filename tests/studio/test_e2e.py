"""edgetl studio end to end: headless Debian chromium driven by Playwright for
Python against a real studio (uvicorn on 127.0.0.1, a free port) that the test
starts on an empty project. Everything is real: scikit-learn's digits written
as PNG files and uploaded through the file input, a real training in the
worker subprocess followed by its streamed progress, the run's metrics.json on
disk, onnxruntime-web in the page for the preview, and the downloaded
bundle.zip run by ``edgetl predict``."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile

import pytest

from webtools import chromium

CLASSES = ("0", "1", "2")  # 25 scans each: the search gets one or two validation images wrong
PER_CLASS = 25
BUDGET = "none"  # the preset whose first training here is the fastest (every tap at 224, 112, 56, 32 px)

serve = TOKEN = None  # set from tests/studio/conftest.py below


@pytest.fixture(autouse=True)
def _helpers(tools):
    global serve, TOKEN
    serve, TOKEN = tools.serve, tools.TOKEN


@pytest.fixture(scope="module")
def browser():
    with chromium("the end-to-end tests") as b:
        yield b


def digit_files(root) -> dict[str, list[str]]:
    """Every digit as ROOT/all/<digit>/<index>.png; the first PER_CLASS of each class to upload."""
    from edgetl.demo import write_digits_folder

    write_digits_folder(str(root / "all"))
    return {c: sorted(str(root / "all" / c / n) for n in os.listdir(root / "all" / c)) for c in CLASSES}


def pct(v: float) -> str:
    """The page's percentages: one decimal, a no-break space before %."""
    return f"{100 * v:.1f}\u00a0%"


def where(project_dir: str, path: str) -> tuple[str, str]:
    """A val_predictions path as (class, name) relative to PROJECT/data."""
    rel = os.path.relpath(os.path.realpath(path), os.path.realpath(os.path.join(project_dir, "data")))
    assert not rel.startswith(".."), path
    cls, _, name = rel.replace(os.sep, "/").partition("/")
    return cls, name


def figures(page) -> set[tuple[str, str]]:
    return {(f.get_attribute("data-class"), f.get_attribute("data-name"))
            for f in page.locator("#cell-images figure[data-class][data-name]").all()}


def open_cell(page, true: str, pred: str, expected: int) -> set[tuple[str, str]]:
    page.click(f'#confusion td.cell[data-true="{true}"][data-pred="{pred}"]')
    page.wait_for_function("""([t, p, n]) => {
        const title = document.querySelector('#cell-title');
        return title && !title.hidden && title.textContent.startsWith(`True ${t}, predicted ${p}:`)
            && !title.textContent.endsWith('loading…')
            && document.querySelectorAll('#cell-images figure[data-class][data-name]').length === n;
    }""", arg=[true, pred, expected], timeout=30000)
    return figures(page)


def test_studio_end_to_end(tmp_path, browser):
    t_start = time.monotonic()
    files = digit_files(tmp_path)
    project_dir = tmp_path / "project"
    errors: list[str] = []
    with serve(project_dir) as s:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
        page.on("console", lambda msg: msg.type == "error" and errors.append(f"console: {msg.text}"))
        page.set_default_timeout(30000)

        # -- open the printed URL: the token becomes a cookie, the URL loses it -----------------
        page.goto(f"{s.url}/?token={TOKEN}")
        page.wait_for_selector('body[data-ready="1"]')
        assert page.url == f"{s.url}/"
        assert "0 images in 0 classes" in page.text_content("#message")

        # -- Gather: three classes made in the page, 25 real PNGs each through the file input ----
        for cls in CLASSES:
            page.fill("#new-class-name", cls)
            page.click("#new-class-button")
            page.wait_for_selector(f'#classes li[data-class="{cls}"]')
        assert [li.get_attribute("data-class") for li in page.locator("#classes li").all()] == list(CLASSES)
        for cls in CLASSES:
            page.click(f'#classes li[data-class="{cls}"]')
            page.wait_for_function("c => document.querySelector('#current-class').textContent === c", arg=cls)
            page.set_input_files("#upload-files", files[cls][:PER_CLASS])
            page.wait_for_function("c => document.querySelector(`#classes li[data-class='${c}'] .count`)"
                                   "?.textContent === '25'", arg=cls)
            summary = page.text_content("#upload-report li:last-child")
            assert f"{cls}: 25 images added, 0 refused" in summary, summary
            page.wait_for_function("() => document.querySelectorAll('#thumbs img[data-name]').length === 25")
        for cls in CLASSES:  # the bytes on disk are the files chosen
            on_disk = sorted(os.listdir(project_dir / "data" / cls))
            assert on_disk == sorted(os.path.basename(p) for p in files[cls][:PER_CLASS])
            for name in on_disk[:3]:
                with open(project_dir / "data" / cls / name, "rb") as a, open(tmp_path / "all" / cls / name, "rb") as b:
                    assert a.read() == b.read()

        # -- Train: the budget chosen in the page; the progress streamed until done -------------
        page.click("#tab-train")
        page.select_option("#budget", BUDGET)
        page.click("#train-button")
        page.wait_for_selector('#train-status[data-status="running"]')
        run = page.text_content("#train-status").split()[-1]
        assert run == "run-001"
        # a second click while it runs: the server's one-line refusal, the run goes on
        page.click("#train-button")
        page.wait_for_function("() => document.querySelector('#message').textContent.includes('already running')")
        assert page.text_content("#message") == "a training is already running (run-001): wait for it or cancel it"
        assert page.get_attribute("#train-status", "data-status") == "running"
        page.wait_for_selector('#train-status[data-status="done"]', timeout=300000)
        t_trained = time.monotonic()
        run_dir = project_dir / "runs" / run
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert page.locator("#candidates tr").count() > 0
        assert float(page.evaluate("document.querySelector('#extract-progress').value")) > 0
        assert page.text_content("#train-status") == f"done: {run} · val accuracy {pct(metrics['val_accuracy'])}"

        # -- Results: the accuracy shown is metrics.json's; the confusion matrix too -------------
        page.click("#tab-results")
        page.wait_for_selector("#val-accuracy[data-value]")
        assert float(page.get_attribute("#val-accuracy", "data-value")) == metrics["val_accuracy"]
        assert page.text_content("#val-accuracy") == pct(metrics['val_accuracy'])
        labels, matrix = metrics["labels"], metrics["confusion_matrix"]
        assert labels == list(CLASSES)
        page.wait_for_selector("#confusion td.cell")
        for i, t in enumerate(labels):
            for j, p in enumerate(labels):
                shown = page.text_content(f'#confusion td.cell[data-true="{t}"][data-pred="{p}"]')
                assert int(shown) == matrix[i][j], (t, p)
        assert not page.is_visible("#stale-banner")

        predictions = metrics["val_predictions"]
        assert len(predictions) == sum(map(sum, matrix))

        def expected(t, p):
            return {where(str(project_dir), v["path"]) for v in predictions if v["label"] == t and v["predicted"] == p}

        diagonal = max(labels, key=lambda c: len(expected(c, c)))
        want = expected(diagonal, diagonal)
        assert want and open_cell(page, diagonal, diagonal, len(want)) == want
        assert all(cls == diagonal for cls, _ in want)
        wrong = [(t, p) for t in labels for p in labels if t != p and expected(t, p)]
        if wrong:
            t, p = wrong[0]
            want = expected(t, p)
            assert open_cell(page, t, p, len(want)) == want
            assert page.locator("#cell-images figure.wrong").count() == len(want)
        else:  # every validation image right: the off-diagonal cells are empty
            assert metrics["val_accuracy"] == 1.0
            t, p = labels[0], labels[0]

        # -- move one image of the open cell (to its predicted class if wrong) -------------------
        fig = page.locator("#cell-images figure[data-class][data-name]").first
        src_cls, name = fig.get_attribute("data-class"), fig.get_attribute("data-name")
        to = p if p != src_cls else next(c for c in labels if c != src_cls)
        fig.locator("select.move-to").select_option(to)
        fig.locator("button.move-button").click()
        page.wait_for_selector("#cell-images figure.moved")
        assert not (project_dir / "data" / src_cls / name).exists()
        moved = page.locator("#cell-images figure.moved").first
        assert moved.get_attribute("data-class") == to
        assert (project_dir / "data" / to / moved.get_attribute("data-name")).is_file()
        assert moved.get_attribute("data-name") == name  # no clash: the base name is kept
        assert page.is_visible("#stale-banner")
        assert f"moved {name} from {src_cls} to {to}" in page.text_content("#message")
        assert s.client.get("/api/runs").json()[0]["stale"] is True
        page.wait_for_function("([c, n]) => document.querySelector(`#classes li[data-class='${c}'] .count`)"
                               "?.textContent === String(n)", arg=[to, PER_CLASS + 1])

        # -- Preview: a photo the run never saw, in onnxruntime-web, int8 and fp32 ---------------
        from edgetl.runtime import Predictor

        photo = files[CLASSES[1]][PER_CLASS + 10]
        reference = Predictor(str(run_dir)).predict([photo])[0]
        page.click("#tab-preview")
        page.set_input_files("#preview-file", photo)
        page.wait_for_selector("#preview-int8 li[data-label]", timeout=120000)
        page.wait_for_selector("#preview-fp32 li[data-label]", timeout=120000)
        fp32 = [(li.get_attribute("data-label"), float(li.get_attribute("data-probability")))
                for li in page.locator("#preview-fp32 li[data-label]").all()]
        int8 = [li.get_attribute("data-label") for li in page.locator("#preview-int8 li[data-label]").all()]
        assert len(fp32) == len(int8) == 3
        assert sorted(label for label, _ in fp32) == sorted(int8) == sorted(labels)
        assert fp32[0][0] == reference.label, (fp32, reference)
        assert abs(fp32[0][1] - reference.probability) < 0.05, (fp32, reference)
        assert page.is_visible("#preview-image")
        latency = page.get_attribute("#preview-fp32 .latency", "data-ms")
        assert latency is not None and float(latency) > 0

        # -- Export: bundle.zip fetched with the page's cookie, unzipped, run by edgetl predict ----
        page.click("#tab-export")
        link = page.locator("#download-bundle")
        page.wait_for_function("() => (document.querySelector('#download-bundle').getAttribute('href') || '')"
                               ".endsWith('/bundle.zip')")
        href = link.get_attribute("href")
        assert href == f"/api/runs/{run}/bundle.zip"
        response = page.request.get(f"{s.url}{href}")
        assert response.status == 200, response.text()
        with zipfile.ZipFile(io.BytesIO(response.body())) as z:
            names = set(z.namelist())
            assert {"model.onnx", "model.int8.onnx", "labels.txt", "metrics.json", "config.toml",
                    "README.md"} <= names, names
            z.extractall(tmp_path / "bundle")
        assert s.anonymous.get(href).status_code == 401  # the cookie was needed
        done = subprocess.run([sys.executable, "-m", "edgetl.cli", "predict", str(tmp_path / "bundle"), photo, "--json"],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert answer[0]["label"] == reference.label
        assert abs(answer[0]["probability"] - reference.probability) < 1e-5

        # -- no page error; the only console error is the refused second training (409) ---------
        unexpected = [e for e in errors if "status of 409" not in e]
        assert not unexpected, unexpected
        assert any("status of 409" in e for e in errors)
        context.close()
    shutil.rmtree(tmp_path / "all", ignore_errors=True)
    print(f"\nstudio end to end: {time.monotonic() - t_start:.1f} s "
          f"(training {t_trained - t_start:.1f} s after start, val accuracy {metrics['val_accuracy']:.3f}, "
          f"off-diagonal cells: {len(wrong)})")
