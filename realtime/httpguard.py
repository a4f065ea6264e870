"""Who may talk to a local HTTP server of ours: the rules, free of any web framework.

Both the web app (``realtime.web.guard``, Starlette) and the live view server (``realtime.serve``,
the standard library's ``http.server``) apply these, so a rule is written once:

* **Host** (DNS rebinding): a page on another site can make a browser send requests to a loopback
  server under a name it controls; the server answers only the names it was opened under.
* **Same origin** (cross-site request forgery, cross-site reading): browsers send ``Sec-Fetch-Site``
  and ``Origin`` with cross-site requests, and a page cannot forge either; a request with neither
  comes from a program (curl, a script), not from another site in a user's browser.
* The same security headers on every response, refusals included.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from urllib.parse import urlsplit

SECURITY_HEADERS = [
    # Only this server: no CDN, no fonts, no analytics, no frames (see docs/web.md, privacy).
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
     b"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})


def is_loopback(host: str) -> bool:
    """Whether a bind address reaches this machine only (a host name is assumed to reach further)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def hostname(host_header: str) -> str:
    """The host part of a ``Host`` header (``[::1]`` kept in brackets)."""
    if host_header.startswith("["):
        return host_header.split("]")[0] + "]"
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def cross_site(headers: Mapping[str, str]) -> str | None:
    """Why a request is from another site (None when it is from the server's own page or from no
    browser at all). ``headers`` have lower-case names."""
    site = headers.get("sec-fetch-site")
    if site is not None and site.lower() not in ("same-origin", "none"):
        return f"Sec-Fetch-Site: {site}"
    origin = headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or parts.netloc.lower() != headers.get("host", "").lower():
            return f"Origin: {origin}"
    return None


def refusal(method: str, path: str, headers: Mapping[str, str], allowed_hosts: frozenset[str] | None,
            same_origin_always: bool = False) -> tuple[int, str] | None:
    """``(status, message)`` when the request must be refused, else None.

    State-changing requests and WebSockets must come from the server's own page; with
    ``same_origin_always`` every request must (a server whose every answer is private, such as a
    camera's frames, lets no other site read it)."""
    host = headers.get("host", "")
    if allowed_hosts is not None and hostname(host).lower() not in allowed_hosts:
        return 400, f"refused a request for host {host!r}: open the address the program printed when it started"
    if same_origin_always or method == "WebSocket" or method in STATE_CHANGING:
        reason = cross_site(headers)
        if reason is not None:
            return 403, f"refused a {method} {path} from another site ({reason}): use the server's own page"
    return None
