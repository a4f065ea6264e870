"""The HTTP timeouts uvicorn's h11 server lacks: a client that sends its request head or body slowly
(or opens a connection and sends nothing) is cut off instead of holding a connection for ever.

* **Head**: the request line and headers must arrive within ``header_timeout`` seconds of the
  connection opening (or of the first byte of the next request on a kept-alive connection);
  otherwise the server answers ``408 Request Timeout`` and closes the connection.
* **Body**: the body must arrive within ``body_timeout`` seconds plus the time its
  ``Content-Length`` takes at :data:`MIN_BODY_RATE` (16 KiB/s: a 50 MB upload may take 54 minutes,
  a slowloris sending a byte a second is cut off); otherwise the connection is closed and the
  upload is discarded.
* **Keep-alive**: an idle kept-alive connection is closed after ``timeout_keep_alive`` (uvicorn's own
  setting, :data:`KEEP_ALIVE_S`).

WebSocket connections (the live webcam) are not affected once upgraded: they have their own
frame-size and idle rules (see ``realtime.web.app``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from . import BODY_TIMEOUT_S, HEADER_TIMEOUT_S, KEEP_ALIVE_S, MIN_BODY_RATE

log = logging.getLogger(__name__)

__all__ = ["BODY_TIMEOUT_S", "HEADER_TIMEOUT_S", "KEEP_ALIVE_S", "MIN_BODY_RATE", "TimedH11Protocol",
           "timed_protocol"]
_TIMEOUT_408 = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for the request head and one for the body."""

    header_timeout: ClassVar[float] = HEADER_TIMEOUT_S
    body_timeout: ClassVar[float] = BODY_TIMEOUT_S

    _deadline: asyncio.TimerHandle | None = None
    _waiting_for: str | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm("head", self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self.conn.their_state is h11.IDLE:
            self._arm("head", self.header_timeout)  # the first byte of a kept-alive connection's next request
        super().data_received(data)
        self._follow()

    def _follow(self) -> None:
        """Move the deadline along with what the client has sent so far."""
        if self._handed_over():  # upgraded to a WebSocket: its own rules apply from here on
            self._disarm()
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            return  # still in the head (the head deadline stands)
        if state is h11.SEND_BODY:
            if self._waiting_for != "body":
                length = _content_length(self.headers)
                self._arm("body", self.body_timeout + (length or 0) / MIN_BODY_RATE)
            return
        self._disarm()  # DONE, MUST_CLOSE, SWITCHED_PROTOCOL (WebSocket), CLOSED, ERROR

    def _arm(self, what: str, seconds: float) -> None:
        self._disarm()
        self._waiting_for = what
        self._deadline = self.loop.call_later(seconds, self._expired, what)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._waiting_for = None, None

    def _handed_over(self) -> bool:
        """Whether uvicorn gave the connection to another protocol (a WebSocket upgrade)."""
        get = getattr(self.transport, "get_protocol", None)
        return get is not None and get() is not self

    def _expired(self, what: str) -> None:
        self._deadline, self._waiting_for = None, None
        if self.transport.is_closing() or self._handed_over():
            return
        where = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        log.info("closed a connection from %s: the request %s arrived too slowly", where, what)
        if what == "head" and self.conn.our_state is h11.IDLE:
            self.transport.write(_TIMEOUT_408)
        self.transport.close()


def _content_length(headers: list[tuple[bytes, bytes]] | None) -> int | None:
    for key, value in headers or []:
        if key == b"content-length":
            try:
                return max(0, int(value))
            except ValueError:
                return None
    return None


def timed_protocol(header_timeout: float, body_timeout: float) -> type[TimedH11Protocol]:
    """The protocol class with these deadlines (uvicorn takes a class, not an instance)."""
    return type("TimedH11Protocol", (TimedH11Protocol,), {"header_timeout": header_timeout,
                                                          "body_timeout": body_timeout})
