"""Issue 10 for the web app: the pixel limit on every decode path whatever the format, decoding inside
the concurrency limit, cross-site requests refused, security headers on refusals, write errors as
one sentence. Every test makes its own tiny data (the "large" images are a few hundred kB of
compressed zeros whose headers promise tens of megapixels)."""

from __future__ import annotations

import errno
import io
import resource
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures import png_bomb

pytest.importorskip("fastapi", reason="the web app needs requirements-web.txt")
pytest.importorskip("multipart", reason="the web app needs python-multipart (requirements-web.txt)")

from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse
from test_web import jpeg_bytes, upload, wait_for_job, write_face_video

from realtime.sources import (
    ImageFolderSource,
    ImageTooLargeError,
    decode_image_limited,
    image_format,
    image_size,
)
from realtime.web import app as web_app
from realtime.web import images as web_images
from realtime.web import jobs as web_jobs
from realtime.web.app import Settings, create_app

SECURITY = ("content-security-policy", "x-content-type-options", "referrer-policy")


# --- tiny "bombs" ---------------------------------------------------------------------------------
def hdr_bomb(width: int, height: int) -> bytes:
    """A Radiance HDR header promising width x height float pixels (OpenCV allocates them, then
    reads the data; Pillow cannot read this format at all)."""
    return f"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y {height} +X {width}\n".encode() + bytes(64)


def other_formats() -> dict[str, bytes]:
    """Small images in formats OpenCV decodes but the app does not accept, whatever the name says."""
    gray = np.full((40, 30), 128, np.uint8)
    out = {}
    for ext in (".hdr", ".pfm", ".pgm", ".ppm", ".ras", ".tiff"):
        image = gray.astype(np.float32) / 255 if ext in (".hdr", ".pfm") else gray
        if ext == ".ppm":
            image = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
        ok, buf = cv2.imencode(ext, image)
        assert ok, ext
        out[ext] = buf.tobytes()
    return out


def pillow_cannot_read(data: bytes) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        Image.open(io.BytesIO(data)).size  # noqa: B018
    except UnidentifiedImageError:
        return True
    return False


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- fixtures -------------------------------------------------------------------------------------
# --- the header read ------------------------------------------------------------------------------
def test_header_sizes_match_what_opencv_decodes() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (37, 53, 3), np.uint8)
    for ext, params in ((".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), (".png", []), (".bmp", []),
                        (".webp", []), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101])):
        ok, buf = cv2.imencode(ext, image, params)
        assert ok
        assert image_size(buf) == (53, 37), ext
        assert decode_image_limited(buf).shape == (37, 53, 3)
    assert image_size(png_bomb(9000, 7000)) == (9000, 7000)
    assert image_size(b"\xff\xd8\xff\xe0 not really a JPEG") is None


@pytest.mark.parametrize("ext", [".hdr", ".pfm", ".pgm", ".ppm", ".ras", ".tiff"])
def test_formats_the_app_does_not_accept_are_never_decoded(ext: str) -> None:
    data = other_formats()[ext]
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None  # OpenCV would
    assert image_format(data) is None and image_size(data) is None
    assert decode_image_limited(data) is None


def test_a_bomb_in_a_format_pillow_cannot_read_is_refused_without_decoding() -> None:
    data = hdr_bomb(20_000, 20_000)  # 400 Mpx: 4.8 GB of floats if OpenCV were asked
    assert pillow_cannot_read(data)  # the old guard asked Pillow, and let this through to OpenCV
    before = peak_rss_mb()
    assert decode_image_limited(data) is None
    assert peak_rss_mb() - before < 100


# --- uploads --------------------------------------------------------------------------------------
def test_upload_in_another_format_is_refused_whatever_its_name(client: TestClient) -> None:
    before = peak_rss_mb()
    for ext, data in [*other_formats().items(), (".hdr", hdr_bomb(16_000, 16_000))]:
        r = upload(client, (f"photo{ext}.jpg", data, "image/jpeg"))
        assert r.status_code == 415, (ext, r.text)
        assert r.json()["error"] == (f"photo{ext}.jpg is not a JPEG, PNG, BMP or WebP image: its content is "
                                     "another format, or not an image at all")
    assert peak_rss_mb() - before < 100  # the 256-megapixel HDR was never decoded


def test_upload_over_the_pixel_limit_is_refused_from_its_header(client: TestClient) -> None:
    bomb = png_bomb(9000, 6000)  # 54 Mpx over the default 50; ~60 kB on the wire, 162 MB decoded
    assert len(bomb) < 200_000
    before = peak_rss_mb()
    r = upload(client, ("bomb.png", bomb, "image/png"))
    assert r.status_code == 413
    assert r.json()["error"] == "bomb.png is 9000 x 6000 pixels; images are limited to 50 megapixels"
    assert peak_rss_mb() - before < 100


def test_uploads_are_decoded_one_at_a_time(client: TestClient, face_image: np.ndarray,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Six uploads at once: each is read and decoded only while it holds the image lock, so there
    is never more than one decoded upload in memory."""
    lock = client.app.state.web.images.lock
    active, seen, guard = [0], [], threading.Lock()
    real = web_images.decode_upload

    def counting(name: str, data: bytes, max_pixels: int) -> np.ndarray:
        assert lock.locked()
        with guard:
            active[0] += 1
            seen.append(active[0])
        time.sleep(0.05)  # long enough for the others to pile up behind the lock
        try:
            return real(name, data, max_pixels)
        finally:
            with guard:
                active[0] -= 1

    monkeypatch.setattr(web_images, "decode_upload", counting)
    data = jpeg_bytes(face_image)
    statuses: list[int] = []

    def send(i: int) -> None:
        statuses.append(upload(client, (f"p{i}.jpg", data, "image/jpeg")).status_code)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert statuses == [200] * 6
    assert seen == [1] * 6


def test_video_with_oversized_frames_is_refused(settings: Settings, face_image: np.ndarray,
                                                tmp_path: Path) -> None:
    settings.max_image_megapixels = 0.1  # the clip's frames are 360 x 320 = 0.115 Mpx
    clip = write_face_video(tmp_path / "big.avi", face_image, frames=3, fourcc="MJPG")
    with TestClient(create_app(settings)) as client:
        r = upload(client, ("big.avi", clip.read_bytes(), "video/x-msvideo"))
        assert r.status_code == 413
        assert r.json()["error"] == ("big.avi has a frame of 360 x 320 pixels; video frames are limited to "
                                     "0.1 megapixels")
        [root] = settings.workdir.iterdir()
        assert list(root.iterdir()) == []


# --- webcam frames --------------------------------------------------------------------------------
def test_webcam_frames_have_a_pixel_limit(client: TestClient, face_image: np.ndarray) -> None:
    before = peak_rss_mb()
    with client.websocket_connect("/api/live") as ws:
        ws.send_bytes(png_bomb(20_000, 20_000))  # ~400 kB promising 400 Mpx (1.2 GB decoded)
        assert ws.receive_json() == {"error": "a webcam frame of 20000 x 20000 pixels; images are limited to "
                                              "8.3 megapixels"}
        ws.send_bytes(hdr_bomb(20_000, 20_000))
        assert ws.receive_json() == {"error": "a webcam frame could not be decoded (send JPEG images)"}
        ws.send_bytes(jpeg_bytes(cv2.resize(face_image, (320, 375))))
        assert ws.receive_json()["faces"]  # the session goes on
    assert peak_rss_mb() - before < 150


# --- folders (python -m realtime --source DIR) ----------------------------------------------------
def test_folder_source_skips_images_over_the_limit_and_other_formats(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "bomb.png").write_bytes(png_bomb(9000, 6000))
    (tmp_path / "radiance.jpg").write_bytes(hdr_bomb(20_000, 20_000))
    cv2.imwrite(str(tmp_path / "ok.jpg"), np.full((20, 30, 3), 90, np.uint8))
    source = ImageFolderSource(tmp_path)
    with source:
        frames = list(source.frames())
    assert [f.name for f in frames] == ["ok.jpg"]
    assert sorted(source.skipped) == ["bomb.png", "radiance.jpg"]
    assert "skipping bomb.png: 9000 x 6000 pixels; images are limited to 50 megapixels" in caplog.text
    with pytest.raises(ImageTooLargeError):
        decode_image_limited(png_bomb(9000, 6000))


def test_opencv_has_the_same_limit_in_the_web_server_process(tmp_path: Path) -> None:
    """`python -m realtime.web` sets OPENCV_IO_MAX_IMAGE_PIXELS before cv2 is imported: OpenCV's own
    header check then refuses big images in any format, under the app's check."""
    import subprocess
    import sys

    bomb = tmp_path / "bomb.pgm"
    bomb.write_bytes(b"P5\n9000 6000\n255\n" + bytes(16))  # a PGM header promising 54 Mpx
    code = ("import realtime.web.__main__, cv2, numpy as np, sys\n"
            "data = np.fromfile(sys.argv[1], np.uint8)\n"
            "try:\n    cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)\nexcept cv2.error as exc:\n"
            "    print('refused' if 'CV_IO_MAX_IMAGE_PIXELS' in str(exc) else exc)\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    proc = subprocess.run([sys.executable, "-c", code, str(bomb)], capture_output=True, text=True, timeout=60,
                          env=env, cwd=Path(__file__).resolve().parent.parent)
    assert proc.stdout.strip() == "refused", proc.stdout + proc.stderr


# --- cross-site requests --------------------------------------------------------------------------
@pytest.mark.parametrize("headers", [
    {"origin": "http://evil.example"},
    {"origin": "null"},
    {"origin": "http://testserver.evil.example"},
    {"sec-fetch-site": "cross-site"},
    {"sec-fetch-site": "same-site", "origin": "http://testserver"},  # another port or subdomain
])
def test_cross_site_upload_is_refused_and_nothing_is_processed(settings: Settings, face_image: np.ndarray,
                                                               tmp_path: Path, headers: dict[str, str]) -> None:
    clip = write_face_video(tmp_path / "walk.avi", face_image, frames=3, fourcc="MJPG")
    with TestClient(create_app(settings)) as client:
        r = client.post("/api/upload", files=[("files", ("walk.avi", clip.read_bytes(), "video/x-msvideo"))],
                        headers=headers)
        assert r.status_code == 403
        assert r.json()["error"].startswith("refused a POST /api/upload from another site (")
        assert all(h in r.headers for h in SECURITY)
        [root] = settings.workdir.iterdir()
        assert list(root.iterdir()) == []  # no job was made
        assert client.app.state.web.jobs.jobs == {}


def test_same_origin_and_non_browser_requests_are_served(client: TestClient, face_image: np.ndarray) -> None:
    data = jpeg_bytes(face_image)
    for headers in ({"origin": "http://testserver", "sec-fetch-site": "same-origin"}, {}, {"sec-fetch-site": "none"}):
        r = client.post("/api/upload", files=[("files", ("a.jpg", data, "image/jpeg"))], headers=headers)
        assert r.status_code == 200, (headers, r.text)


def test_cross_site_delete_is_refused(client: TestClient, face_image: np.ndarray, tmp_path: Path) -> None:
    clip = write_face_video(tmp_path / "a.avi", face_image, frames=3, fourcc="MJPG")
    job_id = upload(client, ("a.avi", clip.read_bytes(), "video/x-msvideo")).json()["items"][0]["id"]
    assert wait_for_job(client, job_id)["state"] == "done"
    evil = {"origin": "http://evil.example"}
    assert client.delete(f"/api/jobs/{job_id}", headers=evil).status_code == 403
    assert client.post(f"/api/jobs/{job_id}/delete", headers=evil).status_code == 403  # sendBeacon
    assert client.get(f"/api/jobs/{job_id}").json()["state"] == "done"  # still there
    own = {"origin": "http://testserver"}
    assert client.post(f"/api/jobs/{job_id}/delete", headers=own).json() == {"deleted": job_id}


def test_cross_site_websocket_gets_403_with_headers(client: TestClient) -> None:
    with pytest.raises(WebSocketDenialResponse) as info, \
            client.websocket_connect("/api/live", headers={"origin": "http://evil.example"}):
        pass
    denial = info.value
    assert denial.status_code == 403
    assert "from another site (Origin: http://evil.example)" in denial.json()["error"]
    assert all(h in denial.headers for h in SECURITY)
    with pytest.raises(WebSocketDenialResponse), \
            client.websocket_connect("/api/live", headers={"sec-fetch-site": "cross-site"}):
        pass


# --- security headers on the app's own refusals ---------------------------------------------------
def test_refusals_carry_the_security_headers(settings: Settings, face_image: np.ndarray) -> None:
    settings.allowed_hosts = frozenset({"testserver"})
    settings.max_upload_mb = 0.01

    def chunks() -> Iterator[bytes]:
        yield b"--x\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.jpg\"\r\n\r\ndata\r\n--x--\r\n"

    with TestClient(create_app(settings)) as client:
        refusals = {
            400: client.get("/api/info", headers={"host": "evil.example"}),
            403: client.post("/api/upload", files=[("files", ("a.jpg", b"x", "image/jpeg"))],
                             headers={"origin": "http://evil.example"}),
            411: client.post("/api/upload", content=chunks(),
                             headers={"content-type": "multipart/form-data; boundary=x"}),
            413: upload(client, ("big.jpg", jpeg_bytes(face_image), "image/jpeg")),
            404: client.get("/api/nothing"),
            405: client.put("/api/info"),
        }
        for status, r in refusals.items():
            assert r.status_code == status, (status, r.text)
            assert all(h in r.headers for h in SECURITY), (status, dict(r.headers))
            assert r.headers["cache-control"] == "no-store"
            assert set(r.json()) == {"error"}


# --- write errors ---------------------------------------------------------------------------------
def test_disk_full_while_storing_a_video_is_one_sentence(client: TestClient, settings: Settings,
                                                        face_image: np.ndarray, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*_: object, **__: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(web_app.shutil, "copyfileobj", full)
    clip = write_face_video(tmp_path / "a.avi", face_image, frames=3, fourcc="MJPG")
    r = upload(client, ("a.avi", clip.read_bytes(), "video/x-msvideo"))
    assert r.status_code == 507
    assert r.json()["error"] == "the server could not store a.avi: No space left on device"
    [root] = settings.workdir.iterdir()
    assert list(root.iterdir()) == []  # nothing half-written left behind


@pytest.mark.parametrize(("failure", "words"), [
    (OSError(errno.EROFS, "Read-only file system"), "the results of a.avi could not be written on the server: "
                                                    "Read-only file system"),
    ("bad-jsonl", "the results of a.avi could not be read back: line 4 of faces.jsonl is not a frame record"),
])
def test_result_write_errors_fail_the_job_with_one_sentence(client: TestClient, settings: Settings,
                                                            face_image: np.ndarray, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            failure: object, words: str) -> None:
    real_run = web_jobs.run

    def failing_run(config: web_jobs.Config, on_frame: object, **kwargs: object) -> object:
        stats = real_run(config, on_frame=on_frame, **kwargs)
        if isinstance(failure, OSError):
            raise failure
        with config.jsonl.open("a") as fh:
            fh.write('{"faces": "not a list"}\n')
        return stats

    monkeypatch.setattr(web_jobs, "run", failing_run)
    clip = write_face_video(tmp_path / "a.avi", face_image, frames=3, fourcc="MJPG")
    job_id = upload(client, ("a.avi", clip.read_bytes(), "video/x-msvideo")).json()["items"][0]["id"]
    status = wait_for_job(client, job_id)
    assert status["state"] == "error"
    assert status["error"].startswith(words)
    assert "Traceback" not in status["error"] and "\n" not in status["error"]
    [root] = settings.workdir.iterdir()
    assert list(root.iterdir()) == []  # no result file stays under its final name


# --- round 2 (issue 26.7): later frames, a full temporary disk, server paths, slow clients ---------
def mjpeg_with_a_large_later_frame(path: Path, large: tuple[int, int] = (1000, 1000)) -> Path:
    """An MJPEG AVI whose header and first frames are 360 x 320 and whose third frame is ``large``
    (the frame's JPEG replaced in place, padded to its chunk's length, so the AVI stays valid)."""
    import struct

    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (360, 320))
    for _ in range(4):
        writer.write(rng.integers(0, 255, (320, 360, 3), dtype=np.uint8))  # noise: large JPEG chunks
    writer.release()
    data = bytearray(path.read_bytes())
    chunks = [i for i in range(8, len(data) - 1) if data[i:i + 2] == b"\xff\xd8" and data[i - 8:i - 4] == b"00dc"]
    start = chunks[2]
    size = struct.unpack("<I", data[start - 4:start])[0]
    ok, big = cv2.imencode(".jpg", np.full((large[1], large[0], 3), 128, np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 50])
    assert ok and len(big) <= size
    data[start:start + size] = big.tobytes() + bytes(size - len(big))
    path.write_bytes(bytes(data))
    return path


def test_a_video_whose_later_frames_are_too_large_is_refused_before_decoding(settings: Settings,
                                                                                tmp_path: Path) -> None:
    settings.max_image_megapixels = 0.5  # the header's 360 x 320 passes; the third frame's 1000 x 1000 does not
    clip = mjpeg_with_a_large_later_frame(tmp_path / "late.avi")
    with TestClient(create_app(settings)) as client:
        r = upload(client, ("late.avi", clip.read_bytes(), "video/x-msvideo"))
        assert r.status_code == 413, r.text
        assert r.json()["error"] == ("late.avi has a frame of 1000 x 1000 pixels; video frames are limited to "
                                     "0.5 megapixels")
        [root] = settings.workdir.iterdir()
        assert list(root.iterdir()) == []


def test_every_decoded_video_frame_is_checked_against_the_limit(tmp_path: Path, face_image: np.ndarray) -> None:
    from realtime.sources import FrameTooLargeError, VideoFileSource

    clip = write_face_video(tmp_path / "v.avi", face_image, frames=3, fourcc="MJPG")
    with VideoFileSource(clip, max_pixels=100_000) as source, pytest.raises(FrameTooLargeError,
                                                                            match="360 x 320 pixels"):
        list(source.frames())


def test_an_upload_on_a_full_temporary_disk_is_507_with_a_sentence(client: TestClient, face_image: np.ndarray,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from starlette.datastructures import UploadFile

    async def full(self: UploadFile, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(UploadFile, "write", full)
    r = upload(client, ("a.jpg", jpeg_bytes(face_image), "image/jpeg"))
    assert r.status_code == 507
    assert r.json()["error"] == ("the server could not store the upload: No space left on device; try again later, "
                                 "or a smaller file")


def test_job_errors_name_the_upload_not_the_servers_paths(settings: Settings) -> None:
    job = web_jobs.Job("id1", "holiday.mp4", settings.workdir / "jobs" / "id1", settings.workdir / "jobs" / "id1" /
                       "upload.mp4", settings.workdir / "jobs" / "id1" / "labelled.webm",
                       settings.workdir / "jobs" / "id1" / "faces.jsonl", 10.0, 3, 30)
    text = web_jobs.public_text(f"cannot write {job.output}: the disk is full; read {job.input} and {job.jsonl}",
                                job)
    assert text == "cannot write the labelled video: the disk is full; read holiday.mp4 and the faces file"
    assert str(settings.workdir) not in text
