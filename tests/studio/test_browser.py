"""The studio in a real browser (the OS's headless Chromium driven by Playwright): paint a
stroke with real mouse events, save it, check the stored pixels; retrain a tiny run and open
the comparison page; take a screenshot."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rightfocus.engine.report import BROWSER_ARGS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = list(BROWSER_ARGS)  # the flags the report's own browser check uses

if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip(
        "the OS Chromium is not installed (scripts/system-deps.sh installs it)",
        allow_module_level=True,
    )
playwright = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def server(session) -> Iterator[str]:  # type: ignore[no-untyped-def]
    import uvicorn

    from rightfocus.studio import create_app, free_port

    port = free_port()
    srv = uvicorn.Server(
        uvicorn.Config(create_app(session), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "the studio server did not start"
    yield f"http://127.0.0.1:{port}"
    for job in session.jobs.values():
        job.stop()
    srv.should_exit = True
    thread.join(10)


def _capsule(p0: tuple[float, float], p1: tuple[float, float], r: float, shape: tuple[int, int]):
    """Pixels whose centre is within ``r`` of the segment p0-p1 (image coordinates x, y)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    (x0, y0), (x1, y1) = p0, p1
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / (dx * dx + dy * dy), 0, 1)
    d2 = (xx - x0 - t * dx) ** 2 + (yy - y0 - t * dy) ** 2
    return (d2 <= r * r).astype(np.uint8)


@pytest.mark.slow
def test_paint_save_retrain_compare(server: str, session, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    shot = Path(os.environ.get("RIGHTFOCUS_SCREENSHOT", tmp_path / "studio.png"))
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 820})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server + "/")
        page.select_option("#strategy", "misclassified")
        page.click("#load-queue")
        page.wait_for_selector("#queue li.current", timeout=30_000)
        index = session.queue("misclassified", k=1)[0]["index"]
        assert f"image #{index}" in page.inner_text("#image-title")
        # brush of 40 display pixels = radius 1.25 image pixels (448 px canvas, 28 px image)
        page.eval_on_selector("#size", "e => { e.value = 40; e.dispatchEvent(new Event('input')) }")
        box = page.locator("#view").bounding_box()
        assert box is not None
        scale = box["width"] / 28
        a = (box["x"] + 82, box["y"] + 227)
        b = (box["x"] + 322, box["y"] + 227)
        page.mouse.move(*a)
        page.mouse.down()
        page.mouse.move(*b, steps=12)
        page.mouse.up()
        page.click("#save")
        page.wait_for_function(
            "document.getElementById('status').textContent.includes('Saved version 1')"
        )
        stored, rec = session.store.load(index)
        to_img = lambda q: ((q[0] - box["x"]) / scale, (q[1] - box["y"]) / scale)  # noqa: E731
        expected = _capsule(to_img(a), to_img(b), 20 / scale, (28, 28))
        assert stored.sum() == 34  # rows 13 and 14, columns 4..20
        assert np.array_equal(stored, expected)
        assert rec.strategy == "misclassified" and rec.version == 1
        assert "1 annotated" in page.inner_text("#run")
        assert "mask version 1 (tester" in page.inner_text("#image-title")
        page.screenshot(path=str(shot))
        # undo / redo from the keyboard act on the canvas state; arrows move along the queue
        painted = "window.studio.masks.dont.reduce((a, b) => a + b, 0)"
        page.locator("#view").focus()
        page.keyboard.press("Control+z")
        assert page.evaluate(painted) == 0
        page.keyboard.press("Control+y")
        assert page.evaluate(painted) == 34
        second = session.queue("misclassified", k=2)[1]["index"]
        page.keyboard.press("ArrowRight")
        page.wait_for_function(f"window.studio.index === {second}")
        page.keyboard.press("ArrowLeft")
        page.wait_for_function(f"window.studio.index === {index}")
        assert page.evaluate(painted) == 34 and page.evaluate("window.studio.version") == 1
        # retrain with the saved mask, watch the progress, open the comparison
        page.fill("#epochs", "1")
        page.select_option("#guidance", "rrr")
        page.click("#retrain")
        page.wait_for_selector("#compare-link", timeout=240_000)
        page.click("#compare-link")
        page.wait_for_selector("body[data-ready='1']", timeout=60_000)
        rows = page.locator("#metrics tbody tr")
        assert rows.count() == 5
        assert "accuracy" in rows.nth(0).inner_text()
        cells = rows.nth(0).locator("td")
        assert float(cells.nth(1).inner_text()) == pytest.approx(
            session_metrics(session)["accuracy"], abs=1e-4
        )
        float(cells.nth(2).inner_text())  # the retrained run's accuracy is a number
        assert page.locator(".pair").count() == 1
        page.wait_for_function(
            "[...document.querySelectorAll('.pair img')].every(i => i.complete && i.naturalWidth)"
        )
        browser.close()
    assert not errors, errors
    assert shot.read_bytes()[:4] == b"\x89PNG"


def session_metrics(session) -> dict[str, float]:  # type: ignore[no-untyped-def]
    import json

    return json.loads((session.run_dir / "metrics.json").read_text())
