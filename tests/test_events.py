"""Change events through the SCIM API (issue 12, first slice), on the memory store and on Azurite.

Every change a request commits to a user or group gives exactly one event, of the type
:mod:`scim.core.events` documents, whose ``data.object`` is what GET returns after it (without
``meta.version``; without ``members`` for a group); an unchanged re-send gives none, a failed
request gives none, and a member-only group PATCH gives none in this slice. The events are read
through the store (``read_events``), as the feed will.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field
from typing import Any

from scim.functions.runtime import Runtime
from scim.store.base import StoredEvent
from tests.event_checks import EVENT_ID, FAR
from tests.functions_client import FunctionsClient
from tests.helpers import GROUP_URN, PATCH_URN, USER_URN, new_user
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


async def test_a_group_s_changes_give_one_event_each_members_none(client: FunctionsClient, runtime: Runtime) -> None:
    feed = Feed(runtime, client.tenant)
    people = [(await client.post("/Users", new_user())).json["id"] for _ in range(2)]
    await feed.new()
    body = payload("entra-post-group.json")
    body["displayName"] = f"group-{uuid.uuid4().hex[:8]}"
    body["members"] = [{"value": people[0]}]
    created = await client.post("/Groups", body)
    assert created.status == 201, created.body
    path = f"/Groups/{created.json['id']}"
    event = await _one(feed, "group.created", await _get(client, path, excludedAttributes="members"))
    assert "members" not in event["data"]["object"]

    add = _patch({"op": "Add", "path": "members", "value": [{"value": people[1]}]})
    assert (await client.patch(path, add)).status == 204
    assert await feed.new() == []  # membership events come in a later slice
    remove = _patch({"op": "Remove", "path": "members", "value": [{"value": people[1]}]})
    assert (await client.patch(path, remove)).status == 204
    assert await feed.new() == []

    rename = payload("entra-patch-group-rename-default.json")
    rename["Operations"].append({"op": "Add", "path": "members", "value": [{"value": people[1]}]})
    assert (await client.patch(path, rename)).status == 204
    event = await _one(feed, "group.updated", None)
    current = _without_version(await _get(client, path, excludedAttributes="members"))
    # the rename's commit; the member added after it moved lastModified again
    assert event["data"]["object"]["meta"].pop("lastModified") == event["time"] <= current["meta"].pop("lastModified")
    assert event["data"]["object"] == current
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
