"""The opaque cursor of cursor-based pagination (RFC 9865 §2; RFC 7644 §3.4.2.4 for index paging).

A cursor names the last resource id of the page it ends, base64url-encoded and versioned
(``c1.``), so that the next page continues after that id whatever was created or deleted in
between. Clients must treat it as opaque (RFC 9865 §2.2); one this service did not issue is a
400 ``invalidCursor``.
"""

from __future__ import annotations

import base64

from scim.core.errors import InvalidCursor

__all__ = ["decode_cursor", "encode_cursor"]

_CURSOR_PREFIX = "c1."
_MAX_CURSOR_LENGTH = 512


def encode_cursor(last_id: str) -> str:
    """An opaque cursor (RFC 9865 §2.2): the last id of the page, base64url-encoded and versioned."""
    return _CURSOR_PREFIX + base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str | None:
    """The id a cursor continues after; an empty cursor asks for the first page (RFC 9865 §2.1)."""
    if not cursor:
        return None
    if not cursor.startswith(_CURSOR_PREFIX) or len(cursor) > _MAX_CURSOR_LENGTH:
        raise InvalidCursor("The cursor was not issued by this service.")
    encoded = cursor[len(_CURSOR_PREFIX) :]
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise InvalidCursor("The cursor was not issued by this service.") from None
