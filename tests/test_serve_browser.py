"""``--serve`` in headless Chromium: the page shows the stream updating, the counts change, and the
stream-ended state appears when the run stops. On the bundled demo clip with the shipped model, in a
desktop and a phone viewport; screenshots go to ``test-artifacts/`` (docs/images/serve_*.png are
copies of them)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from test_serve import serving
from test_web_browser import ARTIFACTS, CHROMIUM, launch

from realtime.paths import GENDER_MODEL

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason=f"needs {CHROMIUM} (apt-get install chromium)")]
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install -r requirements-dev.txt)")
DEMO = Path(__file__).resolve().parent.parent / "assets" / "face-demographics-walking-and-pause.mp4"

SAMPLE = """() => { const img = document.getElementById('stream');
  const c = document.createElement('canvas'); c.width = 64; c.height = 36;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0, 64, 36);
  return Array.from(g.getImageData(0, 0, 64, 36).data).join(','); }"""


def poll(page: sync_api.Page, js: str, timeout: float = 30) -> None:
    """Wait until ``js`` (a function) is true; ``page.wait_for_function`` would need the page's
    Content-Security-Policy to allow eval, which it does not."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(js):
        assert time.monotonic() < deadline, f"timed out waiting for {js}"
        time.sleep(0.1)


def test_live_view_page_updates_and_ends(tmp_path: Path) -> None:
    with serving(GENDER_MODEL, tmp_path, "--loop", source=str(DEMO)) as (proc, url):
        playwright, context = launch(tmp_path)
        errors: list[str] = []
        try:
            page = context.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url)
            page.wait_for_selector("#state.live:has-text('live')", timeout=30_000)
            poll(page, "() => document.getElementById('stream').naturalWidth > 0")
            first = page.evaluate(SAMPLE)
            counts = page.locator("#tracks").inner_text()
            poll(page, f"() => document.getElementById('tracks').textContent !== {counts!r}", timeout=60)
            time.sleep(0.5)
            assert page.evaluate(SAMPLE) != first, "the picture did not change"
            assert int(page.locator("#faces").inner_text()) >= 0
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "serve_desktop.png"))
            phone = context.new_page()
            phone.set_viewport_size({"width": 390, "height": 844})
            phone.goto(url)
            phone.wait_for_selector("#state.live", timeout=30_000)
            poll(phone, "() => document.getElementById('stream').naturalWidth > 0")
            phone.screenshot(path=str(ARTIFACTS / "serve_phone.png"), full_page=True)
            phone.close()
            proc.send_signal(signal.SIGINT)
            page.wait_for_selector("#state.ended", timeout=30_000)
            assert page.locator("#ended").is_visible()
            page.screenshot(path=str(ARTIFACTS / "serve_ended.png"))
            proc.wait(timeout=60)
            assert proc.returncode == 130
        finally:
            context.close()
            playwright.stop()
        assert errors == [], errors
