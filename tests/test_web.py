"""The local web app (``python -m realtime.web``) through FastAPI's TestClient.

The classifier is the tiny colour model of ``tests/fixtures.py`` (p_female ~1 for colour crops,
0.047 for gray ones) so labels are known; without TensorFlow the shipped model is used if present.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import httpx2
import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the web app needs requirements-web.txt")
pytest.importorskip("multipart", reason="the web app needs python-multipart (requirements-web.txt)")

from fastapi.testclient import TestClient

from realtime.paths import GENDER_MODEL
from realtime.pipeline import Config
from realtime.web import __main__ as web_main
from realtime.web import jobs as web_jobs
from realtime.web.app import Settings, create_app, looks_like_video, safe_name

LABELS = {"female", "male", "uncertain"}


# --- fixtures ------------------------------------------------------------------------------------
def jpeg_bytes(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return buf.tobytes()


def gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)


def write_face_video(path: Path, face_image: np.ndarray, frames: int = 12, fps: float = 10.0,
                     fourcc: str = "mp4v") -> Path:
    """The face photo sliding across a plain 360 x 320 canvas."""
    face = cv2.resize(face_image, (200, 234))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (360, 320))
    assert writer.isOpened()
    for i in range(frames):
        canvas = np.full((320, 360, 3), (70, 90, 110), np.uint8)
        x = 10 + (i * 6) % 140
        canvas[40:274, x : x + 200] = face
        writer.write(canvas)
    writer.release()
    return path


def upload(client: TestClient, *files: tuple[str, bytes, str]) -> httpx2.Response:
    return client.post("/api/upload", files=[("files", f) for f in files])


def wait_for_job(client: TestClient, job_id: str, timeout_s: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout_s
    seen_progress = []
    while time.monotonic() < deadline:
        status = client.get(f"/api/jobs/{job_id}").json()
        seen_progress.append(status.get("progress"))
        if status["state"] not in ("queued", "running"):
            status["seen_progress"] = seen_progress
            return status
        time.sleep(0.1)
    raise AssertionError(f"video job {job_id} did not finish in {timeout_s} s")


# --- page and info -------------------------------------------------------------------------------
def test_page_is_self_contained(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    static = Path(__file__).resolve().parent.parent / "realtime" / "web" / "static"
    for path in static.iterdir():  # no CDN, font or analytics host anywhere in the page
        text = path.read_text()
        assert not re.search(r"(https?:)?//(?!localhost\b|127\.0\.0\.1\b)[\w.-]+\.[a-z]{2,}", text), path.name
        assert client.get(f"/static/{path.name}").status_code == 200
    info = client.get("/api/info").json()
    assert info["max_upload_mb"] == 50 and info["max_video_seconds"] == 120
    assert ".jpg" in info["image_extensions"] and ".mp4" in info["video_extensions"]
    assert set(info["colours"]) >= LABELS


# --- images --------------------------------------------------------------------------------------
def test_image_upload_returns_annotated_image_and_faces_table(client: TestClient, face_image: np.ndarray,
                                                               web_model: Path) -> None:
    r = upload(client, ("grace.jpg", jpeg_bytes(face_image), "image/jpeg"))
    assert r.status_code == 200, r.text
    [item] = r.json()["items"]
    assert item["kind"] == "image" and item["name"] == "grace.jpg" and item["message"] is None
    assert (item["width"], item["height"]) == (512, 600)
    [face] = item["faces"]
    assert face["label"] in LABELS and 0.5 <= face["confidence"] <= 1.0
    x, y, w, h = face["box"]
    assert 100 < x < 250 and 100 < y < 250 and 120 < w < 260 and 120 < h < 260  # her face
    assert face["caption"].startswith(face["label"])
    if web_model.name == "colour.tflite":
        assert face["label"] == "female" and face["p_female"] > 0.9
    header, _, data = item["image"].partition(",")
    assert header == "data:image/jpeg;base64"
    annotated = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)
    assert annotated.shape == face_image.shape
    assert np.abs(annotated.astype(int) - face_image.astype(int)).max() > 100  # the box is drawn


def test_several_images_make_a_gallery(client: TestClient, face_image: np.ndarray, web_model: Path) -> None:
    blank = np.full((240, 320, 3), (200, 120, 40), np.uint8)
    _, png = cv2.imencode(".png", gray(face_image))
    r = upload(client, ("colour.jpg", jpeg_bytes(face_image), "image/jpeg"),
               ("gray.png", png.tobytes(), "image/png"),
               ("blank.jpg", jpeg_bytes(blank), "image/jpeg"))
    assert r.status_code == 200
    items = r.json()["items"]
    assert [i["name"] for i in items] == ["colour.jpg", "gray.png", "blank.jpg"]
    assert len(items[0]["faces"]) == 1 and len(items[1]["faces"]) == 1
    if web_model.name == "colour.tflite":
        assert [items[0]["faces"][0]["label"], items[1]["faces"][0]["label"]] == ["female", "male"]
    assert items[2]["faces"] == [] and items[2]["message"] == "No faces found in this image."
    # each upload is its own picture: its faces are numbered from 1, whatever came before
    assert items[0]["faces"][0]["track_id"] == 1 and items[1]["faces"][0]["track_id"] == 1
    again = upload(client, ("again.jpg", jpeg_bytes(face_image), "image/jpeg")).json()["items"][0]
    assert again["faces"][0]["track_id"] == 1


def test_corrupt_image_gives_a_clear_error(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="realtime.web"):
        r = upload(client, ("broken.jpg", b"\xff\xd8\xff\xe0 this is not really a JPEG", "image/jpeg"))
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == ("broken.jpg cannot be decoded as an image: the file is corrupt, empty or not "
                             "really an image")
    assert "Traceback" not in r.text
    warnings = [rec for rec in caplog.records if rec.levelno == logging.WARNING]
    assert any("broken.jpg cannot be decoded" in rec.getMessage() for rec in warnings)
    assert all("\n" not in rec.getMessage() for rec in warnings)


def test_one_bad_file_does_not_spoil_the_others(client: TestClient, face_image: np.ndarray) -> None:
    r = upload(client, ("ok.jpg", jpeg_bytes(face_image), "image/jpeg"), ("empty.png", b"", "image/png"))
    assert r.status_code == 200
    ok, bad = r.json()["items"]
    assert len(ok["faces"]) == 1
    assert bad == {"name": "empty.png", "error": "empty.png is empty (0 bytes)"}


@pytest.mark.parametrize(("name", "data", "mime", "status", "words"), [
    ("notes.txt", b"hello", "text/plain", 415, "this file type is not accepted"),
    ("report.pdf", b"%PDF-1.4 ...", "application/pdf", 415, "this file type is not accepted"),
    ("fake.mp4", b"#EXTM3U\n#EXT-X-VERSION:3\nfile:///etc/passwd\n", "video/mp4", 415, "not a video file"),
    ("garbage.webm", b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 8, "video/webm", 422, "cannot be decoded as a video"),
])
def test_only_images_and_videos_are_accepted(client: TestClient, name: str, data: bytes, mime: str,
                                             status: int, words: str) -> None:
    r = upload(client, (name, data, mime))
    assert r.status_code == status
    assert words in r.json()["error"] and name in r.json()["error"]


def test_missing_files_field_is_a_clear_error(client: TestClient) -> None:
    r = client.post("/api/upload", data={"other": "x"})
    assert r.status_code == 400 and "files" in r.json()["error"]
    assert client.get("/api/nothing").json() == {"error": "not found: GET /api/nothing"}


def test_too_large_upload_is_rejected(settings: Settings, face_image: np.ndarray) -> None:
    settings.max_upload_mb = 0.05  # 52 kB; the photo is ~90 kB
    data = jpeg_bytes(face_image)
    assert settings.max_upload_bytes < len(data) < settings.max_upload_bytes + 64 * 1024
    with TestClient(create_app(settings)) as client:
        r = upload(client, ("big.jpg", data, "image/jpeg"))  # checked per file
        assert r.status_code == 413
        assert r.json()["error"] == "big.jpg is 0.1 MB; uploads are limited to 0.05 MB"
        r = upload(client, *[(f"big{i}.jpg", data, "image/jpeg") for i in range(3)])  # by Content-Length
        assert r.status_code == 413
        assert r.json() == {"error": "the upload is 0.3 MB; uploads are limited to 0.05 MB"}
        small = cv2.resize(face_image, (128, 150))
        assert upload(client, ("small.jpg", jpeg_bytes(small), "image/jpeg")).status_code == 200


def test_huge_image_dimensions_are_rejected_before_decoding(settings: Settings) -> None:
    settings.max_image_megapixels = 1.0
    _, png = cv2.imencode(".png", np.zeros((1200, 1000, 3), np.uint8))
    with TestClient(create_app(settings)) as client:
        r = upload(client, ("wide.png", png.tobytes(), "image/png"))
    assert r.status_code == 413 and "1000 x 1200 pixels" in r.json()["error"]


# --- videos --------------------------------------------------------------------------------------
def test_video_job_runs_with_progress_and_results_are_downloadable_then_deleted(
        client: TestClient, settings: Settings, face_image: np.ndarray, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    real_run = web_jobs.run

    def slow_run(config: Config, on_frame: Callable[[int, int | None], bool], **kwargs: object) -> object:
        # A few ms per frame, so that polling sees the job half done.
        return real_run(config, on_frame=lambda done, total: time.sleep(0.04) or on_frame(done, total), **kwargs)

    monkeypatch.setattr(web_jobs, "run", slow_run)
    clip = write_face_video(tmp_path / "walk.mp4", face_image, frames=12)
    r = upload(client, ("walk.mp4", clip.read_bytes(), "video/mp4"))
    assert r.status_code == 200, r.text
    [job] = r.json()["items"]
    assert job["kind"] == "video" and job["state"] in ("queued", "running") and job["total"] == 12
    status = wait_for_job(client, job["id"])
    assert status["state"] == "done", status
    assert status["frames"] == 12 and status["progress"] == 1.0 and status["playable"]
    assert any(p is not None and 0 < p < 1 for p in status["seen_progress"])  # progress while running
    [track] = status["tracks"]
    assert track["frames"] >= 10 and track["label"] in LABELS

    video = client.get(status["video_url"])
    assert video.status_code == 200 and video.headers["content-type"] == "video/webm"
    assert video.headers["content-disposition"].startswith("inline")
    download = client.get(status["download_url"])
    assert download.headers["content-disposition"] == 'attachment; filename="walk.labelled.webm"'
    local = tmp_path / "out.webm"
    local.write_bytes(video.content)
    cap = cv2.VideoCapture(str(local))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == 12

    jsonl = client.get(status["jsonl_url"])
    assert jsonl.headers["content-disposition"] == 'attachment; filename="walk.faces.jsonl"'
    records = [json.loads(line) for line in jsonl.text.splitlines()]
    assert [rec["frame"] for rec in records] == list(range(12))
    assert set(records[0]) == {"frame", "time_s", "source", "faces"}

    [root] = settings.workdir.iterdir()
    [folder] = root.iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["faces.jsonl", "labelled.webm"]  # input gone
    assert client.delete(f"/api/jobs/{job['id']}").json() == {"deleted": job["id"]}
    assert not folder.exists()
    gone = client.get(status["video_url"])
    assert gone.status_code == 404 and "deleted or have expired" in gone.json()["error"]


def test_video_results_expire_and_shutdown_removes_everything(
        settings: Settings, face_image: np.ndarray, tmp_path: Path) -> None:
    clip = write_face_video(tmp_path / "a.avi", face_image, frames=4, fourcc="MJPG")
    app = create_app(settings)
    with TestClient(app) as client:
        ids = [upload(client, (f"clip{i}.avi", clip.read_bytes(), "video/x-msvideo")).json()["items"][0]["id"]
               for i in range(2)]
        for job_id in ids:
            assert wait_for_job(client, job_id)["state"] == "done"
        jobs = app.state.web.jobs
        assert jobs.sweep() == 0  # not old yet
        assert jobs.sweep(now=time.monotonic() + settings.keep_minutes * 60 + 1) == 2
        assert client.get(f"/api/jobs/{ids[0]}").status_code == 404
        [root] = settings.workdir.iterdir()
        assert list(root.iterdir()) == []
        upload(client, ("left.avi", clip.read_bytes(), "video/x-msvideo"))
    assert list(settings.workdir.iterdir()) == []  # the server's temporary folder is gone


def test_too_long_video_is_rejected(settings: Settings, face_image: np.ndarray, tmp_path: Path) -> None:
    settings.max_video_seconds = 1.0
    clip = write_face_video(tmp_path / "long.mp4", face_image, frames=30, fps=10.0)
    with TestClient(create_app(settings)) as client:
        r = upload(client, ("long.mp4", clip.read_bytes(), "video/mp4"))
        assert r.status_code == 413 and r.json()["error"] == "long.mp4 is 3 s long; videos are limited to 1 s"
        [root] = settings.workdir.iterdir()
        assert list(root.iterdir()) == []  # the rejected upload is not kept


def test_truncated_video_is_reported(client: TestClient, face_image: np.ndarray, tmp_path: Path) -> None:
    clip = write_face_video(tmp_path / "cut.mp4", face_image, frames=12)
    data = clip.read_bytes()
    r = upload(client, ("cut.mp4", data[: len(data) // 3], "video/mp4"))
    # The moov atom is at the end of OpenCV's MP4: a cut file cannot even be opened.
    assert r.status_code == 422 and "cannot be decoded as a video" in r.json()["error"]


def test_video_cut_short_shows_the_frames_before_the_damage(client: TestClient, face_image: np.ndarray,
                                                             tmp_path: Path) -> None:
    clip = write_face_video(tmp_path / "cut.avi", face_image, frames=30, fourcc="MJPG")
    data = clip.read_bytes()
    r = upload(client, ("cut.avi", data[: len(data) * 6 // 10], "video/x-msvideo"))
    assert r.status_code == 200, r.text
    status = wait_for_job(client, r.json()["items"][0]["id"])
    assert status["state"] == "done" and 0 < status["frames"] < 30
    assert status["warning"].startswith("video cut.avi ended after")  # the user's name, not a temp path
    assert status["warning"].endswith("; showing the frames before the damage")
    assert client.get(status["jsonl_url"]).text.count("\n") == status["frames"]


# --- webcam --------------------------------------------------------------------------------------
def test_webcam_websocket_tracks_and_labels_faces(client: TestClient, face_image: np.ndarray) -> None:
    frame = jpeg_bytes(cv2.resize(face_image, (320, 375)))
    with client.websocket_connect("/api/live") as ws:
        replies = []
        for _ in range(12):
            ws.send_bytes(frame)
            replies.append(ws.receive_json())
            if replies[-1]["faces"] and not replies[-1]["faces"][0]["pending"]:
                break
            time.sleep(0.05)
        ws.send_bytes(b"not a jpeg")
        assert ws.receive_json() == {"error": "a webcam frame could not be decoded (send JPEG images)"}
        ws.send_text("hello")
        assert "binary JPEG" in ws.receive_json()["error"]
        ws.send_bytes(frame)
        assert ws.receive_json()["faces"]  # the session goes on after bad frames
    assert [r["frame"] for r in replies] == list(range(len(replies)))
    assert all(len(r["faces"]) == 1 and r["width"] == 320 for r in replies)
    assert len({r["faces"][0]["track_id"] for r in replies}) == 1  # one track across frames
    last = replies[-1]["faces"][0]
    assert not last["pending"] and last["label"] in LABELS and last["confidence"] >= 0.5


def test_webcam_sessions_are_limited(settings: Settings, face_image: np.ndarray) -> None:
    settings.max_live_sessions = 1
    with TestClient(create_app(settings)) as client, client.websocket_connect("/api/live") as first:
        first.send_bytes(jpeg_bytes(face_image))
        assert first.receive_json()["faces"]  # the first session is open
        with client.websocket_connect("/api/live") as second:
            assert "already connected" in second.receive_json()["error"]


# --- network safety ------------------------------------------------------------------------------
def test_host_and_origin_checks(settings: Settings) -> None:
    settings.allowed_hosts = frozenset({"127.0.0.1", "localhost", "testserver"})
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/info").status_code == 200
        r = client.get("/api/info", headers={"host": "evil.example:7860"})
        assert r.status_code == 400 and "evil.example" in r.json()["error"]
        from starlette.websockets import WebSocketDisconnect

        with pytest.raises(WebSocketDisconnect), \
                client.websocket_connect("/api/live", headers={"origin": "http://evil.example"}) as ws:
            ws.receive_json()


def test_upload_without_length_is_refused(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"--x\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.jpg\"\r\n\r\n"
        yield b"data\r\n--x--\r\n"

    r = client.post("/api/upload", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 411


def test_helpers() -> None:
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("C:\\Users\\me\\photo.JPG") == "photo.JPG"
    assert safe_name('a<b>"c".png') == "abc.png"
    assert safe_name("") == "upload"
    assert len(safe_name("x" * 300 + ".jpg")) == 100
    assert looks_like_video(b"\x00\x00\x00\x20ftypisom") and looks_like_video(b"\x1a\x45\xdf\xa3")
    assert looks_like_video(b"RIFF\x00\x00\x00\x00AVI LIST")
    assert not looks_like_video(b"#EXTM3U\n") and not looks_like_video(b"RIFF\x00\x00\x00\x00WAVE")


# --- the command line ----------------------------------------------------------------------------
@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(("host", "warned"), [("0.0.0.0", True), ("192.168.1.20", True), ("127.0.0.1", False),
                                              ("localhost", False), ("::1", False)])
def test_cli_warns_when_listening_beyond_this_computer(monkeypatch: pytest.MonkeyPatch, web_model: Path,
                                                       host: str, warned: bool) -> None:
    calls = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: calls.append(kw))
    monkeypatch.setattr(web_main, "check_port_free", lambda host, port: None)
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert web_main.main(["--host", host, "--port", "8765", "--model", str(web_model), "-q"]) == 0
    text = err.getvalue()
    assert ("anyone who can reach this machine" in text) == warned, text
    if warned:
        [line] = text.splitlines()
        assert line.startswith(f"warning: listening on {host}: anyone")
    [kw] = calls
    assert kw["host"] == host and kw["port"] == 8765


def test_cli_defaults_and_errors(monkeypatch: pytest.MonkeyPatch, restore_logging: None,
                                 tmp_path: Path) -> None:
    args = web_main.build_parser().parse_args([])
    assert (args.host, args.port, args.model) == ("127.0.0.1", 7860, GENDER_MODEL)
    assert (args.max_upload_mb, args.max_video_seconds) == (50.0, 120.0)
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(web_main, "check_port_free", lambda host, port: None)
    assert web_main.main(["--model", str(tmp_path / "missing.tflite"), "-q"]) == 2
    [line] = err.getvalue().splitlines()
    assert line.startswith("error: gender model not found:") and "missing.tflite" in line
    with pytest.raises(SystemExit):
        web_main.build_parser().parse_args(["--max-upload-mb", "0"])


def test_blur_option_blurs_the_returned_image(client: TestClient, face_image: np.ndarray) -> None:
    """The page's "Blur faces" checkbox sends blur=1: the labelled picture comes back anonymised."""
    import base64

    face_jpeg = jpeg_bytes(face_image)

    def picture(query: str) -> tuple[np.ndarray, list]:
        resp = client.post(f"/api/upload{query}", files={"files": ("face.jpg", face_jpeg, "image/jpeg")})
        assert resp.status_code == 200, resp.text
        item = resp.json()["items"][0]
        data = base64.b64decode(item["image"].split(",", 1)[1])
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), item["faces"]

    plain, faces = picture("")
    blurred, faces_b = picture("?blur=1")
    assert faces and len(faces) == len(faces_b)
    x, y, w, h = faces[0]["box"]
    sharp = cv2.Laplacian(cv2.cvtColor(plain[y:y + h, x:x + w], cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
    soft = cv2.Laplacian(cv2.cvtColor(blurred[y:y + h, x:x + w], cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
    assert soft < 0.2 * sharp


def test_the_model_is_loaded_once_per_app(settings: Settings, face_image: np.ndarray, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Two webcam connections, a video job and image uploads (plain and blurred) share one
    classifier: it was loaded once per connection and once per job (issue 28.4)."""
    from realtime import classifier as classifier_module

    loads: list[str] = []
    real_init = classifier_module.GenderClassifier.__init__

    def counting_init(self: object, *args: object, **kwargs: object) -> None:
        loads.append(str(args[0] if args else kwargs.get("model_path")))
        real_init(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(classifier_module.GenderClassifier, "__init__", counting_init)
    settings.max_live_sessions = 2
    clip = write_face_video(tmp_path / "walk.mp4", face_image, frames=6)
    with TestClient(create_app(settings)) as client:
        with client.websocket_connect("/api/live") as first, client.websocket_connect("/api/live?blur=1") as second:
            for ws in (first, second):
                ws.send_bytes(jpeg_bytes(face_image))
                assert ws.receive_json()["faces"]
        job = upload(client, ("walk.mp4", clip.read_bytes(), "video/mp4")).json()["items"][0]
        assert wait_for_job(client, job["id"])["state"] == "done"
        for blur in ("false", "true"):
            r = client.post(f"/api/upload?blur={blur}", files=[("files", ("a.jpg", jpeg_bytes(face_image),
                                                                            "image/jpeg"))])
            assert r.status_code == 200 and r.json()["items"][0]["faces"]
    assert len(loads) == 1, loads
