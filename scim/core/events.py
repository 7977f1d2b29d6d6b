"""Change events: their schema, and which event a change of a user or group gives (issue 12).

Every change the SCIM API commits to a user or group is described by one event, written by the
store in the same atomic write as the change (rule 10 of :mod:`scim.store.base`,
``docs/events.md``). An event is a JSON object (issue 12, "Events")::

    {
      "id": "evt_5f0c8e6a2b7d4c1e9a3f6b8d0c2e4a61",      # unique, stable across redeliveries
      "type": "user.deactivated",
      "tenant": "contoso",
      "time": "2026-12-01T18:00:00.000Z",                 # the commit time, as meta.lastModified
      "data": {"object": {...}}                            # the resource, see below
    }

``data.object`` is the resource as ``GET /Users/{id}`` or ``GET /Groups/{id}`` returns it just
after the change (RFC 7643 §3: ``schemas``, ``id``, the attributes, a user's ``groups``,
``meta``), except that a group's ``members`` are left out, and ``meta.version`` too: the version
is the storage's ETag of the write, unknown until it has committed. For ``*.deleted`` it is the
resource's last state. Types:

- ``user.created``, ``group.created``: a POST;
- ``user.updated``, ``group.updated``: a PUT or PATCH that changed the resource's attributes
  (a group PATCH that changes only ``members`` gives none here);
- ``user.deactivated`` / ``user.reactivated``: a change that flips ``active`` from true to
  false / false to true (instead of ``user.updated``, whatever else it changed); a user
  without ``active`` counts as active;
- ``user.deleted``, ``group.deleted``: a DELETE; it is the only event of the deletion, the
  memberships of the deleted resource end with it;
- ``group.member_added`` / ``group.member_removed``: one per member that joined or left a group
  (a PATCH adding 100 members gives 100; a re-added member or a removed non-member gives none).
  Instead of ``data.object`` they carry::

      "data": {"group": {"id": "...", "displayName": "Sales"},
               "member": {"id": "...", "type": "User", "userName": "bjensen@contoso.com"}}

  (a member that is a group has ``type: "Group"`` and its ``displayName``). The names are those
  the service knew when it committed the change (``docs/events.md``: possibly up to
  :data:`scim.core.names.MAX_AGE` old after a rename through another instance).

A request that changes nothing (Entra sending the same PATCH or PUT again) gives no event.
Everything here is pure (no I/O).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping
from typing import Any

from scim.core.resource import render
from scim.core.schema import USER, ResourceType
from scim.store.base import EventIntent, Member, MembershipEventIntent, StoredResource

__all__ = [
    "EVENT_TYPES",
    "classify",
    "created",
    "deleted",
    "event_document",
    "event_object",
    "membership",
    "membership_document",
    "new_event_id",
    "patched",
    "replaced",
    "slim",
    "slim_membership",
]

USER_CREATED = "user.created"
USER_UPDATED = "user.updated"
USER_DEACTIVATED = "user.deactivated"
USER_REACTIVATED = "user.reactivated"
USER_DELETED = "user.deleted"
GROUP_CREATED = "group.created"
GROUP_UPDATED = "group.updated"
GROUP_DELETED = "group.deleted"
GROUP_MEMBER_ADDED = "group.member_added"
GROUP_MEMBER_REMOVED = "group.member_removed"
MEMBERSHIP_TYPES = frozenset({GROUP_MEMBER_ADDED, GROUP_MEMBER_REMOVED})
EVENT_TYPES = frozenset(
    {
        USER_CREATED,
        USER_UPDATED,
        USER_DEACTIVATED,
        USER_REACTIVATED,
        USER_DELETED,
        GROUP_CREATED,
        GROUP_UPDATED,
        GROUP_DELETED,
        GROUP_MEMBER_ADDED,
        GROUP_MEMBER_REMOVED,
    }
)
"""The event types (issue 12, "Events")."""

_SLIM_KEYS = ("schemas", "id", "externalId", "userName", "displayName", "active", "meta")


def _noun(rtype: ResourceType) -> str:
    return "user" if rtype is USER else "group"


def new_event_id() -> str:
    """A fresh event id: ``evt_`` and 32 hex digits (a UUID4)."""
    return "evt_" + uuid.uuid4().hex


def event_document(*, id: str, type: str, tenant: str, time: str, obj: dict[str, Any]) -> dict[str, Any]:
    """The event as the feed gives it (see the module docstring)."""
    return {"id": id, "type": type, "tenant": tenant, "time": time, "data": {"object": obj}}


def membership_document(*, id: str, type: str, tenant: str, time: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """A membership event as the feed gives it: ``data`` is ``{"group": ..., "member": ...}``."""
    return {"id": id, "type": type, "tenant": tenant, "time": time, "data": dict(data)}


def slim_membership(event: Mapping[str, Any]) -> dict[str, Any]:
    """A membership event without the names (``data.group``/``data.member`` keep ``id`` and
    ``type``) and with ``data.truncated: true``: what the store commits when a transaction's
    events with their names would not fit one storage entity (names near their size limits)."""
    data = event["data"]
    group = {"id": data["group"]["id"]}
    member = {key: data["member"][key] for key in ("id", "type")}
    return {**event, "data": {"group": group, "member": member, "truncated": True}}


def membership(
    group_id: str,
    group_name: str | None,
    names: Mapping[tuple[str, str], str | None],
    last_modified: str | None = None,
) -> MembershipEventIntent:
    """The intent of a member PATCH of group ``group_id`` (``displayName`` ``group_name``):
    ``names`` maps (``User``/``Group``, id) to the member's ``userName``/``displayName``;
    ``last_modified``: the group's ``lastModified`` the caller last saw (a floor of the stamps)."""
    group: dict[str, Any] = {"id": group_id, "displayName": group_name}
    known = dict(names)

    def data(member: Member) -> dict[str, Any]:
        body: dict[str, Any] = {"id": member.value, "type": member.type}
        name = known.get((member.type, member.value))
        if name is not None:
            body["userName" if member.type == "User" else "displayName"] = name
        return {"group": dict(group), "member": body}

    return MembershipEventIntent(data, last_modified)


def slim(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event with ``data.object`` reduced to what identifies the resource (``schemas``,
    ``id``, ``externalId``, ``userName``/``displayName``, ``active``, ``meta``) and
    ``data.truncated: true``: what the store commits when the whole object would not fit a
    storage entity (a resource near the 1 MiB limit with its rendered ``groups``), so that
    every change can still commit its event; the consumer reads the rest with a GET."""
    data = event["data"]
    obj = data["object"]
    kept = {key: obj[key] for key in _SLIM_KEYS if key in obj}
    return {**event, "data": {**data, "object": kept, "truncated": True}}


def event_object(rtype: ResourceType, stored: StoredResource, *, base_url: str) -> dict[str, Any]:
    """``data.object``: the resource as GET returns it (:func:`scim.core.resource.render`),
    without ``members`` and without ``meta.version`` (unknown before the commit)."""
    body = render(rtype, stored, base_url)
    body.pop("members", None)
    body["meta"].pop("version", None)
    return body


def _active(doc: Mapping[str, Any]) -> bool:
    return doc.get("active") is not False


def classify(rtype: ResourceType, before: Mapping[str, Any], after: Mapping[str, Any]) -> str | None:
    """The event of a change of a resource's document from ``before`` to ``after`` (stored
    documents: no ``id``, ``meta`` or ``members``), or None when nothing changed."""
    if before == after:
        return None
    if rtype is USER:
        was, now = _active(before), _active(after)
        if was and not now:
            return USER_DEACTIVATED
        if now and not was:
            return USER_REACTIVATED
    return f"{_noun(rtype)}.updated"


def _renderer(rtype: ResourceType, base_url: str) -> Any:
    return functools.partial(event_object, rtype, base_url=base_url)


def created(rtype: ResourceType, base_url: str) -> EventIntent:
    """The intent of a POST: ``*.created``, undone by ``*.deleted`` if the store must undo it."""
    render_object = _renderer(rtype, base_url)
    return EventIntent(
        f"{_noun(rtype)}.created", render_object, undo=EventIntent(f"{_noun(rtype)}.deleted", render_object)
    )


def replaced(rtype: ResourceType, base_url: str, doc: Mapping[str, Any]) -> EventIntent:
    """The intent of a PUT of ``doc``: classified by the store against the document it replaces."""
    return EventIntent(functools.partial(classify, rtype, after=doc), _renderer(rtype, base_url))


def patched(
    rtype: ResourceType, base_url: str, before: Mapping[str, Any], after: Mapping[str, Any]
) -> EventIntent | None:
    """The intent of a PATCH that turns ``before`` into ``after`` (None: nothing changed)."""
    kind = classify(rtype, before, after)
    return None if kind is None else EventIntent(kind, _renderer(rtype, base_url))


def deleted(rtype: ResourceType, base_url: str) -> EventIntent:
    """The intent of a DELETE: ``*.deleted``, rendered from the resource's last state."""
    return EventIntent(f"{_noun(rtype)}.deleted", _renderer(rtype, base_url))
