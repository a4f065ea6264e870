"""The guard middleware: hosts, same-origin checks and security headers on every response."""

from __future__ import annotations

import json
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..httpguard import SECURITY_HEADERS, cross_site, refusal
from .common import FORM_OVERHEAD, Settings, error_response

__all__ = ["Guard", "cross_site"]

log = logging.getLogger(__name__)

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
        method = "WebSocket" if scope["type"] == "websocket" else scope["method"]
        refused = refusal(method, scope["path"], headers, self.settings.allowed_hosts)
        if refused is not None:
            await self._refuse(scope, receive, send_with_headers, *refused)
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


