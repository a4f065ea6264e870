"""Network streams: a loopback MJPEG server that dies mid-stream and comes back."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from realtime_helpers import REPO_ROOT, assert_one_error, check_record, read_jsonl, synthetic_frames

from realtime.errors import SourceError
from realtime.sources import ReconnectPolicy, StreamSource

BOUNDARY = "frame"


class MjpegServer:
    """Serves JPEG frames as multipart/x-mixed-replace on 127.0.0.1 until stopped."""

    def __init__(self, frames: list[np.ndarray], port: int = 0, fps: float = 50.0) -> None:
        self.jpegs = [cv2.imencode(".jpg", f)[1].tobytes() for f in frames]
        self.fps = fps
        self.stopped = threading.Event()
        self.sent = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return None

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.end_headers()
                i = 0
                try:
                    while not server.stopped.is_set():
                        jpeg = server.jpegs[i % len(server.jpegs)]
                        self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                         f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
                        server.sent += 1
                        i += 1
                        time.sleep(1.0 / server.fps)
                except (BrokenPipeError, ConnectionResetError):
                    return

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def start(self) -> MjpegServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return synthetic_frames(20, (320, 240))


def test_stream_source_reads_frames(frames: list[np.ndarray]) -> None:
    server = MjpegServer(frames).start()
    try:
        with StreamSource(server.url, ReconnectPolicy(tries=1, first_wait_s=0.1)) as src:
            got = []
            for frame in src.frames():
                got.append(frame)
                if len(got) == 5:
                    break
        assert [f.index for f in got] == [0, 1, 2, 3, 4]
        assert got[0].image.shape == (240, 320, 3)
    finally:
        server.stop()


def test_unreachable_stream_is_one_error() -> None:
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SourceError, match="cannot open stream"):
        StreamSource(f"http://127.0.0.1:{port}/x.mjpg").open()


@pytest.mark.slow
def test_stream_that_drops_is_reconnected(colour_model: Path, frames: list[np.ndarray], tmp_path: Path) -> None:
    server = MjpegServer(frames, fps=20).start()
    port = server.port
    jsonl = tmp_path / "stream.jsonl"
    cmd = [sys.executable, "-m", "realtime", "--source", server.url, "--jsonl", str(jsonl), "--max-frames", "60",
           "--model", str(colour_model), "--no-display", "--no-progress", "--reconnect-wait", "0.5",
           "--reconnect-tries", "8"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while server.sent < 20 and time.time() < deadline:  # let it process a while
            time.sleep(0.1)
        server.stop()  # the camera dies mid-stream ...
        time.sleep(1.5)
        server = MjpegServer(frames, port=port, fps=20).start()  # ... and comes back
        _, stderr = proc.communicate(timeout=120)
    finally:
        server.stop()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "reconnecting" in stderr and "reconnected" in stderr
    records = read_jsonl(jsonl)
    assert len(records) == 60  # processing resumed after the drop
    for rec in records:
        check_record(rec)
    assert sum(1 for r in records if r["faces"]) >= 50
    labelled = [f for r in records for f in r["faces"] if f["p_female"] is not None]
    assert len(labelled) >= 40 and all(f["label"] == "female" for f in labelled)


@pytest.mark.slow
def test_stream_that_never_comes_back(colour_model: Path, frames: list[np.ndarray], tmp_path: Path) -> None:
    server = MjpegServer(frames, fps=20).start()
    jsonl = tmp_path / "dead.jsonl"
    cmd = [sys.executable, "-m", "realtime", "--source", server.url, "--jsonl", str(jsonl),
           "--model", str(colour_model), "--no-display", "--no-progress", "--reconnect-wait", "0.2",
           "--reconnect-tries", "3"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while server.sent < 10 and time.time() < deadline:
        time.sleep(0.1)
    server.stop()
    _, stderr = proc.communicate(timeout=120)
    result = subprocess.CompletedProcess(cmd, proc.returncode, "", stderr)
    assert_one_error(result, "did not come back after 3 tries")
    assert stderr.count("reconnecting in") == 3
    assert len(read_jsonl(jsonl)) > 0  # what was processed before the drop is kept


def test_stream_is_recorded_at_its_measured_rate(colour_model: Path, frames: list[np.ndarray], tmp_path: Path) -> None:
    """A 12 fps stream must not play 2.5x too fast: the video gets the rate measured while recording."""
    server = MjpegServer(frames, fps=12).start()
    try:
        out = tmp_path / "stream.mp4"
        proc = subprocess.run([sys.executable, "-m", "realtime", "--source", server.url, "--output", str(out),
                               "--max-frames", "36", "--model", str(colour_model), "--no-display", "--no-progress"],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        cap = cv2.VideoCapture(str(out))
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 36
        assert 9.0 <= cap.get(cv2.CAP_PROP_FPS) <= 15.0
    finally:
        server.stop()
