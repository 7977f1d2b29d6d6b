"""Templates and static files of the portal.

Pages are Jinja2 templates in ``scim/portal/templates/`` with autoescaping on (every value is
HTML-escaped unless a template says otherwise, which none does) and undefined names as errors.
The stylesheet and the script in ``scim/portal/static/`` are served at ``/portal/static/NAME``
with their content type and a year of caching: their URLs carry a hash of their content
(:func:`static_url`), so a new version is a new URL. Both are read once, at import.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from scim.portal.http import PortalResponse

__all__ = ["StaticFile", "page", "render", "static_file", "static_url"]

_HERE = Path(__file__).resolve().parent
_CONTENT_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
STATIC_CACHE = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    version: str


def _load_static() -> dict[str, StaticFile]:
    files = {}
    for path in sorted((_HERE / "static").iterdir()):
        if path.is_file() and path.suffix in _CONTENT_TYPES:
            body = path.read_bytes()
            files[path.name] = StaticFile(body, _CONTENT_TYPES[path.suffix], hashlib.sha256(body).hexdigest()[:12])
    return files


_STATIC = _load_static()


def static_url(name: str) -> str:
    """The URL of a static file, versioned by its content."""
    return f"/portal/static/{name}?v={_STATIC[name].version}"


def static_file(name: str) -> PortalResponse | None:
    """The answer for ``/portal/static/NAME``; None for a name that is not one of the files."""
    found = _STATIC.get(name)
    if found is None:
        return None
    return PortalResponse(200, found.body, found.content_type, {"Cache-Control": STATIC_CACHE})


_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.globals["static_url"] = static_url


def render(template: str, **values: Any) -> str:
    return _ENV.get_template(template).render(**values)


def page(status: int, template: str, **values: Any) -> PortalResponse:
    """An HTML answer rendered from ``template``."""
    return PortalResponse(status, render(template, **values).encode("utf-8"))
