"""Entity codecs of the directory table: a resource as a Table entity and back.

A user or group is the ``u|{id}``/``g|{id}`` entity of ``docs/table-layout.md`` ("Row kinds
inside a tenant's partition"): its JSON document in ``doc0..docN`` string properties of at most
32K UTF-16 code units, ``created``, ``lastModified``, ``idx`` (JSON of its index terms) and one
``m_{groupIdHex}`` bool per group it is in (``true`` member, ``false`` tombstone). An entity must
fit the Table service's limits (learn.microsoft.com: "Understanding the Table service data
model": 1 MiB, 252 properties) with room for 200 group flags; its ETag gives the resource's
SCIM version (RFC 7644 §3.14). ``eventStamp`` is the stamp of its last event (``docs/events.md``),
the floor of the next one's. An event is the ``e|{stamp}|{id}`` entity: its JSON in
``doc0..docN`` like a document. Every function here is pure.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from scim.core.events import slim, slim_membership
from scim.store import MAX_GROUPS_PER_RESOURCE, keys
from scim.store.base import EntityTooLarge, IndexTerms, Member, ResourceKind, StoredResource
from scim.store.event_timing import floor_after

# Azure Table Storage limits (learn.microsoft.com: "Understanding the Table service data model").
MAX_ENTITY_BYTES = 1024 * 1024
MAX_PROPERTIES = 252
CHUNK_UNITS = 32_000  # UTF-16 code units per string property (64 KiB limit)
_FLAG_BYTES = 8 + 2 * len("m_" + "0" * 32) + 1  # one m_{hex} bool property


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _chunks_utf16(text: str, units: int) -> list[str]:
    """``text`` cut into pieces of at most ``units`` UTF-16 code units, never inside a character."""
    if _utf16_len(text) == len(text):
        return [text[i : i + units] for i in range(0, len(text), units)] or [""]
    pieces: list[str] = []
    start, size = 0, 0
    for i, ch in enumerate(text):
        width = 2 if ord(ch) > 0xFFFF else 1
        if size + width > units:
            pieces.append(text[start:i])
            start, size = i, 0
        size += width
    pieces.append(text[start:])
    return pieces


def _dump_doc(doc: Mapping[str, Any] | list[Any]) -> str:
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: keep them as JSON escapes
        text = json.dumps(doc, separators=(",", ":"))
    return text


def _doc_properties(doc: Mapping[str, Any] | list[Any]) -> dict[str, str]:
    """``doc0..docN``: the JSON document in chunks that fit one string property."""
    return {f"doc{i}": chunk for i, chunk in enumerate(_chunks_utf16(_dump_doc(doc), CHUNK_UNITS))}


def _json_from(entity: Mapping[str, Any]) -> Any:
    """The JSON value held in ``doc0..docN`` (a document, an event, or a list of events)."""
    parts = sorted(
        (int(name[3:]), value) for name, value in entity.items() if name.startswith("doc") and name[3:].isdigit()
    )
    return json.loads("".join(value for _, value in parts))


def _doc_from(entity: Mapping[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = _json_from(entity)
    return doc


def _terms_json(index: IndexTerms) -> str:
    return json.dumps({"u": dict(index.unique), "m": sorted(index.multi)}, ensure_ascii=False, separators=(",", ":"))


def _terms_from(entity: Mapping[str, Any]) -> IndexTerms:
    raw = json.loads(entity.get("idx") or "{}")
    return IndexTerms(unique=raw.get("u", {}), multi=frozenset((a, k) for a, k in raw.get("m", [])))


def _live_flags(entity: Mapping[str, Any]) -> dict[str, bool]:
    """The ``m_{hex}`` properties that are ``true`` (tombstones dropped)."""
    return {name: True for name, value in entity.items() if value is True and keys.flag_group_id(name)}


def _groups(entity: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(sorted(keys.flag_group_id(name) or "" for name in _live_flags(entity)))


def _value_bytes(value: Any) -> int:
    if isinstance(value, bool):
        return 1
    if isinstance(value, (int, float)):
        return 8
    return 4 + 2 * _utf16_len(str(value))


def _entity_bytes(entity: Mapping[str, Any]) -> int:
    """The documented size of an entity: 4 + 2·len(keys) + Σ(8 + 2·len(name) + value)."""
    size = 4 + 2 * (len(entity["PartitionKey"]) + len(entity["RowKey"]))
    for name, value in entity.items():
        if name not in ("PartitionKey", "RowKey"):
            size += 8 + 2 * len(name) + _value_bytes(value)
    return size


def _check_fits(entity: Mapping[str, Any]) -> None:
    """EntityTooLarge unless the entity fits Table limits with room for 200 group flags."""
    room = MAX_GROUPS_PER_RESOURCE - sum(1 for name in entity if keys.flag_group_id(name))
    if len(entity) - 2 + room > MAX_PROPERTIES or _entity_bytes(entity) + room * _FLAG_BYTES > MAX_ENTITY_BYTES:
        raise EntityTooLarge(f"{entity['RowKey']}: the resource is too large to store")


def check_resource_fits(
    tenant: str, resource_type: ResourceKind, id: str, doc: Mapping[str, Any], index: IndexTerms, when: str
) -> None:
    """EntityTooLarge unless the resource fits the one Table entity :class:`~scim.store.tables.TableStore`
    writes for it (with room for its 200 group flags and its event stamp). The memory store
    checks it too, so that both stores refuse what Azure refuses."""
    _resource_entity(keys.partition_key(tenant), resource_type, id, doc, index, when, when, {}, "0" * 16)


def _resource_entity(
    pk: str,
    resource_type: ResourceKind,
    id: str,
    doc: Mapping[str, Any],
    index: IndexTerms,
    created: str,
    last_modified: str,
    flags: Mapping[str, bool],
    event_stamp: str | None = None,
) -> dict[str, Any]:
    """The ``u|{id}``/``g|{id}`` entity: document chunks, times, index terms, the stamp of its
    last event (a string: an Int64 costs the SDK's slow serializer) and group flags."""
    entity: dict[str, Any] = {"PartitionKey": pk, "RowKey": keys.resource_key(resource_type, id)}
    entity.update(_doc_properties(doc))
    entity.update(created=created, lastModified=last_modified, idx=_terms_json(index))
    if event_stamp is not None:
        entity["eventStamp"] = event_stamp
    entity.update(flags)
    _check_fits(entity)
    return entity


def _stored(
    resource_type: ResourceKind,
    entity: Mapping[str, Any],
    version: str,
    members: tuple[Member, ...] | None = None,
) -> StoredResource:
    return StoredResource(
        resource_type=resource_type,
        id=keys.id_from_key(entity["RowKey"], keys.resource_prefix(resource_type)),
        doc=_doc_from(entity),
        created=entity["created"],
        last_modified=entity["lastModified"],
        version=_version(version),
        groups=_groups(entity),
        members=members,
    )


def _event_floor(entity: Mapping[str, Any]) -> int:
    """The earliest stamp of the resource's next event (:func:`scim.store.event_timing.floor_after`)."""
    stamp = entity.get("eventStamp")
    return floor_after(entity.get("lastModified"), int(stamp) if isinstance(stamp, str) and stamp.isdigit() else None)


def _event_entity(pk: str, stamp: int, event: Mapping[str, Any]) -> dict[str, Any]:
    """The ``e|{stamp:016d}|{id}`` entity of an event: its JSON in ``doc0..docN``; an event too
    large for one entity is committed slimmed (:func:`scim.core.events.slim`)."""
    entity: dict[str, Any] = {"PartitionKey": pk, "RowKey": keys.event_key(stamp, event["id"])}
    entity.update(_doc_properties(event))
    if len(entity) > MAX_PROPERTIES or _entity_bytes(entity) > MAX_ENTITY_BYTES:
        entity = {"PartitionKey": pk, "RowKey": entity["RowKey"], **_doc_properties(slim(event))}
    return entity


def _events_entity(pk: str, stamp: int, row_id: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``e|{stamp:016d}|{row id}`` entity of the events of one member PATCH transaction (up
    to 49): their JSON list in ``doc0..docN``. About 400 bytes an event, 20 KB for 49; if long
    names make them too large for one entity, they are committed without the names
    (:func:`scim.core.events.slim_membership`)."""
    entity: dict[str, Any] = {"PartitionKey": pk, "RowKey": keys.event_key(stamp, row_id)}
    entity.update(_doc_properties(events))
    if len(entity) > MAX_PROPERTIES or _entity_bytes(entity) > MAX_ENTITY_BYTES:
        slimmed = [slim_membership(event) for event in events]
        entity = {"PartitionKey": pk, "RowKey": entity["RowKey"], **_doc_properties(slimmed)}
    return entity


def _etag(entity: Any) -> str:
    return str(entity.metadata["etag"])


def _version(etag: str) -> str:
    """The SCIM ``meta.version`` of a Table ETag (RFC 7644 §3.14): a weak ETag that hides storage details."""
    return f'W/"{hashlib.sha256(etag.encode()).hexdigest()[:20]}"'
