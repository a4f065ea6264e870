"""End to end: the web app under uvicorn, driven by headless Chromium (Playwright).

Needs Debian's ``chromium`` at /usr/bin/chromium (Playwright never downloads a browser here) and
the ``playwright`` package (requirements-web.txt); skipped with the reason otherwise. Screenshots
go to ``test-artifacts/`` (gitignored).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures import uvicorn_server

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason=f"needs {CHROMIUM} (apt-get install chromium)")]

sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install -r requirements-web.txt)")
uvicorn = pytest.importorskip("uvicorn", reason="needs uvicorn (pip install -r requirements-web.txt)")

from test_web import gray, write_face_video  # noqa: E402

from realtime.web.__main__ import LOOPBACK_HOSTS  # noqa: E402
from realtime.web.app import Settings, create_app  # noqa: E402


@pytest.fixture(scope="module")
def server(web_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app on a free loopback port, as ``python -m realtime.web`` runs it."""
    settings = Settings(model=web_model, workdir=tmp_path_factory.mktemp("web"), allowed_hosts=LOOPBACK_HOSTS)
    with uvicorn_server(create_app(settings)) as port:
        yield f"http://127.0.0.1:{port}"
    assert list(settings.workdir.iterdir()) == []  # shutdown removed every upload and result


def launch(tmp_path: Path, *extra_args: str) -> tuple[sync_api.Playwright, sync_api.BrowserContext]:
    playwright = sync_api.sync_playwright().start()
    context = playwright.chromium.launch_persistent_context(
        str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True,
        args=[*CHROMIUM_ARGS, *extra_args], viewport={"width": 1280, "height": 900})
    return playwright, context


@pytest.fixture
def page(tmp_path: Path, server: str) -> Iterator[sync_api.Page]:
    """A fresh Chromium profile; fails the test if the page asks any other host for anything."""
    playwright, context = launch(tmp_path)
    page = context.new_page()
    foreign: list[str] = []
    page.on("request", lambda req: foreign.append(req.url)
            if not req.url.startswith((server, "data:", "blob:")) else None)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        context.close()
        playwright.stop()
    assert foreign == [], f"the page contacted other hosts: {foreign}"
    assert errors == [], f"JavaScript errors: {errors}"


def two_faces(face_image: np.ndarray) -> np.ndarray:
    """One picture with two people: the photo in colour and in gray (the test model's female/male)."""
    face = cv2.resize(face_image, (256, 300))
    canvas = np.full((360, 600, 3), (235, 230, 225), np.uint8)
    canvas[30:330, 20:276] = face
    canvas[30:330, 324:580] = gray(face)
    return canvas


def test_upload_images_shows_gallery_with_face_tables(page: sync_api.Page, server: str, face_image: np.ndarray,
                                                      tmp_path: Path, web_model: Path) -> None:
    group = tmp_path / "two people.jpg"
    cv2.imwrite(str(group), two_faces(face_image))
    empty = tmp_path / "empty wall.png"
    cv2.imwrite(str(empty), np.full((240, 320, 3), (180, 200, 210), np.uint8))
    page.goto(server)
    page.wait_for_selector("#limits:has-text('up to 50 MB')")
    assert not page.locator("#clear").is_visible()  # nothing to clear on the empty page
    page.set_input_files("#files", [str(group), str(empty)])
    page.wait_for_selector(".card:nth-child(2) .message", timeout=60_000)
    first = page.locator(".card").nth(0)
    assert first.locator("h2").inner_text() == "two people.jpg"
    rows = first.locator("table.faces tbody tr")
    assert rows.count() == 2
    labels = [rows.nth(i).locator("td").nth(1).inner_text().strip() for i in range(2)]
    assert all(label in ("female", "male", "uncertain") for label in labels)
    if web_model.name == "colour.tflite":
        assert labels == ["female", "male"]
    assert first.locator("img").evaluate("img => img.complete && img.naturalWidth") == 600
    assert page.locator(".card").nth(1).locator(".message").inner_text() == "No faces found in this image."
    assert page.locator("#summary").inner_text() == "2 files, 2 faces"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web_upload.png"), full_page=True)


def test_corrupt_and_wrong_files_show_clear_errors(page: sync_api.Page, server: str, tmp_path: Path) -> None:
    corrupt = tmp_path / "holiday.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    page.goto(server)
    page.set_input_files("#files", [str(corrupt), str(notes)])
    page.wait_for_selector(".card:nth-child(2).error .message")
    errors = page.locator(".card.error .message").all_inner_texts()
    assert errors[0] == ("holiday.jpg cannot be decoded as an image: the file is corrupt, empty or not "
                         "really an image")
    assert errors[1].startswith("notes.txt: this file type is not accepted; upload images (")
    assert "Traceback" not in page.content()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web_errors.png"), full_page=True)


def test_video_upload_shows_progress_then_plays_in_the_browser(page: sync_api.Page, server: str, face_image: np.ndarray,
                                                               tmp_path: Path) -> None:
    clip = write_face_video(tmp_path / "walk.mp4", face_image, frames=20)
    page.goto(server)
    page.set_input_files("#files", str(clip))
    page.wait_for_selector(".card video", timeout=120_000)
    video = page.locator(".card video")
    video.evaluate("v => new Promise(ok => v.readyState >= 2 ? ok() : v.addEventListener('loadeddata', ok))")
    width, duration = video.evaluate("v => [v.videoWidth, v.duration]")
    assert width == 360 and duration == pytest.approx(2.0, abs=0.2)  # VP8 WebM plays in Chromium
    links = page.locator(".card .links a").all_inner_texts()
    assert links == ["Download video (WebM (VP8))", "Download JSONL"]
    track_rows = page.locator(".card table.faces tbody tr")
    assert track_rows.count() >= 1
    with page.expect_download() as info:
        page.click("text=Download JSONL")
    saved = tmp_path / "walk.faces.jsonl"
    info.value.save_as(saved)
    assert info.value.suggested_filename == "walk.faces.jsonl" and len(saved.read_text().splitlines()) == 20
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web_video.png"), full_page=True)
    job_url = server + video.get_attribute("src").removesuffix("/video")
    assert page.request.get(job_url).ok
    page.click("text=Delete from server")
    page.wait_for_selector(".card .message:has-text('Deleted from the server.')")
    assert page.request.get(job_url).status == 404

    # Leaving the page deletes what is still on the server.
    page.set_input_files("#files", str(clip))
    page.wait_for_selector(".card:nth-child(2) video", timeout=120_000)
    job_url = server + page.locator(".card:nth-child(2) video").get_attribute("src").removesuffix("/video")
    assert page.request.get(job_url).ok
    page.reload()
    deadline = time.monotonic() + 10
    while page.request.get(job_url).status != 404:
        assert time.monotonic() < deadline, "leaving the page did not delete the video job"
        time.sleep(0.1)


def write_y4m(path: Path, image: np.ndarray, frames: int = 10) -> Path:
    """A Y4M clip for Chromium's fake webcam (--use-file-for-fake-video-capture)."""
    h, w = image.shape[:2]
    yuv = cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420).tobytes()
    with path.open("wb") as fh:
        fh.write(f"YUV4MPEG2 W{w} H{h} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            fh.write(b"FRAME\n" + yuv)
    return path


def test_webcam_shows_live_labels_and_fps(server: str, face_image: np.ndarray, tmp_path: Path) -> None:
    scene = np.full((480, 640, 3), (200, 205, 210), np.uint8)
    scene[60:435, 192:512] = cv2.resize(face_image, (320, 375))
    y4m = write_y4m(tmp_path / "camera.y4m", scene)
    playwright, context = launch(tmp_path, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                                 f"--use-file-for-fake-video-capture={y4m}")
    try:
        page = context.new_page()
        page.goto(server)
        page.click("#tab-webcam")
        page.click("#cam-start")
        page.wait_for_function("""() => {
            const cell = document.querySelector('#cam-faces tbody tr td:nth-child(2)');
            return cell && ['female', 'male', 'uncertain'].includes(cell.textContent.trim());
        }""", timeout=60_000)
        page.wait_for_function("() => /[1-9][0-9.]* FPS/.test(document.querySelector('#cam-fps').textContent)")
        assert page.locator("#cam-status").inner_text() == "Live"
        box = [int(v) for v in page.locator("#cam-faces tbody tr td").nth(3).inner_text().split(",")]
        assert 150 < box[0] + box[2] / 2 < 500  # the face is in the middle of the frame
        drawn = page.evaluate("""() => {
            const c = document.querySelector('#cam-overlay');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n;
        }""")
        assert drawn > 500  # box and caption are on the overlay canvas
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "web_webcam.png"), full_page=True)
        page.click("#cam-stop")
        assert page.locator("#cam-status").inner_text() == "Stopped"
    finally:
        context.close()
        playwright.stop()


def test_another_site_cannot_upload_delete_or_open_the_webcam_socket(server: str, face_image: np.ndarray,
                                                                    tmp_path: Path) -> None:
    """A page from another origin (here another loopback port, as any site the user visits) tries
    what a cross-site request forgery would: Chromium sends its Origin, the app answers 403."""
    import functools
    import http.server

    evil_dir = tmp_path / "evil"
    evil_dir.mkdir()
    (evil_dir / "index.html").write_text(f"""<!doctype html><meta charset="utf-8"><title>evil</title><script>
        window.results = {{}};
        const form = new FormData();
        form.append('files', new Blob([new Uint8Array([255, 216, 255, 224, 0, 16])], {{type: 'image/jpeg'}}), 'x.jpg');
        fetch('{server}/api/upload', {{method: 'POST', body: form, mode: 'no-cors'}})
            .then(() => window.results.upload = 'sent', e => window.results.upload = 'failed');
        fetch('{server}/api/jobs/abc/delete', {{method: 'POST', mode: 'no-cors'}})
            .then(() => window.results.del = 'sent', e => window.results.del = 'failed');
        const ws = new WebSocket('{server.replace("http", "ws")}/api/live');
        ws.onopen = () => window.results.ws = 'open';
        ws.onclose = () => window.results.ws = window.results.ws || 'refused';
    </script>""")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(evil_dir))
    evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=evil.serve_forever, daemon=True)
    thread.start()
    playwright, context = launch(tmp_path)
    try:
        page = context.new_page()
        statuses: dict[str, int] = {}
        page.on("response", lambda r: statuses.__setitem__(r.url.removeprefix(server), r.status)
                if r.url.startswith(server) else None)
        page.goto(f"http://127.0.0.1:{evil.server_address[1]}/index.html")
        page.wait_for_function("() => window.results.upload && window.results.del && window.results.ws",
                               timeout=30_000)
        results = page.evaluate("() => window.results")
        deadline = time.monotonic() + 10
        while len(statuses) < 2 and time.monotonic() < deadline:
            page.wait_for_timeout(100)
    finally:
        context.close()
        playwright.stop()
        evil.shutdown()
    assert results["ws"] == "refused"  # the socket never opened
    assert statuses == {"/api/upload": 403, "/api/jobs/abc/delete": 403}, statuses
