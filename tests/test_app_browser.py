"""The web app end to end in a real browser: Playwright driving Debian's chromium-headless-shell.

``playwright install`` cannot download browsers here, so the test points Playwright at the
system's binary (``OCTLENS_CHROMIUM``, else the usual places). Without one the test is skipped
with the reason, except in CI (``CI`` set), where ``.ci/run`` installs it and a missing browser
fails. ``OCTLENS_APP_RUNS`` (run folders, space-separated) serves other runs than the tiny test
ones and ``OCTLENS_APP_SCREENSHOT`` copies the page's screenshot there: the README's picture is
made this way, from the demo's runs.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from octlens.app import background_server, build_app
from octlens.app.server import example_scans
from octlens.training.run import Run

#: a real browser against a live server: many seconds each
pytestmark = pytest.mark.slow

# Drag and drop as a browser does it: a DataTransfer holding the files, dropped on the zone.
DROP = """files => {
    const transfer = new DataTransfer();
    for (const [name, data] of files) {
        const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
        transfer.items.add(new File([bytes], name, {type: "image/jpeg"}));
    }
    const zone = document.getElementById("drop");
    zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: transfer, bubbles: true}));
    zone.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true}));
}"""
CANDIDATES = (
    "/usr/bin/chromium-headless-shell",
    "/usr/lib/chromium/chromium-headless-shell",
    "/usr/bin/chromium",
)


def chromium() -> str:
    found = [os.environ.get("OCTLENS_CHROMIUM"), *CANDIDATES, shutil.which("chromium")]
    for path in found:
        if path and Path(path).is_file():
            return path
    reason = "no chromium-headless-shell here (apt-get install chromium-headless-shell)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the browser tests")
    pytest.skip(reason)


# Names a hostile page may use: its own site, and a name its DNS re-points at 127.0.0.1.
RESOLVER = "--host-resolver-rules=MAP attacker.test 127.0.0.1, MAP rebind.test 127.0.0.1"


@pytest.fixture
def browser():
    pytest.importorskip("playwright", reason="the test extra's playwright is not installed")
    from playwright.sync_api import sync_playwright

    executable = chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=[RESOLVER])
        yield browser
        browser.close()


@pytest.fixture
def browser_page(browser):
    return browser.new_page(viewport={"width": 1400, "height": 1000})


def test_drop_a_scan_see_both_runs_move_the_slider_and_read_an_error(
    browser_page, tiny_resnet_run, tiny_vit_run, tiny_data, tmp_path
):
    page = browser_page
    chosen = os.environ.get("OCTLENS_APP_RUNS", "").split()
    runs = [Path(run) for run in chosen] or [tiny_resnet_run, tiny_vit_run]
    data = Path(str(Run.load(runs[0]).checkpoint.meta["config"]["data"]))
    scan = next(path for path in example_scans(data) if path.parent.name == "DME")
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))

    with background_server(build_app(runs)) as url:
        # Listening for file choosers before the page loads: Playwright intercepts them only
        # once its listener is registered in the browser, and a chooser opened earlier is lost.
        choosers: list = []
        page.on("filechooser", lambda chooser: choosers.append(chooser))
        page.goto(url)
        page.wait_for_selector(f".run-card >> nth={len(runs) - 1}")
        # the keyboard reaches the file picker
        page.focus("#drop")
        page.keyboard.press("Enter")
        for _ in range(300):
            if choosers:
                break
            page.wait_for_timeout(100)
        assert choosers, "Enter on the drop zone opened no file chooser in 30 s"
        choosers[0].set_files(str(scan))
        panels = page.locator("canvas")
        expected = 4 * len(runs)  # four methods for each run
        page.wait_for_function(  # a function, not a string: the page's CSP forbids eval
            "n => document.querySelectorAll('canvas[data-drawn]').length >= n",
            arg=expected,
            timeout=120_000,
        )
        assert panels.count() == expected
        answers = page.locator(".run-answer h3").all_inner_texts()
        assert len(answers) == len(runs) and all(": " in text for text in answers)
        page.screenshot(path=tmp_path / "app.png", full_page=True)
        if target := os.environ.get("OCTLENS_APP_SCREENSHOT"):
            shutil.copy(tmp_path / "app.png", target)
        first = "() => document.querySelector('canvas').toDataURL()"
        before = page.evaluate(first)
        page.locator("#opacity").fill("0.05")
        after = page.evaluate(first)
        assert after != before  # the overlay was redrawn with the new opacity
        for button, suffix in (("overlay PNG", ".png"), ("raw map .npy", ".npy")):
            with page.expect_download() as download:
                page.get_by_role("button", name=button).first.click()
            saved = tmp_path / download.value.suggested_filename
            download.value.save_as(saved)
            assert saved.name == f"{scan.stem}_{runs[0].name}_gradcam{suffix}"
        assert Image.open(tmp_path / f"{scan.stem}_{runs[0].name}_gradcam.png").size[0] > 0
        raw = np.load(tmp_path / f"{scan.stem}_{runs[0].name}_gradcam.npy")
        size = Run.load(runs[0]).img_size
        assert raw.shape == (size, size) and raw.dtype == np.float32

        # two scans dropped at once: a table; Enter on the second row shows its maps
        second = next(path for path in example_scans(data) if path.parent.name == "NORMAL")
        files = [[p.name, base64.b64encode(p.read_bytes()).decode()] for p in (scan, second)]
        page.evaluate(DROP, files)
        page.wait_for_function(
            "() => document.querySelectorAll('#table-body tr').length === 2", timeout=120_000
        )
        page.locator("#table-body tr").nth(1).focus()
        page.keyboard.press("Enter")
        page.wait_for_function(
            "name => document.querySelector('#result h2').textContent === name", arg=second.name
        )
        assert "selected" in (page.locator("#table-body tr").nth(1).get_attribute("class") or "")

        page.set_input_files(
            "#files", {"name": "broken.jpeg", "mimeType": "image/jpeg", "buffer": b"not a scan"}
        )
        page.wait_for_function("() => document.getElementById('error').textContent.length > 0")
        error = page.inner_text("#error")
        assert error.startswith("broken.jpeg: not a readable image"), error
        page.screenshot(path=tmp_path / "error.png")
    assert (tmp_path / "app.png").stat().st_size > 10_000
    blocked = [p for p in problems if "Content Security Policy" in p]
    assert not blocked, blocked


# What a page on another site can do without any permission: POST a form (no preflight for
# multipart) and try to read the API.
ATTACK = """async ([target, data]) => {
    const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
    const form = new FormData();
    form.append("files", new File([bytes], "scan.jpeg", {type: "image/jpeg"}));
    try {  // an opaque answer at best: the point is whether the server scores it
        await fetch(target + "/api/predict", {method: "POST", body: form, mode: "no-cors"});
    } catch (error) {}
    try {
        return await (await fetch(target + "/api/runs")).text();
    } catch (error) {
        return "blocked";
    }
}"""


def _attacker_site() -> Starlette:
    return Starlette(routes=[Route("/", lambda request: HTMLResponse("<p>cute cats</p>"))])


def test_a_page_on_another_site_and_a_rebinding_name_get_nothing(
    browser, tiny_resnet_run, tiny_data
):
    app = build_app([tiny_resnet_run])
    scan = example_scans(tiny_data)[0]
    page = browser.new_page()
    with background_server(app) as url, background_server(_attacker_site()) as evil:
        page.goto(f"http://attacker.test:{urlsplit(evil).port}/")
        read = page.evaluate(ATTACK, [url, base64.b64encode(scan.read_bytes()).decode()])
        assert read == "blocked"  # the browser's CORS rule; the server's own refusal:
        assert app.state.batcher.batch_sizes == []  # the upload reached it and was not scored

        # DNS rebinding: the attacker's name now points at 127.0.0.1, so the page is same-origin
        # with the server, and only the Host header tells them apart
        rebound = f"http://rebind.test:{urlsplit(url).port}"
        response = page.goto(f"{rebound}/")
        assert response is not None and response.status == 400
        assert "not a name this server answers to" in page.content()
        runs = page.evaluate(
            "async () => { const r = await fetch('/api/runs'); return [r.status, await r.text()]; }"
        )
        assert runs[0] == 400 and "resnet" not in runs[1]
        example = page.evaluate("async () => (await fetch('/api/examples/0')).status")
        assert example == 400
