"""The guard middleware: hosts, same-origin checks and security headers on every response."""

from __future__ import annotations

import json
import logging
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .common import (
    FORM_OVERHEAD,
    SECURITY_HEADERS,
    Settings,
    error_response,
)

log = logging.getLogger(__name__)

# --- the guard middleware -----------------------------------------------------------------------
def _hostname(host_header: str) -> str:
    if host_header.startswith("["):
        return host_header.split("]")[0] + "]"
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def cross_site(headers: dict[str, str]) -> str | None:
    """Why a request is from another site (None when it is from the app's own page or from no
    browser at all).

    Browsers send ``Sec-Fetch-Site`` and ``Origin`` with every cross-site POST, DELETE and
    WebSocket, and a page cannot forge either. A request with neither comes from a program
    (curl, a script), which no web page can make a user's browser send.
    """
    site = headers.get("sec-fetch-site")
    if site is not None and site.lower() not in ("same-origin", "none"):
        return f"Sec-Fetch-Site: {site}"
    origin = headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or parts.netloc.lower() != headers.get("host", "").lower():
            return f"Origin: {origin}"
    return None


class Guard:
    """Host check (DNS rebinding), same-origin POST/DELETE/WebSocket (cross-site request forgery), the
    upload size limit, and the security headers on every response, refusals included."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        allowed = self.settings.allowed_hosts
        if allowed is not None and _hostname(host).lower() not in allowed:
            await self._refuse(scope, receive, send_with_headers, 400, f"refused a request for host {host!r}: "
                               "open the app at the address it printed when it started")
            return
        method = "WebSocket" if scope["type"] == "websocket" else scope["method"]
        if method == "WebSocket" or method in STATE_CHANGING:
            reason = cross_site(headers)
            if reason is not None:
                await self._refuse(scope, receive, send_with_headers, 403,
                                   f"refused a {method} {scope['path']} from another site ({reason}): "
                                   "use the app's own page")
                return
        if method == "POST" and scope["path"] == "/api/upload":
            length = headers.get("content-length", "")
            if not length.isdigit():
                await self._refuse(scope, receive, send_with_headers, 411,
                                   "uploads must state their size (Content-Length)")
                return
            if int(length) > self.settings.max_upload_bytes + FORM_OVERHEAD:
                await self._refuse(scope, receive, send_with_headers, 413,
                                   f"the upload is {int(length) / 2**20:.1f} MB; "
                                   f"uploads are limited to {self.settings.max_upload_mb:g} MB")
                return
        await self.app(scope, receive, send_with_headers)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
        if scope["type"] != "websocket":
            await error_response(status, message)(scope, receive, send)
            return
        log.warning("%s", message)
        if "websocket.http.response" in scope.get("extensions", {}):  # a real HTTP refusal, with headers
            body = json.dumps({"error": message}).encode()
            await send({"type": "websocket.http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json"), (b"cache-control", b"no-store"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "websocket.http.response.body", "body": body})
            return
        await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})


