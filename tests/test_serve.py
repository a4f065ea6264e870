"""``--serve``: the live view over HTTP (realtime.serve), end to end with real processes.

Every run here is a ``python -m realtime`` subprocess on a synthetic source, bounded in frames and
time; viewers are plain sockets and urllib (the browser test is in test_serve_browser.py).
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from realtime_helpers import REPO_ROOT, leftovers, read_jsonl

from realtime.serve import FrameHub, ServeOptions, parse_serve, serve_options

pytestmark = pytest.mark.slow
URL_LINE = re.compile(r"live view: (http://\S+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(model: Path, tmp_path: Path, *extra: str, frames: int = 100000, host: str = "127.0.0.1",
            env: dict[str, str] | None = None, source: str | None = None) -> Iterator[tuple[subprocess.Popen, str]]:
    """A run with --serve; yields the process and the URL it printed (token included)."""
    import os

    port = free_port()
    source = source or f"synthetic:faces=2,frames={frames},size=320x240,fps=30"
    cmd = [sys.executable, "-m", "realtime", "--source", source,
           "--no-display", "--no-progress", "--model", str(model), "--serve", f"{host}:{port}", *extra]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    url = None
    deadline = time.monotonic() + 60
    lines = []
    try:
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            match = URL_LINE.search(line)
            if match:
                url = match.group(1)
        assert url is not None, "".join(lines)
        base = f"http://127.0.0.1:{port}"
        wait_for_frame(base, url)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            stream.close()


def token_of(url: str) -> str:
    match = re.search(r"token=([\w-]+)", url)
    return match.group(1) if match else ""


def get(url: str, headers: dict[str, str] | None = None, timeout: float = 10) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for_frame(base: str, url: str) -> None:
    token = token_of(url)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            status, _ = get(f"{base}/frame.jpg" + (f"?token={token}" if token else ""), timeout=5)
        except OSError:
            status = 0
        if status == 200:
            return
        time.sleep(0.2)
    raise AssertionError("no frame was served within 60 s")


def stats(base: str, token: str = "") -> dict:
    status, body = get(f"{base}/stats.json" + (f"?token={token}" if token else ""))
    assert status == 200, body
    return json.loads(body)


def open_stream(base: str, path: str) -> socket.socket:
    """A raw viewer: sends the request and returns the socket unread."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    return sock


# -- units ---------------------------------------------------------------------------------------
def test_parse_serve_forms() -> None:
    assert parse_serve("8080") == ("127.0.0.1", 8080)
    assert parse_serve("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_serve("[::1]:8081") == ("::1", 8081)
    import argparse

    for bad in ("http", "host:0", "host:70000", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_serve(bad)


def test_a_token_is_required_only_off_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FACE_GENDER_SERVE_TOKEN", raising=False)
    assert serve_options(("127.0.0.1", 1), None, 5).token is None
    generated = serve_options(("0.0.0.0", 1), None, 5).token
    assert generated and len(generated) >= 20
    assert serve_options(("0.0.0.0", 1), "given", 5).token == "given"
    monkeypatch.setenv("FACE_GENDER_SERVE_TOKEN", "from-env")
    assert serve_options(("0.0.0.0", 1), None, 5).token == "from-env"


def test_hub_keeps_frames_only_for_viewers_and_encodes_each_once() -> None:
    hub = FrameHub(ServeOptions(max_viewers=2))
    assert hub.jpeg() is None
    calls = []
    image = np.full((48, 64, 3), 128, np.uint8)
    hub.publish(image, [], 10.0, lambda: calls.append(1) or {"frame": 0})
    assert hub.jpeg() is None and hub.frames == 1  # nobody watches: counted, not kept
    assert hub.enter()
    hub.publish(image, [], 10.0, lambda: calls.append(1) or {"frame": 0})
    first = hub.jpeg()
    assert first is not None and first[1][:2] == b"\xff\xd8"
    assert hub.jpeg() is first  # the second viewer gets the same bytes: no second encode
    event = hub.event()
    assert event is not None and event["frame"] == 0 and event["live"]["fps"] == 10.0
    assert calls == [1]  # the record is made once, and only because an event viewer asked
    hub.publish(image, [], 10.0, lambda: {"frame": 1})  # within 1/max_fps of the last one: not kept
    assert hub.jpeg() is first
    assert hub.enter() and not hub.enter()
    hub.leave()
    assert hub.enter()


# -- end to end --------------------------------------------------------------------------------------
def test_page_frame_events_and_counts(colour_model: Path, tmp_path: Path) -> None:
    with serving(colour_model, tmp_path) as (_, url):
        base = url.split("/?")[0].rstrip("/")
        status, page = get(base + "/")
        assert status == 200 and b"live view" in page
        for asset in ("/static/serve.js", "/static/serve.css"):
            assert get(base + asset)[0] == 200
        status, jpeg = get(base + "/frame.jpg")
        assert status == 200 and jpeg[:2] == b"\xff\xd8"
        sock = open_stream(base, "/events")
        buf = b""
        while buf.count(b"event: frame") < 2:
            chunk = sock.recv(65536)
            assert chunk
            buf += chunk
        sock.close()
        event = json.loads(buf.split(b"event: frame\ndata: ")[1].split(b"\n\n")[0])
        assert {"frame", "time_s", "source", "faces", "live"} <= set(event)
        assert event["faces"] and {"track_id", "box", "label", "p_female"} <= set(event["faces"][0])
        first = stats(base)
        time.sleep(1.0)
        later = stats(base)
        assert later["frames"] > first["frames"] and later["faces_now"] >= 1
        assert later["distinct_tracks"] >= 1 and sum(later["distinct_tracks_by_label"].values()) == \
            later["distinct_tracks"]


def test_foreign_origin_host_and_writes_are_refused(colour_model: Path, tmp_path: Path) -> None:
    with serving(colour_model, tmp_path) as (_, url):
        base = url.split("/?")[0].rstrip("/")
        assert get(base + "/frame.jpg", {"Origin": "http://evil.example"})[0] == 403
        assert get(base + "/stream.mjpg", {"Sec-Fetch-Site": "cross-site"})[0] == 403
        assert get(base + "/stats.json", {"Host": "evil.example"})[0] == 400  # DNS rebinding
        req = urllib.request.Request(base + "/stats.json", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=10)
        assert info.value.code == 405


def test_non_loopback_bind_needs_the_token(colour_model: Path, tmp_path: Path) -> None:
    with serving(colour_model, tmp_path, host="0.0.0.0", env={"FACE_GENDER_SERVE_TOKEN": ""}) as (_, url):
        token = token_of(url)
        assert token, url
        base = f"http://127.0.0.1:{url.split(':')[2].split('/')[0]}"
        for path in ("/", "/frame.jpg", "/stream.mjpg", "/events", "/stats.json"):
            status, body = get(base + path)
            assert status == 401 and b"\xff\xd8" not in body, path
        assert get(base + "/frame.jpg?token=wrong")[0] == 401
        assert get(f"{base}/frame.jpg?token={token}")[0] == 200
        assert get(base + "/frame.jpg", {"Authorization": f"Bearer {token}"})[0] == 200


def test_viewers_beyond_the_limit_get_429(colour_model: Path, tmp_path: Path) -> None:
    with serving(colour_model, tmp_path, "--serve-max-viewers", "2") as (_, url):
        base = url.split("/?")[0].rstrip("/")
        viewers = [open_stream(base, "/stream.mjpg"), open_stream(base, "/events")]
        for v in viewers:
            assert v.recv(64).startswith(b"HTTP/1.1 200")
        assert get(base + "/stream.mjpg")[0] == 429
        assert get(base + "/frame.jpg")[0] == 200  # single frames are not streams
        for v in viewers:
            v.close()
        deadline = time.monotonic() + 10
        while stats(base)["viewers"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert stats(base)["viewers"] == 0


def test_a_stalled_viewer_does_not_hold_up_the_run(colour_model: Path, tmp_path: Path) -> None:
    """A viewer that reads one frame and stops reading: the run still processes every frame."""
    jsonl = tmp_path / "out.jsonl"
    with serving(colour_model, tmp_path, "--jsonl", str(jsonl), frames=400) as (proc, url):
        base = url.split("/?")[0].rstrip("/")
        stalled = open_stream(base, "/stream.mjpg")
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert stalled.recv(4096)  # one read, then nothing
        proc.wait(timeout=120)
        assert proc.returncode == 0, proc.stderr.read()
        stalled.close()
    assert len(read_jsonl(jsonl)) == 400


def test_ctrl_c_with_viewers_ends_cleanly(colour_model: Path, tmp_path: Path) -> None:
    jsonl = tmp_path / "live.jsonl"
    with serving(colour_model, tmp_path, "--jsonl", str(jsonl)) as (proc, url):
        base = url.split("/?")[0].rstrip("/")
        events = open_stream(base, "/events")
        stream = open_stream(base, "/stream.mjpg")
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        stderr = proc.stderr.read()
        assert proc.returncode == 130, stderr
        assert "Traceback" not in stderr
        events.settimeout(10)
        tail = b""
        while True:
            try:
                chunk = events.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            tail += chunk
        assert b"event: end" in tail  # the page learns that the stream ended
        events.close()
        stream.close()
    records = read_jsonl(jsonl)
    assert records and all("faces" in r for r in records)
    assert not leftovers(tmp_path)


def test_privacy_applies_to_what_is_served(colour_model: Path, tmp_path: Path) -> None:
    """--privacy: the events carry no box or detector score (the frames are the blurred ones)."""
    with serving(colour_model, tmp_path, "--privacy") as (_, url):
        base = url.split("/?")[0].rstrip("/")
        sock = open_stream(base, "/events")
        buf = b""
        while b"event: frame" not in buf or not buf.endswith(b"\n\n"):
            chunk = sock.recv(65536)
            assert chunk
            buf += chunk
        sock.close()
        event = json.loads(buf.split(b"event: frame\ndata: ")[1].split(b"\n\n")[0])
        assert event["faces"] and all("box" not in f and "detector_score" not in f for f in event["faces"])
