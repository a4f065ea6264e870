"""The server's log never goes silent: ``python -m realtime.web`` as a real process, several webcam
sessions and a video job at once (each loads models and opens native readers and writers in its own
thread), then a warning that must still reach the server's stderr, with no native noise around it.

(The old quiet_stderr pointed fd 2 at /dev/null per call; overlapping calls from concurrent
sessions could leave it there for good, and every later warning and error was lost.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import pytest

pytest.importorskip("uvicorn", reason="needs uvicorn (pip install -r requirements-web.txt)")
ws_client = pytest.importorskip("websockets.sync.client", reason="needs websockets (requirements-web.txt)")

from fixtures import REPO_ROOT  # noqa: E402
from test_web import jpeg_bytes, write_face_video  # noqa: E402

sys.path.insert(0, str(REPO_ROOT / "scripts"))
from web_load import free_port, get_json, post_file  # noqa: E402  - the load script's client helpers


def test_a_warning_reaches_stderr_after_concurrent_sessions(web_model: Path, face_image, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    err_path = tmp_path / "server.err"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with err_path.open("wb") as err:
        server = subprocess.Popen([sys.executable, "-m", "realtime.web", "--port", str(port), "--model",
                                   str(web_model), "--keep-minutes", "1"], cwd=REPO_ROOT, stderr=err,
                                  stdout=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, err_path.read_text()
            try:
                get_json(f"{base}/api/info")
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)

        frame = jpeg_bytes(cv2.resize(face_image, (320, 375)))
        replies: list[dict] = []
        failures: list[BaseException] = []

        def session() -> None:
            try:
                with ws_client.connect(f"ws://127.0.0.1:{port}/api/live", open_timeout=60) as ws:
                    for _ in range(2):
                        ws.send(frame)
                        replies.append(json.loads(ws.recv(timeout=60)))
            except BaseException as exc:  # reported below
                failures.append(exc)

        clip = write_face_video(tmp_path / "walk.webm", face_image, frames=6, fourcc="VP80")
        for _ in range(2):  # two rounds of four sessions opening at the same moment, plus a video job
            threads = [threading.Thread(target=session) for _ in range(4)]
            for t in threads:
                t.start()
            status, body = post_file(f"{base}/api/upload", "walk.webm", clip.read_bytes(), "video/webm")
            assert status == 200, body
            for t in threads:
                t.join(timeout=120)
            job_id = body["items"][0]["id"]
            while get_json(f"{base}/api/jobs/{job_id}")["state"] in ("queued", "running"):
                time.sleep(0.2)
        assert not failures, failures
        assert len(replies) == 16 and all("faces" in r for r in replies), replies

        status, body = post_file(f"{base}/api/upload", "broken.jpg", b"\xff\xd8\xff\xe0 not a JPEG", "image/jpeg")
        assert status == 422
        deadline = time.monotonic() + 10
        while b"broken.jpg cannot be decoded" not in err_path.read_bytes():
            assert time.monotonic() < deadline, "the warning never reached the server's stderr:\n" + \
                err_path.read_text()
            time.sleep(0.1)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    text = err_path.read_text()
    lines = text.splitlines()
    assert "warning: broken.jpg cannot be decoded as an image: the file is corrupt, empty or not really an image" \
        in lines
    assert sum("video job" in line and "done" in line for line in lines) == 2  # info lines still arrive
    # ... and the native libraries' notes do not (LiteRT's start-up note, FFmpeg's "tag VP80" per video)
    assert "TensorFlow Lite" not in text and "FFMPEG" not in text, text
    assert "Traceback" not in text, text
    assert server.returncode == 0, text
