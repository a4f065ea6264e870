"""``--serve [HOST:]PORT``: watch a run's annotated live view from another device's browser.

A headless Raspberry Pi has no screen; this serves what the window would show, to a phone or a
laptop on the same network, with the standard library only (the runtime install stays lean):

  /             the page: the stream, FPS, faces now, distinct tracks by label, a snapshot button
  /stream.mjpg  the annotated frames as MJPEG (multipart/x-mixed-replace; every browser plays it)
  /frame.jpg    the latest annotated frame
  /events       Server-Sent Events: ``frame`` events with the newest frame's ``--jsonl`` record plus
                live counts (up to ``--serve-fps`` a second; ``--jsonl`` keeps every frame), and
                ``end`` when the run stops
  /stats.json   the latest counts

It never slows the pipeline: the run only hands over a reference to each annotated frame
(:meth:`FrameHub.publish`); a frame is JPEG-encoded at most once, in a server thread, only when a
viewer asks for it, and at most ``--serve-fps`` times a second however fast the pipeline runs;
every viewer gets the newest frame and a slow one skips frames (nothing queues). Safe by default:
loopback unless told otherwise, a token on any other address, the web app's host and same-origin
rules (``realtime.httpguard``), read-only, a bounded number of viewers.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np

from .errors import UserError
from .httpguard import LOOPBACK_HOSTS, SECURITY_HEADERS, is_loopback, refusal

log = logging.getLogger(__name__)

TOKEN_ENV = "FACE_GENDER_SERVE_TOKEN"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_MAX_VIEWERS = 5
JPEG_QUALITY = 75
MAX_SIDE = 960  # larger frames are downscaled for viewers (a phone screen gains nothing from more)
MAX_FPS = 25.0  # frames and events a second sent to viewers, whatever the pipeline's rate
KEEPALIVE_S = 10.0  # an SSE comment this often, so proxies and phones keep the connection open
BOUNDARY = "frame"


@dataclass(frozen=True)
class ServeOptions:
    host: str = DEFAULT_HOST
    port: int = 8080
    token: str | None = None  # required on non-loopback binds (generated when not given)
    max_viewers: int = DEFAULT_MAX_VIEWERS
    quality: int = JPEG_QUALITY
    max_side: int = MAX_SIDE
    max_fps: float = MAX_FPS

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def parse_serve(text: str) -> tuple[str, int]:
    """``PORT``, ``HOST:PORT`` or ``[V6]:PORT`` (argparse type of ``--serve``)."""
    import argparse

    host, _, port = text.rpartition(":")
    host = host.strip("[]") or DEFAULT_HOST
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected [HOST:]PORT, e.g. 8080 or 0.0.0.0:8080, got {text!r}") from None
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 1..65535, got {number}")
    return host, number


def serve_options(host_port: tuple[str, int], token: str | None, max_viewers: int,
                  max_fps: float = MAX_FPS) -> ServeOptions:
    """Options of a ``--serve`` run: a token from ``--serve-token``, the environment, or a new random
    one on any address other than loopback."""
    host, port = host_port
    token = token or os.environ.get(TOKEN_ENV) or None
    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(18)
    return ServeOptions(host=host, port=port, token=token, max_viewers=max_viewers, max_fps=max_fps)


class FrameHub:
    """The newest annotated frame and counts, handed from the run to the viewers."""

    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self._cond = threading.Condition()
        self._image: np.ndarray | None = None
        self._seq = 0
        self._jpeg: tuple[int, bytes] | None = None
        self._kept_at = -1e9  # when the run last handed a frame over (monotonic seconds)
        self._snapshots = 0  # /frame.jpg requests waiting for a frame
        self._record: dict[str, Any] | None = None
        self._record_fn: Callable[[], dict[str, Any]] | None = None
        self.ended = False
        self.viewers = 0
        self.fps: float | None = None
        self.faces_now = 0
        self.by_label_now: dict[str, int] = {}
        self._tracks: dict[int, str] = {}
        self.frames = 0
        self.started = time.time()

    # -- the run's side (cheap: no encoding, no JSON) ---------------------------------------
    def wanted(self) -> bool:
        return self.viewers > 0 or self._snapshots > 0

    def publish(self, image: np.ndarray, faces: list, fps: float | None,
                record: Callable[[], dict[str, Any]]) -> None:
        """Count one frame's faces; hand the annotated frame over (not copied: the run makes a new
        one per frame) with a function that makes its JSONL record, but only while someone watches
        and at most ``max_fps`` times a second. Keeping no frame otherwise matters: a reference to
        every frame costs the run a fresh frame-sized allocation per frame (measured: -10 % FPS)."""
        now: dict[str, int] = {}
        for face in faces:
            label = face.label or "uncertain"
            now[label] = now.get(label, 0) + 1
            self._tracks[face.track_id] = label
        self.frames += 1
        self.fps, self.faces_now, self.by_label_now = fps, len(faces), now
        if not self.wanted():
            if self._image is not None:
                with self._cond:
                    self._image, self._record_fn, self._record, self._jpeg = None, None, None, None
            return
        t = time.monotonic()
        if t - self._kept_at < 1.0 / self.options.max_fps:
            return
        self._kept_at = t
        with self._cond:
            self._image, self._record_fn, self._record, self._jpeg = image, record, None, None
            self._seq += 1
            self._cond.notify_all()

    def end(self) -> None:
        with self._cond:
            self.ended = True
            self._cond.notify_all()

    # -- the viewers' side ----------------------------------------------------------------------
    def wait(self, after: int, timeout: float) -> int:
        """The newest frame number once it is newer than ``after`` (or the run ended, or timeout)."""
        with self._cond:
            self._cond.wait_for(lambda: self._seq > after or self.ended, timeout)
            return self._seq

    def jpeg(self) -> tuple[int, bytes] | None:
        """The newest frame handed over, as JPEG, encoded once however many viewers ask."""
        with self._cond:
            if self._image is None:
                return self._jpeg
            if self._jpeg is not None and self._jpeg[0] == self._seq:
                return self._jpeg
            seq, image = self._seq, self._image
        side = max(image.shape[:2])
        if side > self.options.max_side:
            k = self.options.max_side / side
            image = cv2.resize(image, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.options.quality])
        if not ok:
            return None
        encoded = (seq, buf.tobytes())
        with self._cond:
            if self._jpeg is None or self._jpeg[0] < seq:
                self._jpeg = encoded
        return encoded

    def snapshot(self, timeout: float = 2.0) -> tuple[int, bytes] | None:
        """The newest frame as JPEG for a one-off request: the current one while someone watches,
        else the next one the run hands over (within ``timeout``)."""
        with self._cond:
            after = self._seq - 1 if self._image is not None and self.viewers else self._seq
            self._snapshots += 1
        try:
            with self._cond:
                self._cond.wait_for(lambda: self._seq > after or self.ended, timeout)
            return self.jpeg()
        finally:
            with self._cond:
                self._snapshots -= 1

    def event(self) -> dict[str, Any] | None:
        """The newest handed-over frame's record plus the live counts (None: no frame kept now)."""
        with self._cond:
            if self._record is None and self._record_fn is not None:
                self._record = self._record_fn()
            if self._record is None:
                return None
            record = dict(self._record)
        record["live"] = self.stats()
        return record

    def stats(self) -> dict[str, Any]:
        tracks: dict[str, int] = {}
        for label in list(self._tracks.values()):
            tracks[label] = tracks.get(label, 0) + 1
        return {"fps": None if self.fps is None else round(self.fps, 1), "frames": self.frames,
                "faces_now": self.faces_now, "faces_now_by_label": dict(self.by_label_now),
                "distinct_tracks": sum(tracks.values()), "distinct_tracks_by_label": tracks,
                "viewers": self.viewers, "ended": self.ended}

    def enter(self) -> bool:
        with self._cond:
            if self.viewers >= self.options.max_viewers:
                return False
            self.viewers += 1
            return True

    def leave(self) -> None:
        with self._cond:
            self.viewers -= 1


STATIC = {"/": ("serve.html", "text/html; charset=utf-8"),
          "/static/serve.js": ("serve.js", "text/javascript; charset=utf-8"),
          "/static/serve.css": ("serve.css", "text/css; charset=utf-8")}


def _static(name: str) -> bytes:
    return resources.files("realtime").joinpath("static", name).read_bytes()


class _Handler(BaseHTTPRequestHandler):
    server_version = "face-gender"
    protocol_version = "HTTP/1.1"
    hub: FrameHub
    allowed_hosts: frozenset[str] | None

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("serve: %s " + format, self.address_string(), *args)

    # -- plumbing ---------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self._security_headers()
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _security_headers(self) -> None:
        for name, value in SECURITY_HEADERS:
            self.send_header(name.decode(), value.decode())

    def _error(self, status: int, message: str) -> None:
        self._send(status, json.dumps({"error": message}).encode(), "application/json")

    def _authorised(self, query: dict[str, list[str]]) -> bool:
        token = self.hub.options.token
        if token is None:
            return True
        given = (query.get("token") or [""])[0]
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return hmac.compare_digest(given.encode(), token.encode())

    # -- requests ---------------------------------------------------------------------------------
    def do_GET(self) -> None:
        url = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        refused = refusal(self.command, url.path, headers, self.allowed_hosts, same_origin_always=True)
        if refused is not None:
            self._error(*refused)
            return
        if url.path in STATIC and url.path != "/":  # the page's script and style: no data in them
            name, content_type = STATIC[url.path]
            self._send(200, _static(name), content_type)
            return
        if not self._authorised(parse_qs(url.query)):
            self._error(401, "this live view needs its token: open the full address the program printed "
                             "(…/?token=…), or send Authorization: Bearer TOKEN")
            return
        route = {"/": self._index, "/frame.jpg": self._frame, "/stats.json": self._stats,
                 "/stream.mjpg": self._stream, "/events": self._events}.get(url.path)
        if route is None:
            self._error(404, f"no such page: {url.path}")
            return
        try:
            route()
        except (BrokenPipeError, ConnectionResetError, TimeoutError, OSError):
            pass  # the viewer went away

    do_HEAD = do_GET  # noqa: N815 - http.server dispatches by these names

    def _refuse_other(self) -> None:
        self._error(405, "this live view is read-only")

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse_other  # noqa: N815

    def _index(self) -> None:
        name, content_type = STATIC["/"]
        self._send(200, _static(name), content_type)

    def _stats(self) -> None:
        self._send(200, json.dumps(self.hub.stats()).encode(), "application/json")

    def _frame(self) -> None:
        encoded = self.hub.snapshot()
        if encoded is None:
            self._error(503, "no frame yet" if not self.hub.ended else "the run has ended")
            return
        self._send(200, encoded[1], "image/jpeg",
                   {"Content-Disposition": 'inline; filename="face-gender-frame.jpg"'})

    def _streaming(self, content_type: str, body: Callable[[], None]) -> None:
        """A long response (one viewer while it lasts): refused beyond the viewer limit."""
        if not self.hub.enter():
            self._error(429, f"{self.hub.options.max_viewers} viewers are watching already; try again later")
            return
        try:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self._security_headers()
            self.end_headers()
            body()
        finally:
            self.hub.leave()
            self.close_connection = True

    def _stream(self) -> None:
        def body() -> None:
            sent = 0
            while not self.hub.ended:
                newest = self.hub.wait(sent, KEEPALIVE_S)  # frames come at most max_fps a second
                encoded = self.hub.jpeg()
                if encoded is None or encoded[0] <= sent:
                    sent = max(sent, newest)
                    continue
                sent = encoded[0]
                self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                 f"{len(encoded[1])}\r\n\r\n".encode() + encoded[1] + b"\r\n")
                self.wfile.flush()

        self._streaming(f"multipart/x-mixed-replace; boundary={BOUNDARY}", body)

    def _events(self) -> None:
        def body() -> None:
            seq = 0
            while True:
                newest = self.hub.wait(seq, KEEPALIVE_S)  # at most max_fps a second: the newest frame's record
                if self.hub.ended:
                    self.wfile.write(f"event: end\ndata: {json.dumps(self.hub.stats())}\n\n".encode())
                    self.wfile.flush()
                    return
                event = self.hub.event() if newest != seq else None
                seq = newest
                if event is None:
                    self.wfile.write(b": keep-alive\n\n")
                else:
                    self.wfile.write(f"event: frame\ndata: {json.dumps(event)}\n\n".encode())
                self.wfile.flush()

        self._streaming("text/event-stream", body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 16


class LiveServer:
    """The HTTP server of one run, in a background thread; :meth:`close` ends every viewer."""

    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.hub = FrameHub(options)
        allowed = (frozenset(LOOPBACK_HOSTS | {options.host.lower()}) if options.loopback else None)
        handler = type("Handler", (_Handler,), {"hub": self.hub, "allowed_hosts": allowed})
        family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
        server_class = type("Server", (_Server,), {"address_family": family})
        try:
            self.server = server_class((options.host, options.port), handler)
        except OSError as exc:
            raise UserError(f"--serve {options.host}:{options.port}: cannot listen there ({exc.strerror or exc}); "
                            "choose another port, or a host address of this machine") from exc
        self.server.timeout = 0.5
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="serve", daemon=True)
        self.thread.start()
        log.warning("live view: %s", self.url())

    def url(self) -> str:
        host = self.options.host
        if host in ("0.0.0.0", "::", ""):
            host = _lan_address()
        host = f"[{host}]" if ":" in host else host
        query = f"?token={self.options.token}" if self.options.token else ""
        return f"http://{host}:{self.port}/{query}"

    def close(self, grace_s: float = 0.5) -> None:
        """Say ``end`` to every viewer, give them ``grace_s`` to receive it, stop the server."""
        self.hub.end()
        deadline = time.monotonic() + grace_s
        while self.hub.viewers and time.monotonic() < deadline:
            time.sleep(0.02)
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=2.0)


def _lan_address() -> str:
    """This machine's address on its local network (what a phone would open), best effort."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))  # no packet is sent: this only picks the outgoing interface
            return s.getsockname()[0]
    except OSError:
        return socket.gethostname()
