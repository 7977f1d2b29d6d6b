"""The change events feed of a tenant, a page at a time (issue 12, "The feed (pull)").

``GET /api/v1/tenants/{tenant}/events?after={cursor}&limit={n}`` (:mod:`scim.functions.events_adapter`)
and ``python -m scim.admin events`` (:mod:`scim.admin.events`) both serve the feed through
:func:`read_page`, which does no I/O but **one** :meth:`~scim.store.base.DirectoryStore.read_events`
call per page. A page is::

    {"data": [events, oldest first], "next": "<cursor>"}

**The settle horizon.** Only events stamped before ``now - EVENTS_SETTLE_SECONDS``
(:func:`scim.store.event_timing.settled_before`) are served: every event stamped before that
is visible already or will never commit, so nothing can appear later behind a position the
consumer has passed (``docs/events.md``, "Why the feed never skips an event"). The feed is
therefore about 15 s behind the commits.

**The cursor** is opaque to consumers: URL-safe base64 (no padding) of a small JSON object,
``{"v": 1, "t": tenant, "p": position}``. ``v`` is the format's version; ``t`` the tenant whose
feed it continues (a cursor of another tenant is refused: mixing them would skip events);
``p`` a feed position, ``{stamp:016d}|{event id}`` or ``{stamp:016d}|{row id}|{index:03d}`` (the
last event served; the second for the events of a member PATCH, stored together in one row, so
that a page may end inside a row and the next one resume there), or ``{stamp:016d}`` alone (a
horizon: every event stamped before it has been served). ``next`` is always present:

- after a page with events, the position of its last event;
- after an empty page, the later of the incoming position and the horizon the page was read
  at: nothing stamped before the horizon can still appear (see above), so a consumer polling
  an idle tenant keeps a fresh cursor, which does not expire while it polls. Polling with
  ``next`` is always right; an empty ``data`` means "nothing new yet".

**Retention.** Events are purged ``EVENTS_RETENTION_DAYS`` after their stamp (the timer,
:mod:`scim.functions.timer_adapter`). A cursor whose position is older than
``now - EVENTS_RETENTION_DAYS`` may have had events after it purged: it is **expired**
(:class:`CursorExpired`, HTTP 410), and the consumer starts again without ``after``. Without
``after`` the feed starts at the oldest retained event: the first one stamped at or after
``now - EVENTS_RETENTION_DAYS`` (older ones the timer has not removed yet are not served, as
their cursor would be expired at once).

Errors are :class:`FeedError` (a ValueError): ``status`` (400, 404, 410), a stable ``code`` and a
message for the consumer.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from scim.store.base import DirectoryStore
from scim.store.event_timing import settled_before, wall_us
from scim.tenants import InvalidTenantName, validate_tenant_name

__all__ = [
    "CURSOR_VERSION",
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "CursorExpired",
    "FeedError",
    "InvalidCursor",
    "InvalidLimit",
    "UnknownTenant",
    "decode_cursor",
    "encode_cursor",
    "parse_limit",
    "position_stamp",
    "read_page",
    "retention_floor",
]

DEFAULT_LIMIT = 100
"""Events per page when ``limit`` is not given."""
MAX_LIMIT = 1000
"""The largest ``limit`` (one storage query returns at most 1,000 entities)."""
CURSOR_VERSION = 1
"""The version of the cursor format (``v``)."""

_DAY_US = 86_400 * 1_000_000
_MAX_CURSOR = 1024  # characters; a cursor is about 120
_POSITION = re.compile(r"\d{16}(?:\|[!-{}~]{1,256}(?:\|\d{3})?)?")  # {stamp:016d}[|{id}[|{index:03d}]]
_LIMIT = re.compile(r"[0-9]{1,7}")


class FeedError(ValueError):
    """A request the feed cannot serve: ``status`` (HTTP), ``code`` (stable, for programs) and
    ``message`` (for people; ``str()`` too)."""

    status = 400
    code = "invalid_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidLimit(FeedError):
    """``limit`` is not a whole number from 1 to :data:`MAX_LIMIT`."""

    code = "invalid_limit"

    def __init__(self) -> None:
        super().__init__(f"limit must be a whole number from 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT}).")


class InvalidCursor(FeedError):
    """``after`` is not a cursor this feed issued for this tenant."""

    code = "invalid_cursor"


class CursorExpired(FeedError):
    """The cursor's position is older than the retention: events after it may have been purged."""

    status = 410
    code = "cursor_expired"

    def __init__(self, retention_days: int) -> None:
        super().__init__(
            f"This cursor has expired: it points more than {retention_days} days back "
            f"(EVENTS_RETENTION_DAYS), and events after it may have been deleted. Start again "
            "without 'after' (from the oldest retained event) and resynchronise from the SCIM data "
            "if you need every change."
        )


class UnknownTenant(FeedError):
    """No such tenant (or not a tenant name at all)."""

    status = 404
    code = "tenant_not_found"

    def __init__(self, tenant: str) -> None:
        shown = tenant if _printable_name(tenant) else "(not a tenant name)"
        super().__init__(f"There is no tenant {shown}.")


def _printable_name(tenant: str) -> bool:
    try:
        validate_tenant_name(tenant)
    except InvalidTenantName:
        return False
    return True


def parse_limit(text: str | None) -> int:
    """``limit`` of a request: :data:`DEFAULT_LIMIT` when absent or empty, else a whole number
    from 1 to :data:`MAX_LIMIT` (digits only), else :class:`InvalidLimit`."""
    if text is None or text == "":
        return DEFAULT_LIMIT
    if not _LIMIT.fullmatch(text) or not 1 <= int(text) <= MAX_LIMIT:
        raise InvalidLimit()
    return int(text)


def position_stamp(position: str) -> int:
    """The stamp of a feed position (microseconds since the epoch): its first 16 digits."""
    return int(position[:16])


def encode_cursor(tenant: str, position: str) -> str:
    """The cursor continuing ``tenant``'s feed after ``position`` (see the module docstring)."""
    text = json.dumps({"v": CURSOR_VERSION, "t": tenant, "p": position}, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode("ascii")).decode("ascii").rstrip("=")


def decode_cursor(tenant: str, cursor: str) -> str:
    """The position of a cursor of ``tenant``'s feed; :class:`InvalidCursor` for anything else
    (not base64 of the JSON object, another version, another tenant, not a position)."""
    invalid = InvalidCursor(
        "after is not a cursor of this feed: pass the 'next' value of a previous page unchanged, "
        "or leave 'after' out to start at the oldest retained event."
    )
    if not cursor or len(cursor) > _MAX_CURSOR or not cursor.isascii():
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw.decode("ascii"))
    except (binascii.Error, ValueError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise invalid from None
    if not isinstance(data, dict) or set(data) != {"v", "t", "p"}:
        raise invalid
    if type(data["v"]) is not int:
        raise invalid
    if data["v"] != CURSOR_VERSION:
        raise InvalidCursor("after is a cursor of another version of this feed; start again without 'after'.")
    position = data["p"]
    if not isinstance(position, str) or not _POSITION.fullmatch(position):
        raise invalid
    if data["t"] != tenant:
        raise InvalidCursor("after is a cursor of another tenant's feed: each tenant's feed has its own cursors.")
    return position


def retention_floor(now: int, retention_days: int) -> int:
    """The oldest stamp the feed keeps (microseconds): ``now - EVENTS_RETENTION_DAYS``."""
    return now - retention_days * _DAY_US


async def read_page(
    store: DirectoryStore,
    tenant: str,
    after_cursor: str | None,
    limit: int = DEFAULT_LIMIT,
    now: int | None = None,
    *,
    settle_seconds: float,
    retention_days: int,
) -> dict[str, Any]:
    """One page of ``tenant``'s feed after ``after_cursor`` (None: from the oldest retained
    event): ``{"data": [events, oldest first], "next": cursor}``.

    ``now`` is the wall clock in microseconds since the epoch (default: now); the page holds
    the events stamped before ``now - settle_seconds``, at most ``limit``, read by one
    :meth:`~scim.store.base.DirectoryStore.read_events` call. Raises :class:`UnknownTenant`
    for a name that is no tenant name (before any I/O; whether the tenant exists is the
    caller's check), :class:`InvalidLimit`, :class:`InvalidCursor` and :class:`CursorExpired`.
    """
    try:
        validate_tenant_name(tenant)
    except InvalidTenantName:
        raise UnknownTenant(tenant) from None
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidLimit()
    now = wall_us() if now is None else now
    horizon = settled_before(now, settle_seconds)
    floor = retention_floor(now, retention_days)
    if after_cursor is None:
        # From the oldest retained event: the positions of older stamps all sort below this one.
        position = f"{max(floor, 0):016d}"
    else:
        position = decode_cursor(tenant, after_cursor)
        if position_stamp(position) < floor:
            raise CursorExpired(retention_days)
    events = await store.read_events(tenant, after=position, before=horizon, limit=limit)
    # After an empty page: the horizon, as nothing stamped before it can still appear.
    last = events[-1].position if events else max(position, f"{max(horizon, 0):016d}")
    return {"data": [e.event for e in events], "next": encode_cursor(tenant, last)}
