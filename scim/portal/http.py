"""The portal's own small request and response, independent of Azure Functions.

:mod:`scim.functions.portal_adapter` turns a ``func.HttpRequest`` into a :class:`PortalRequest`
and a :class:`PortalResponse` back into a ``func.HttpResponse``; everything under
:mod:`scim.portal` works on these, so it is tested without the Functions runtime and never
imports an adapter (tests/test_layers.py).

Every answer carries :data:`SECURITY_HEADERS` (no inline script or style anywhere: the CSP
allows the portal's own files only; no framing; no referrer, so a setup link's secret never
leaves in a ``Referer``; nothing stored by caches but the static files).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "HTML",
    "MAX_FORM_BYTES",
    "SECURITY_HEADERS",
    "PortalRequest",
    "PortalResponse",
    "html",
    "redirect",
]

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
HTML = "text/html; charset=utf-8"
MAX_FORM_BYTES = 64 * 1024
"""The largest form body the portal reads (its forms carry a few short fields)."""


@dataclass(frozen=True)
class PortalRequest:
    """One request under ``/portal/``: ``path`` is what follows ``/portal/`` (no leading slash),
    ``headers`` have lower-case names, ``query`` holds the first value of each parameter."""

    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def cookie(self, name: str) -> str | None:
        """The value of cookie ``name`` (None when absent); other cookies of the host, well formed
        or not, are ignored. Split on ``,`` too: a host may join several ``Cookie`` headers
        (HTTP/2 sends one per cookie) with ", "; the portal's values never hold one."""
        for pair in re.split(r"[;,]", self.headers.get("cookie", "")):
            key, sep, value = pair.strip().partition("=")
            if sep and key == name:
                return value.strip().strip('"')
        return None

    def form(self) -> dict[str, list[str]]:
        """The ``application/x-www-form-urlencoded`` body: every value of every field (an
        over-long or undecodable body reads as empty: the CSRF check then refuses it)."""
        if len(self.body) > MAX_FORM_BYTES:
            return {}
        try:
            text = self.body.decode("utf-8")
        except UnicodeDecodeError:
            return {}
        try:
            pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=200)
        except ValueError:  # more fields than any form of the portal has
            return {}
        fields: dict[str, list[str]] = {}
        for name, value in pairs:
            fields.setdefault(name, []).append(value)
        return fields


@dataclass
class PortalResponse:
    """An answer: status, body, content type, extra headers, the session cookie's ``Set-Cookie``
    (``set_cookie``) and other cookies' (``other_cookies``: the pending sign-in's). Several
    ``Set-Cookie`` headers reach the browser from Azure Functions as repeated headers of the
    ``func.HttpResponse`` (azure-functions turns them into the worker's cookies)."""

    status: int
    body: bytes = b""
    content_type: str = HTML
    headers: dict[str, str] = field(default_factory=dict)
    set_cookie: str | None = None
    other_cookies: list[str] = field(default_factory=list)

    def all_headers(self) -> dict[str, str]:
        """The headers to send: the security headers, then this answer's own (a static file's
        ``Cache-Control`` replaces ``no-store``), the content type and the session cookie."""
        headers = {**SECURITY_HEADERS, **self.headers, "Content-Type": self.content_type}
        if self.set_cookie is not None:
            headers["Set-Cookie"] = self.set_cookie
        return headers


def html(status: int, text: str) -> PortalResponse:
    return PortalResponse(status, text.encode("utf-8"))


def redirect(location: str, *, status: int = 303) -> PortalResponse:
    """See other (303): after a POST, or from a setup link to the tenant's page."""
    return PortalResponse(status, b"", "text/plain; charset=utf-8", {"Location": location})
