"""Change events through the SCIM API (issue 12, first slice), on the memory store and on Azurite.

Every change a request commits to a user or group gives exactly one event, of the type
:mod:`scim.core.events` documents, whose ``data.object`` is what GET returns after it (without
``meta.version``; without ``members`` for a group); an unchanged re-send gives none, a failed
request gives none. A member PATCH gives one ``group.member_added``/``removed`` per member that
joined or left, named from the service's name cache or, when it has not seen them, from reads.
The events are read through the store (``read_events``), as the feed does.
"""

from __future__ import annotations

import copy
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from scim.core.names import MAX_AGE, NameCache
from scim.core.service import ScimRequest, ScimService
from scim.functions.runtime import Runtime
from scim.store.base import StoredEvent
from tests.event_checks import EVENT_ID, FAR
from tests.functions_client import FunctionsClient
from tests.helpers import GROUP_URN, PATCH_URN, USER_URN, create_group, create_user, new_user
from tests.payloads import payload


@dataclass
class Feed:
    """The tenant's events as a consumer following the positions sees them."""

    runtime: Runtime
    tenant: str
    after: str | None = None
    seen: list[StoredEvent] = field(default_factory=list)

    async def new(self) -> list[dict[str, Any]]:
        """The events committed since the last call."""
        page = await self.runtime.store.read_events(self.tenant, after=self.after, before=FAR, limit=1000)
        if page:
            self.after = page[-1].position
        self.seen += page
        return [e.event for e in page]


def _patch(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_URN], "Operations": list(operations)}


def _without_version(resource: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(resource)
    del body["meta"]["version"]
    return body


async def _get(client: FunctionsClient, path: str, **params: str) -> dict[str, Any]:
    response = await client.get(path, params=params or None)
    assert response.status == 200, response.body
    return response.json  # type: ignore[no-any-return]


async def _one(feed: Feed, kind: str, current: dict[str, Any] | None) -> dict[str, Any]:
    """The one new event: of ``kind``, showing ``current`` (a GET's answer) without its version."""
    events = await feed.new()
    assert [e["type"] for e in events] == [kind], events
    event = events[0]
    assert EVENT_ID.match(event["id"]) and event["tenant"] == feed.tenant
    if current is not None:
        assert event["data"]["object"] == _without_version(current)
        assert event["time"] == current["meta"]["lastModified"]
    return event


async def test_a_user_s_changes_give_one_event_each(client: FunctionsClient, runtime: Runtime) -> None:
    feed = Feed(runtime, client.tenant)
    created = await client.post("/Users", new_user())
    assert created.status == 201, created.body
    user = created.json
    path = f"/Users/{user['id']}"
    await _one(feed, "user.created", await _get(client, path))

    rename = _patch({"op": "Replace", "path": "displayName", "value": "Ada L."})
    assert (await client.patch(path, rename)).status == 200
    await _one(feed, "user.updated", await _get(client, path))
    assert (await client.patch(path, rename)).status == 200  # Entra sends it again: nothing changes
    assert await feed.new() == []

    for body, kind in (
        (payload("entra-patch-disable-default.json"), "user.deactivated"),
        (payload("entra-patch-enable-default.json"), "user.reactivated"),
    ):
        assert (await client.patch(path, body)).status == 200
        await _one(feed, kind, await _get(client, path))
        assert (await client.patch(path, body)).status == 200
        assert await feed.new() == []

    both = _patch(
        {"op": "Replace", "path": "active", "value": False}, {"op": "Replace", "path": "nickName", "value": "ada"}
    )
    assert (await client.patch(path, both)).status == 200
    await _one(feed, "user.deactivated", await _get(client, path))  # a flip wins over "updated"

    full = {k: v for k, v in (await _get(client, path)).items() if k not in ("id", "meta", "groups")}
    full["title"] = "Engineer"
    assert (await client.put(path, full)).status == 200
    await _one(feed, "user.updated", await _get(client, path))
    assert (await client.put(path, full)).status == 200  # the same PUT again
    assert await feed.new() == []
    full["active"] = True
    assert (await client.put(path, full)).status == 200
    await _one(feed, "user.reactivated", await _get(client, path))

    last = await _get(client, path)
    assert (await client.delete(path)).status == 204
    deleted = await _one(feed, "user.deleted", None)
    assert deleted["data"]["object"] == _without_version(last)  # its last state
    assert deleted["time"] > last["meta"]["lastModified"]
    assert (await client.delete(path)).status == 404
    assert await feed.new() == []


def _member_event(kind: str, group: tuple[str, str], user: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(type, data) of a membership event of ``user`` in ``group`` ((id, displayName))."""
    member = {"id": user["id"], "type": "User", "userName": user["userName"]}
    return f"group.member_{kind}", {"group": {"id": group[0], "displayName": group[1]}, "member": member}


async def _members(feed: Feed) -> list[tuple[str, dict[str, Any]]]:
    found = await feed.new()
    for event in found:
        assert EVENT_ID.match(event["id"]) and event["tenant"] == feed.tenant
    return [(e["type"], e["data"]) for e in found]


async def test_a_group_s_changes_give_one_event_each(client: FunctionsClient, runtime: Runtime) -> None:
    feed = Feed(runtime, client.tenant)
    people = [(await client.post("/Users", new_user())).json for _ in range(2)]
    await feed.new()
    body = payload("entra-post-group.json")
    body["displayName"] = f"group-{uuid.uuid4().hex[:8]}"
    body["members"] = [{"value": people[0]["id"]}]
    created = await client.post("/Groups", body)
    assert created.status == 201, created.body
    gid, path = created.json["id"], f"/Groups/{created.json['id']}"
    assert [m["value"] for m in created.json["members"]] == [people[0]["id"]]
    # a POST with members: group.created, then a member_added per member (as its member PATCH would)
    first = await feed.new()
    assert [e["type"] for e in first] == ["group.created", "group.member_added"]
    event, joined = first
    assert "members" not in event["data"]["object"]
    assert joined["data"] == _member_event("added", (gid, body["displayName"]), people[0])[1]
    current = _without_version(await _get(client, path, excludedAttributes="members"))
    assert event["data"]["object"]["meta"].pop("lastModified") == event["time"] <= current["meta"].pop("lastModified")
    assert event["data"]["object"] == current
    assert created.json["meta"]["version"] == (await _get(client, path))["meta"]["version"]  # the final version

    add = _patch({"op": "Add", "path": "members", "value": [{"value": people[1]["id"]}]})
    assert (await client.patch(path, add)).status == 204
    assert await _members(feed) == [_member_event("added", (gid, body["displayName"]), people[1])]
    remove = _patch({"op": "Remove", "path": "members", "value": [{"value": people[1]["id"]}]})
    assert (await client.patch(path, remove)).status == 204
    assert await _members(feed) == [_member_event("removed", (gid, body["displayName"]), people[1])]

    rename = payload("entra-patch-group-rename-default.json")
    rename["Operations"].append({"op": "Add", "path": "members", "value": [{"value": people[1]["id"]}]})
    assert (await client.patch(path, rename)).status == 204
    both = await feed.new()
    assert [e["type"] for e in both] == ["group.updated", "group.member_added"]
    event, added = both
    current = _without_version(await _get(client, path, excludedAttributes="members"))
    # the rename's commit; the member added after it moved lastModified again
    assert event["data"]["object"]["meta"].pop("lastModified") == event["time"] <= current["meta"].pop("lastModified")
    assert event["data"]["object"] == current
    assert added["data"] == _member_event("added", (gid, "Sales EMEA"), people[1])[1]  # the new name
    assert added["time"] >= event["time"]
    assert (await client.patch(path, rename)).status == 204  # again: neither name nor members change
    assert await feed.new() == []

    put = {"schemas": [GROUP_URN], "displayName": "Sales EMEA", "externalId": "ext-9"}
    assert (await client.put(path, put)).status == 200
    await _one(feed, "group.updated", await _get(client, path, excludedAttributes="members"))
    assert (await client.put(path, put)).status == 200
    assert await feed.new() == []

    last = await _get(client, path, excludedAttributes="members")
    assert (await client.delete(path)).status == 204
    deleted = await _one(feed, "group.deleted", None)
    assert deleted["data"]["object"] == _without_version(last)
    assert [e["type"] for e in await feed.new()] == []  # its members' groups changed: no event


async def test_entra_s_member_patches_give_one_event_per_member(client: FunctionsClient, runtime: Runtime) -> None:
    """docs/ENTRA.md §3: both shapes of add and remove; a re-send (a re-added member, a removed
    non-member) gives none; deleting a user that is a member gives ``user.deleted`` only."""
    feed = Feed(runtime, client.tenant)
    people = [await create_user(client) for _ in range(3)]
    group = await create_group(client)
    named = (group["id"], group["displayName"])
    path = f"/Groups/{group['id']}"
    await feed.new()
    for shape, person in (("default", people[0]), ("aadoptscim062020", people[1])):
        body = payload(f"entra-patch-add-member-{shape}.json", USER_ID=person["id"])
        assert (await client.patch(path, body)).status == 204
        assert await _members(feed) == [_member_event("added", named, person)]
        assert (await client.patch(path, body)).status == 204  # Entra sends it again
        assert await feed.new() == []
    for shape, person in (("default", people[0]), ("aadoptscim062020", people[1])):
        body = payload(f"entra-patch-remove-member-{shape}.json", USER_ID=person["id"])
        assert (await client.patch(path, body)).status == 204
        assert await _members(feed) == [_member_event("removed", named, person)]
        assert (await client.patch(path, body)).status == 204
        assert await feed.new() == []
    many = _patch({"op": "Add", "path": "members", "value": [{"value": p["id"]} for p in people]})
    assert (await client.patch(path, many)).status == 204
    assert await _members(feed) == [_member_event("added", named, p) for p in people]
    assert (await client.delete(f"/Users/{people[2]['id']}")).status == 204
    assert [e["type"] for e in await feed.new()] == ["user.deleted"]
    assert (await client.delete(path)).status == 204
    assert [e["type"] for e in await feed.new()] == ["group.deleted"]


async def test_member_names_are_read_when_the_service_has_not_seen_them(
    client: FunctionsClient, runtime: Runtime
) -> None:
    """Another instance created the group and the user (this one's name cache is empty): the
    names are read before the write. A rename through another instance shows in this one's
    events once its remembered name has aged out (``scim.core.names.MAX_AGE``)."""
    feed = Feed(runtime, client.tenant)
    user, group = await create_user(client), await create_group(client)
    now = [0.0]
    runtime.service.names = runtime.service.listing.names = NameCache(clock=lambda: now[0])
    body = payload("entra-patch-add-member-default.json", USER_ID=user["id"])
    assert (await client.patch(f"/Groups/{group['id']}", body)).status == 204
    await feed.new()
    assert feed.seen[-1].event["data"] == _member_event("added", (group["id"], group["displayName"]), user)[1]

    other = ScimService(runtime.store)  # another instance renames the user
    renamed = await other.handle(
        ScimRequest("PATCH", client.tenant, f"/Users/{user['id']}", "http://x",
                    body=json.dumps(_patch({"op": "Replace", "path": "userName", "value": "new@contoso.com"})).encode())
    )  # fmt: skip
    assert renamed.status == 200
    remove = payload("entra-patch-remove-member-default.json", USER_ID=user["id"])
    assert (await client.patch(f"/Groups/{group['id']}", remove)).status == 204
    found = await feed.new()
    assert [e["type"] for e in found] == ["user.updated", "group.member_removed"]
    assert found[1]["data"]["member"]["userName"] == user["userName"]  # the name this instance remembers
    now[0] += MAX_AGE + 1
    assert (await client.patch(f"/Groups/{group['id']}", body)).status == 204
    assert [e["data"]["member"]["userName"] for e in await feed.new()] == ["new@contoso.com"]


async def test_a_user_s_event_shows_its_groups_as_get_does(client: FunctionsClient, runtime: Runtime) -> None:
    feed = Feed(runtime, client.tenant)
    user = (await client.post("/Users", new_user())).json
    group = (await client.post("/Groups", {"schemas": [GROUP_URN], "displayName": f"g-{uuid.uuid4().hex[:6]}"})).json
    add = _patch({"op": "Add", "path": "members", "value": [{"value": user["id"]}]})
    assert (await client.patch(f"/Groups/{group['id']}", add)).status == 204
    await feed.new()
    disable = payload("entra-patch-disable-default.json")
    assert (await client.patch(f"/Users/{user['id']}", disable)).status == 200
    current = await _get(client, f"/Users/{user['id']}")
    event = await _one(feed, "user.deactivated", current)
    assert [g["value"] for g in event["data"]["object"]["groups"]] == [group["id"]]


async def test_failed_requests_give_no_event(client: FunctionsClient, runtime: Runtime) -> None:
    feed = Feed(runtime, client.tenant)
    body = new_user()
    user = (await client.post("/Users", body)).json
    await feed.new()
    assert (await client.post("/Users", body)).status == 409
    assert (await client.patch(f"/Users/{uuid.uuid4()}", payload("entra-patch-disable-default.json"))).status == 404
    stale = {"If-Match": 'W/"stale"'}
    disable = payload("entra-patch-disable-default.json")
    assert (await client.patch(f"/Users/{user['id']}", disable, headers=stale)).status == 412
    assert (await client.delete(f"/Users/{user['id']}", headers=stale)).status == 412
    assert (await client.put(f"/Users/{user['id']}", {"schemas": [USER_URN]})).status == 400
    assert await feed.new() == []


async def test_one_tenant_s_events_never_show_in_another(
    client: FunctionsClient, other_client: FunctionsClient, runtime: Runtime
) -> None:
    mine, theirs = Feed(runtime, client.tenant), Feed(runtime, other_client.tenant)
    body = new_user()
    assert (await client.post("/Users", body)).status == 201
    assert (await other_client.post("/Users", body)).status == 201
    assert [e["tenant"] for e in await mine.new()] == [client.tenant]
    assert [e["tenant"] for e in await theirs.new()] == [other_client.tenant]
