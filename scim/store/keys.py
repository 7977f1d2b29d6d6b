"""RowKeys of the directory table (see ``docs/table-layout.md``, "Key encoding").

Table Storage keys may not contain ``/``, ``\\``, ``#``, ``?`` or control characters and are
at most 1 KiB long, while SCIM values (``userName``, ``externalId``, ids taken from a URL
path) are arbitrary Unicode (RFC 7643 §2.1). Every value placed in a key is therefore
*encoded*:

- ``%``, ``|``, ``/``, ``\\``, ``#``, ``?``, ``~``, control characters (C0, DEL, C1) and anything
  non-ASCII become ``%XX`` of their UTF-8 bytes, so ``|`` is an unambiguous separator and
  keys sort by their prefix;
- an encoded value longer than :data:`MAX_ENCODED` characters becomes ``~h`` + the SHA-256
  hex of the value. Index lookups are exact matches (RFC 7644 §3.4.2.2 ``eq``), so equality
  of the hash is all they need. ``~`` itself is always percent-encoded in values, so a short
  value can never collide with a hashed one.

Every function here is pure.
"""

from __future__ import annotations

import hashlib
import uuid

from scim.store.base import ResourceKind

__all__ = [
    "MAX_ENCODED",
    "decode_value",
    "encode_value",
    "event_bound",
    "event_key",
    "event_position",
    "event_row_after",
    "event_stamp",
    "flag_group_id",
    "group_flag",
    "id_from_key",
    "membership_key",
    "membership_prefix",
    "multi_key",
    "multi_prefix",
    "partition_key",
    "prefix_range",
    "resource_key",
    "resource_prefix",
    "row_event_positions",
    "unique_key",
]

MAX_ENCODED = 400
"""Longest encoded value kept verbatim; longer ones are hashed."""

SEPARATOR = "|"
_SAFE = frozenset(chr(c) for c in range(0x20, 0x7F)) - set("%|/\\#?~")
_HASH_MARK = "~h"
_FLAG_PREFIX = "m_"

# Kind letters of the RowKeys (docs/table-layout.md, "Row kinds").
_RESOURCE_KIND = {"User": "u", "Group": "g"}
_UNIQUE_KIND = {"User": "U", "Group": "G"}


def encode_value(value: str) -> str:
    """Encode ``value`` for use inside a PartitionKey or RowKey (percent-encoding, then hashing).

    >>> encode_value("a/b|c")
    'a%2Fb%7Cc'
    >>> encode_value("é")
    '%C3%A9'
    """
    encoded = "".join(ch if ch in _SAFE else _percent(ch) for ch in value)
    if len(encoded) > MAX_ENCODED:
        return _HASH_MARK + hashlib.sha256(value.encode("utf-8")).hexdigest()
    return encoded


def _percent(ch: str) -> str:
    return "".join(f"%{byte:02X}" for byte in ch.encode("utf-8", "surrogatepass"))


def decode_value(encoded: str) -> str:
    """Invert :func:`encode_value` for a value that was not hashed; raises ValueError if it was.

    >>> decode_value("a%2Fb%7Cc")
    'a/b|c'
    """
    if encoded.startswith(_HASH_MARK):
        raise ValueError("a hashed key value cannot be decoded")
    if "%" not in encoded:  # nothing was escaped (every id the store assigns)
        return encoded
    raw = bytearray()
    i = 0
    while i < len(encoded):
        if encoded[i] == "%":
            raw.append(int(encoded[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.extend(encoded[i].encode("ascii"))
            i += 1
    return raw.decode("utf-8", "surrogatepass")


def partition_key(tenant: str) -> str:
    """The PartitionKey of a tenant: its (encoded) name; one partition per tenant."""
    return encode_value(tenant)


def _join(*parts: str) -> str:
    return SEPARATOR.join(parts)


def resource_prefix(resource_type: ResourceKind) -> str:
    """``u|`` or ``g|``: the prefix of every user / group entity."""
    return _RESOURCE_KIND[resource_type] + SEPARATOR


def resource_key(resource_type: ResourceKind, id: str) -> str:
    """``u|{id}`` / ``g|{id}``: the RowKey of a user or group entity."""
    return resource_prefix(resource_type) + encode_value(id)


def id_from_key(row_key: str, prefix: str) -> str:
    """The decoded value that follows ``prefix`` in ``row_key`` (a resource or member id)."""
    if not row_key.startswith(prefix):
        raise ValueError(f"{row_key!r} does not start with {prefix!r}")
    return decode_value(row_key[len(prefix) :])


def membership_prefix(group_id: str) -> str:
    """``m|{groupId}|``: the prefix of every membership row of a group."""
    return _join("m", encode_value(group_id), "")


def membership_key(group_id: str, member_id: str) -> str:
    """``m|{groupId}|{memberId}``: one membership, group -> member."""
    return membership_prefix(group_id) + encode_value(member_id)


def unique_key(resource_type: ResourceKind, attribute: str, key: str) -> str:
    """``U|{attr}|{key}`` / ``G|{attr}|{key}``: a unique index row (RFC 7643 §2.1 ``uniqueness``)."""
    return _join(_UNIQUE_KIND[resource_type], encode_value(attribute), encode_value(key))


def multi_prefix(resource_type: ResourceKind, attribute: str, key: str) -> str:
    """``X|U|{attr}|{key}|``: the prefix of the non-unique index rows of one (attr, key)."""
    return _join("X", _UNIQUE_KIND[resource_type], encode_value(attribute), encode_value(key), "")


def multi_key(resource_type: ResourceKind, attribute: str, key: str, id: str) -> str:
    """``X|U|{attr}|{key}|{id}``: one non-unique index row."""
    return multi_prefix(resource_type, attribute, key) + encode_value(id)


EVENT_PREFIX = "e" + SEPARATOR
"""``e|``: the prefix of every event row (``docs/events.md``)."""


def event_key(stamp: int, event_id: str) -> str:
    """``e|{stamp:016d}|{event id}``: one event row; ``stamp`` is the commit time in microseconds
    since the epoch, fixed-width so that RowKey order is commit order (then id order)."""
    return EVENT_PREFIX + f"{stamp:016d}" + SEPARATOR + encode_value(event_id)


def event_position(row_key: str) -> str:
    """The feed position of an event row: its RowKey without ``e|`` (``{stamp:016d}|{id}``)."""
    if not row_key.startswith(EVENT_PREFIX):
        raise ValueError(f"{row_key!r} is not an event row")
    return row_key[len(EVENT_PREFIX) :]


def row_event_positions(row_key: str, count: int) -> list[str]:
    """The positions of the ``count`` events stored together in one row (a member PATCH's
    transaction): ``{stamp:016d}|{row id}|{index:03d}``. They sort after every position of an
    earlier row and before every position of a later one (row ids have one length), and a
    position inside a row can resume a page (``docs/events.md``)."""
    base = event_position(row_key)
    return [f"{base}{SEPARATOR}{index:03d}" for index in range(count)]


def event_row_after(position: str) -> tuple[str, bool]:
    """Where a read after ``position`` starts: ``(lo, inclusive)``. A position inside a row
    (``…|{index:03d}``) starts at its row, included (its later events are still to come); any
    other position (``{stamp}|{id}``, or a horizon ``{stamp}``) after its row, excluded."""
    parts = position.split(SEPARATOR)
    if len(parts) == 3:
        return EVENT_PREFIX + SEPARATOR.join(parts[:2]), True
    return EVENT_PREFIX + position, False


def event_stamp(row_key: str) -> int:
    """The stamp of an event row (microseconds since the epoch)."""
    return int(event_position(row_key)[:16])


def event_bound(stamp: int) -> str:
    """``e|{stamp:016d}``: every event row stamped before ``stamp`` sorts below it, every other
    event row above it (a position continues with ``|``). Stamps are clamped to 16 digits."""
    return EVENT_PREFIX + f"{min(max(stamp, 0), 10**16 - 1):016d}"


def encode_prefix(value: str) -> str:
    """The percent-encoding of ``value`` without hashing: ``encode_value(v)`` starts with it
    whenever ``v`` starts with ``value`` and was not hashed (encoding is per character)."""
    return "".join(ch if ch in _SAFE else _percent(ch) for ch in value)


def index_prefixes(resource_type: ResourceKind, attribute: str, prefix: str, unique: bool) -> tuple[str, str]:
    """The two RowKey prefixes holding index rows whose key may start with ``prefix``:
    verbatim keys, and hashed (long) keys, which a caller must re-check."""
    kind = _UNIQUE_KIND[resource_type]
    head = (kind,) if unique else ("X", kind)
    return _join(*head, encode_value(attribute), encode_prefix(prefix)), _join(
        *head, encode_value(attribute), _HASH_MARK
    )


def prefix_range(prefix: str) -> tuple[str, str]:
    """``(lo, hi)`` such that a key starts with ``prefix`` iff ``lo <= key < hi``.

    ``hi`` is ``prefix`` with its last character replaced by its successor (``|`` -> ``}``).

    >>> prefix_range("m|g1|")
    ('m|g1|', 'm|g1}')
    """
    if not prefix:
        raise ValueError("empty prefix")
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def group_flag(group_id: str) -> str | None:
    """``m_{groupIdHex}``: the property naming a group on its member's entity.

    Only store-assigned ids (canonical UUID strings) can name a group; for anything else the
    group cannot exist, and None is returned.
    """
    try:
        parsed = uuid.UUID(group_id)
    except (ValueError, TypeError, AttributeError):
        return None
    if str(parsed) != group_id:
        return None
    return _FLAG_PREFIX + parsed.hex


def flag_group_id(property_name: str) -> str | None:
    """The group id named by a ``m_{hex}`` property, or None if the name is not a flag."""
    if not property_name.startswith(_FLAG_PREFIX):
        return None
    try:
        return str(uuid.UUID(hex=property_name[len(_FLAG_PREFIX) :]))
    except ValueError:
        return None
