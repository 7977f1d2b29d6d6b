"""Shared checks of the change events (issue 12, ``docs/events.md``), for the tests of several modules.

- :func:`raw_events`: a tenant's event rows, read raw from the directory table (not through the
  store), in feed order;
- :func:`event_violations`: the invariants tying a tenant's resources to its events (a change
  and its event exist together or not at all, never twice, in the order of the commits);
- :func:`all_events`, :data:`FAR`: every event through a store.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter, defaultdict
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables.aio import TableClient

from scim.store import keys
from scim.store.base import DirectoryStore, StoredEvent
from tests.helpers import Directory

FAR = 10**16 - 1
"""A ``before`` later than every stamp (the largest 16-digit stamp)."""

EVENT_ID = re.compile(r"^evt_[0-9a-f]{32}$")
TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
_IDENTITY = ("userName", "displayName", "externalId", "active")


async def raw_events(connection_string: str, prefix: str, tenant: str) -> list[StoredEvent]:
    """The tenant's event rows, read with a plain TableClient, in RowKey (feed) order."""
    lo, hi = keys.prefix_range(keys.EVENT_PREFIX)
    async with TableClient.from_connection_string(connection_string, table_name=f"{prefix}directory") as table:
        pager = table.query_entities(
            "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
            parameters={"pk": keys.partition_key(tenant), "lo": lo, "hi": hi},
        )
        try:
            rows = [row async for row in pager]
        except ResourceNotFoundError:  # no table yet: no events
            return []
    events = []
    for row in sorted(rows, key=lambda r: r["RowKey"]):
        parts = sorted((int(k[3:]), v) for k, v in row.items() if k.startswith("doc") and k[3:].isdigit())
        value = json.loads("".join(v for _, v in parts))
        if isinstance(value, list):  # the events of one member PATCH transaction
            positions = keys.row_event_positions(row["RowKey"], len(value))
            events += [StoredEvent(p, e) for p, e in zip(positions, value, strict=True)]
        else:
            events.append(StoredEvent(keys.event_position(row["RowKey"]), value))
    return events


async def all_events(store: DirectoryStore, tenant: str) -> list[StoredEvent]:
    """Every event of the tenant through ``store`` (pages of 1,000)."""
    found: list[StoredEvent] = []
    after: str | None = None
    while page := await store.read_events(tenant, after=after, before=FAR, limit=1000):
        found += page
        after = page[-1].position
    return found


def is_membership(event: dict[str, Any]) -> bool:
    return event.get("type") in MEMBERSHIP_TYPES


def subject(event: dict[str, Any]) -> str:
    """The id of the resource an event is about (a membership event's: its group)."""
    data = event["data"]
    return str(data["group"]["id"] if is_membership(event) else data["object"]["id"])


def by_resource(events: list[StoredEvent]) -> dict[tuple[str, str], list[StoredEvent]]:
    """Events per (``User``/``Group``, id), in feed order (membership events with their group)."""
    grouped: dict[tuple[str, str], list[StoredEvent]] = defaultdict(list)
    for stored in events:
        kind = "User" if stored.event["type"].startswith("user.") else "Group"
        grouped[(kind, subject(stored.event))].append(stored)
    return grouped


def by_membership(events: list[StoredEvent]) -> dict[tuple[str, str], list[str]]:
    """The types of the membership events per (group id, member id), in feed order."""
    return {pair: [kind for kind, _ in found] for pair, found in _pairs(events).items()}


def _pairs(events: list[StoredEvent]) -> dict[tuple[str, str], list[tuple[str, int]]]:
    grouped: dict[tuple[str, str], list[tuple[str, int]]] = defaultdict(list)
    for stored in events:
        if is_membership(stored.event):
            data = stored.event["data"]
            pair = (data["group"]["id"], data["member"]["id"])
            grouped[pair].append((stored.event["type"], int(stored.position[:16])))
    return grouped


def _in_commit_order(found: list[tuple[str, int]], window: int) -> tuple[list[str] | None, int]:
    """A pair's events (type, stamp) in feed order, put in an order that alternates from an add
    by swapping only events stamped less than ``window`` µs apart (transactions of the pair in
    flight at once: the one stamped later may commit first); None if there is none. Also the
    number of events moved."""
    pending, ordered, moved = list(found), [], 0
    while pending:
        wanted = (ADDED, REMOVED)[len(ordered) % 2]
        index = next(
            (i for i, (kind, stamp) in enumerate(pending) if kind == wanted and stamp - pending[0][1] < window), None
        )
        if pending[0][0] == wanted:
            index = 0
        if index is None:
            return None, moved
        moved += index > 0
        ordered.append(pending.pop(index)[0])
    return ordered, moved


def membership_violations(directory: Directory, events: list[StoredEvent], window: int = 0) -> list[str]:
    """Per (group, member) whose memberships all came from member PATCHes: in feed order the
    events alternate ``member_added``/``member_removed`` from an add (two of them stamped less
    than ``window`` µs apart may be swapped: see :func:`_in_commit_order`), and the last one
    agrees with the final membership while the group and the member are alive (a deleted one
    ends the membership without an event)."""
    problems: list[str] = []
    types = {stored.event["data"]["member"]["id"]: stored.event["data"]["member"]["type"] for stored in events
             if is_membership(stored.event)}  # fmt: skip
    for (group, member), found in _pairs(events).items():
        ordered, _ = _in_commit_order(found, window)
        if ordered is None:
            problems.append(f"group {group} member {member}: events {found}")
            continue
        alive = ("Group", group) in directory.resources and (types[member], member) in directory.resources
        if alive and ((group, member) in directory.memberships) != (ordered[-1] == ADDED):
            problems.append(
                f"group {group} member {member}: last event {ordered[-1]}, member now: "
                f"{(group, member) in directory.memberships}"
            )
    return problems


def reordered_memberships(events: list[StoredEvent], window: int) -> int:
    """How many membership events :func:`membership_violations` had to move (see there)."""
    return sum(_in_commit_order(found, window)[1] for found in _pairs(events).values())


def event_violations(directory: Directory, events: list[StoredEvent], tenant: str | None = None) -> list[str]:
    """Every broken invariant between a tenant's resources (read raw) and its events.

    - every event is well formed (id, tenant, time, position = its stamp and id), ids are unique;
    - per resource: one ``*.created`` first, at most one ``*.deleted`` and last, strictly later
      commit times in feed order;
    - a live resource has its ``*.created`` event and no ``*.deleted``, and its last event shows
      its current ``userName``/``displayName``/``externalId``/``active``; a resource with a
      ``*.deleted`` event is gone.

    Resources created without an event (by a store call in a test) are skipped.
    """
    problems: list[str] = []
    ids = Counter(e.event.get("id") for e in events)
    problems += [f"event id {i} appears {n} times" for i, n in ids.items() if n > 1]
    for stored in events:
        event, parts = stored.event, stored.position.split("|")
        in_row = len(parts) == 3 and bool(EVENT_ID.match(parts[1])) and bool(re.fullmatch(r"\d{3}", parts[2]))
        if not EVENT_ID.match(str(event.get("id"))) or not (in_row or parts[1:] == [event.get("id")]):
            problems.append(f"event at {stored.position}: bad id {event.get('id')!r}")
        if in_row != is_membership(event):
            problems.append(f"event at {stored.position}: a {event.get('type')} at this position")
        if tenant is not None and event.get("tenant") != tenant:
            problems.append(f"event {event.get('id')}: tenant {event.get('tenant')!r}")
        if not TIME.match(str(event.get("time"))):
            problems.append(f"event {event.get('id')}: bad time {event.get('time')!r}")
        if event.get("type") not in _TYPES:
            problems.append(f"event {event.get('id')}: unknown type {event.get('type')!r}")
    for (rtype, rid), mine in by_resource(events).items():
        types = [e.event["type"] for e in mine]
        noun = rtype.lower()
        if types.count(f"{noun}.created") > 1 or types.count(f"{noun}.deleted") > 1:
            problems.append(f"{rtype} {rid}: events {types}")
        if f"{noun}.created" in types and types[0] != f"{noun}.created":
            problems.append(f"{rtype} {rid}: created is not first: {types}")
        if f"{noun}.deleted" in types and types[-1] != f"{noun}.deleted":
            problems.append(f"{rtype} {rid}: deleted is not last: {types}")
        times = [e.event["time"] for e in mine if not is_membership(e.event)]
        if any(a >= b for a, b in itertools.pairwise(times)):
            problems.append(f"{rtype} {rid}: commit times not increasing in feed order: {times}")
        every = [e.event["time"] for e in mine]  # a transaction's membership events share their time
        if any(a > b for a, b in itertools.pairwise(every)):
            problems.append(f"{rtype} {rid}: commit times going back in feed order: {every}")
        live = (rtype, rid) in directory.resources
        if live and types[-1] == f"{noun}.deleted":
            problems.append(f"{rtype} {rid}: deleted, but its row is there")
        if not live and types[-1] != f"{noun}.deleted":
            problems.append(f"{rtype} {rid}: gone, without a deleted event: {types}")
        objects = [e.event["data"]["object"] for e in mine if not is_membership(e.event)]
        if live and objects:
            doc, obj = directory.doc(rtype, rid), objects[-1]
            differs = [a for a in _IDENTITY if doc.get(a) != obj.get(a)]
            if differs:
                problems.append(f"{rtype} {rid}: last event {types[-1]} shows other {differs} than the row")
    seen = {key for key in by_resource(events)}
    for key in directory.resources:
        if key not in seen and _created_by_service(directory, key):
            problems.append(f"{key[0]} {key[1]} exists without any event")
    return problems


def _created_by_service(directory: Directory, key: tuple[str, str]) -> bool:
    """Whether the resource was written with events (it records the stamp of its last event)."""
    return "eventStamp" in directory.resources[key]


ADDED, REMOVED = "group.member_added", "group.member_removed"
MEMBERSHIP_TYPES = {ADDED, REMOVED}
_TYPES = {f"{noun}.{verb}" for noun in ("user", "group") for verb in ("created", "updated", "deleted")} | {
    "user.deactivated",
    "user.reactivated",
    *MEMBERSHIP_TYPES,
}


def since(events: list[StoredEvent], ids: set[str]) -> list[dict[str, Any]]:
    """The events (documents) about the resources ``ids``, in feed order."""
    return [e.event for e in events if subject(e.event) in ids]
