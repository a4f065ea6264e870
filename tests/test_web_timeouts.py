"""Slow clients are cut off (issue 26.7: 320 connections sending headers or a body slowly were held
for 30 s): the request head must arrive within --header-timeout, the body within --body-timeout plus
its size at 16 KiB/s; a normal request still works, on a kept-alive connection too."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures import uvicorn_server

uvicorn = pytest.importorskip("uvicorn", reason="the web app needs requirements-web.txt")

from realtime.httpguard import LOOPBACK_HOSTS  # noqa: E402
from realtime.web.app import Settings, create_app  # noqa: E402
from realtime.web.timeouts import MIN_BODY_RATE, timed_protocol  # noqa: E402

HEAD_S, BODY_S = 1.0, 1.0


@pytest.fixture(scope="module")
def port(web_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    settings = Settings(model=web_model, workdir=tmp_path_factory.mktemp("web"), allowed_hosts=LOOPBACK_HOSTS)
    with uvicorn_server(create_app(settings), http=timed_protocol(HEAD_S, BODY_S), timeout_keep_alive=5) as free:
        yield free


def closed_after(sock: socket.socket, limit_s: float) -> tuple[float, bytes]:
    """Seconds until the server closes ``sock`` (reading whatever it sends), and what it sent."""
    started = time.monotonic()
    sock.settimeout(limit_s)
    received = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return time.monotonic() - started, received
        received += chunk


def test_a_slow_or_silent_request_head_gets_408_and_is_closed(port: int) -> None:
    silent = socket.create_connection(("127.0.0.1", port))
    slow = socket.create_connection(("127.0.0.1", port))
    with silent, slow:
        slow.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # the head never ends
        for sock in (silent, slow):
            seconds, answer = closed_after(sock, HEAD_S + 10)
            assert seconds < HEAD_S + 5
            assert answer.startswith(b"HTTP/1.1 408 ")


def test_a_slow_body_is_cut_off(port: int) -> None:
    length = 4000
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://127.0.0.1\r\n"
                     b"Content-Type: multipart/form-data; boundary=x\r\n"
                     + f"Content-Length: {length}\r\n\r\n".encode() + b"--x\r\n")
        seconds, _ = closed_after(sock, BODY_S + length / MIN_BODY_RATE + 10)
        assert seconds < BODY_S + length / MIN_BODY_RATE + 5


def test_many_slow_clients_are_all_let_go_and_the_app_still_answers(port: int) -> None:
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
    try:
        for sock in socks:
            sock.sendall(b"GET / HTTP/1.1\r\n")
        time.sleep(HEAD_S + 2)
        for sock in socks:
            assert closed_after(sock, 10)[0] < 10
    finally:
        for sock in socks:
            sock.close()
    with socket.create_connection(("127.0.0.1", port)) as sock:  # two requests on one kept-alive connection
        sock.settimeout(10)
        for _ in range(2):
            sock.sendall(b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            head = read_response(sock)
            assert head.startswith(b"HTTP/1.1 200 "), head[:200]
            time.sleep(HEAD_S + 0.5)  # idle between requests is keep-alive's business (5 s), not the head's


def read_response(sock: socket.socket) -> bytes:
    """One whole HTTP response (head and its Content-Length of body), however the bytes arrive."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, data
        body += chunk
    return head


def test_a_webcam_websocket_outlives_the_request_timeouts(port: int, face_image: object) -> None:
    """The upgrade hands the connection to the WebSocket protocol: the head/body deadlines must not
    follow it there (they once closed every webcam connection after --body-timeout)."""
    import json

    import cv2
    from websockets.sync.client import connect

    ok, jpeg = cv2.imencode(".jpg", cv2.resize(face_image, (320, 375)))  # type: ignore[call-overload]
    assert ok
    with connect(f"ws://127.0.0.1:{port}/api/live", origin=f"http://127.0.0.1:{port}", open_timeout=10) as ws:
        for _ in range(2):
            ws.send(jpeg.tobytes())
            assert json.loads(ws.recv(timeout=10))["faces"]
            time.sleep(HEAD_S + BODY_S + 1.5)  # past both deadlines
