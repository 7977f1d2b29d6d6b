"""Security (issue #6): tenant isolation, tokens, 401s that reveal nothing, log hygiene, headers.

Everything runs on Azurite through the registered Functions entry point. "Two instances" are
two :class:`~scim.functions.runtime.Runtime` objects on the same tables, as two Functions workers are.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

import scim.tenants
from scim.core.schema import ENTERPRISE_USER_URN
from scim.functions.runtime import Runtime, build_runtime, use_runtime
from tests.functions_client import Response
from tests.helpers import assert_scim_error, create_group, create_user, new_user
from tests.payloads import payload
from tests.scim_fixtures import azurite_settings

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SEARCH = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"


def patch(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


async def raw_rows(runtime: Runtime, table: str, partition: str | None = None) -> list[dict[str, Any]]:
    """Every row of ``{prefix}{table}`` (of one partition), as stored, values as strings."""
    client = runtime.store.service_client.get_table_client(f"{runtime.settings.table_prefix}{table}")  # type: ignore[attr-defined]
    if partition is None:
        pager = client.list_entities()
    else:
        pager = client.query_entities("PartitionKey eq @pk", parameters={"pk": partition})
    return [{k: str(v) for k, v in row.items()} async for row in pager]


# ---- tenant isolation ------------------------------------------------------------------------


async def test_another_tenant_cannot_read_change_or_find_a_tenants_resources(client, other_client):
    """Every endpoint and method of tenant B, given tenant A's ids and filter values, sees nothing of A."""
    victim = await create_user(client, externalId=f"ext-{uuid.uuid4().hex[:8]}")
    victim_group = await create_group(client)
    assert (
        await client.patch(
            f"/Groups/{victim_group['id']}", patch({"op": "add", "path": "members", "value": [{"value": victim["id"]}]})
        )
    ).status == 204
    before_user = (await client.get(f"/Users/{victim['id']}")).json
    before_group = (await client.get(f"/Groups/{victim_group['id']}")).json
    b = other_client
    own_group = await create_group(b)
    own_user = await create_user(b)

    user_path, group_path = f"/Users/{victim['id']}", f"/Groups/{victim_group['id']}"
    for method, path, body in (
        ("GET", user_path, None),
        ("GET", group_path, None),
        ("PUT", user_path, new_user()),
        ("PUT", group_path, {"displayName": "taken over"}),
        ("PATCH", user_path, patch({"op": "replace", "path": "active", "value": False})),
        ("PATCH", user_path, patch({"op": "replace", "value": {"displayName": "taken over"}})),
        ("PATCH", group_path, patch({"op": "add", "path": "members", "value": [{"value": own_user["id"]}]})),
        ("PATCH", group_path, patch({"op": "remove", "path": f'members[value eq "{victim["id"]}"]'})),
        ("PATCH", group_path, patch({"op": "replace", "path": "displayName", "value": "taken over"})),
        ("DELETE", user_path, None),
        ("DELETE", group_path, None),
    ):
        response = await b.request(method, path, body)
        assert_scim_error(response, 404)
        for headers in ({"If-Match": "*"}, {"If-Match": before_user["meta"]["version"]}):
            if method != "GET":
                assert (await b.request(method, path, body, headers=headers)).status == 404

    filters_users = [
        f'userName eq "{victim["userName"]}"',
        f'id eq "{victim["id"]}"',
        f'externalId eq "{victim["externalId"]}"',
        f'emails[type eq "work"].value eq "{victim["emails"][0]["value"]}"',
        f'userName sw "{victim["userName"].split("@")[0]}"',
        f'userName co "{victim["userName"].split("@")[0][-6:]}"',
        f'groups.value eq "{victim_group["id"]}"',
    ]
    filters_groups = [
        f'displayName eq "{victim_group["displayName"]}"',
        f'id eq "{victim_group["id"]}"',
        f'members.value eq "{victim["id"]}"',
        f'members[value eq "{victim["id"]}"]',
    ]
    for endpoint, expressions in (("/Users", filters_users), ("/Groups", filters_groups)):
        for expression in expressions:
            listed = await b.get(endpoint, params={"filter": expression})
            assert listed.status == 200 and listed.json["totalResults"] == 0, (endpoint, expression)
            searched = await b.post(f"{endpoint}/.search", {"schemas": [SEARCH], "filter": expression})
            assert searched.status == 200 and searched.json["totalResults"] == 0, (endpoint, expression)
            everywhere = await b.post("/.search", {"schemas": [SEARCH], "filter": expression})
            assert everywhere.status == 200 and everywhere.json["totalResults"] == 0, expression
    everything = {r["id"] for r in (await b.get("/Users", params={"count": "1000"})).json["Resources"]}
    everything |= {r["id"] for r in (await b.get("/Groups", params={"count": "1000"})).json["Resources"]}
    assert everything == {own_user["id"], own_group["id"]}

    # B's own group: A's ids as members are ignored (not stored), in PATCH and in POST.
    for body in (
        patch(
            {
                "op": "Add",
                "path": "members",
                "value": [{"value": victim["id"]}, {"value": victim_group["id"]}, {"value": own_user["id"]}],
            }
        ),
        patch(
            {
                "op": "add",
                "path": "members",
                "value": [{"value": victim["id"], "type": "User"}, {"value": victim_group["id"], "type": "Group"}],
            }
        ),
        patch({"op": "replace", "path": "members", "value": [{"value": own_user["id"]}, {"value": victim["id"]}]}),
    ):
        assert (await b.patch(f"/Groups/{own_group['id']}", body)).status == 204
        members = (await b.get(f"/Groups/{own_group['id']}")).json.get("members", [])
        assert [m["value"] for m in members] == [own_user["id"]]
    posted = await b.post(
        "/Groups",
        {
            "displayName": f"grab-{uuid.uuid4().hex[:6]}",
            "members": [{"value": victim["id"]}, {"value": victim_group["id"]}],
        },
    )
    assert posted.status == 201 and posted.json.get("members", []) == []
    manager = await b.patch(
        f"/Users/{own_user['id']}",
        patch({"op": "add", "path": f"{ENTERPRISE_USER_URN}:manager", "value": victim["id"]}),
    )
    assert manager.status == 200 and "displayName" not in manager.json[ENTERPRISE_USER_URN]["manager"]

    # A's tenant URL with B's token: 401. The same userName may exist in both tenants.
    assert_scim_error(await client.get(user_path, token=b.token), 401)
    assert (await b.post("/Users", {**new_user(), "userName": victim["userName"]})).status == 201
    assert (await b.post("/Groups", {"displayName": victim_group["displayName"]})).status == 201

    after_user = (await client.get(f"/Users/{victim['id']}")).json
    after_group = (await client.get(f"/Groups/{victim_group['id']}")).json
    assert after_user == before_user and after_group == before_group
    assert [g["value"] for g in after_user["groups"]] == [victim_group["id"]]


# ---- tokens ------------------------------------------------------------------------------------


@pytest.mark.azurite(reason="reads the raw tenants table")
async def test_tokens_are_256_bit_secrets_stored_only_as_hashes(runtime, monkeypatch):
    drawn: list[int] = []
    real = scim.tenants.secrets.token_urlsafe

    def spy(nbytes: int | None = None) -> str:
        drawn.append(nbytes or 0)
        return real(nbytes)

    monkeypatch.setattr(scim.tenants.secrets, "token_urlsafe", spy)
    names = [f"tok{uuid.uuid4().hex[:10]}" for _ in range(3)]
    tokens = [await runtime.tenants.create(name) for name in names]
    assert drawn and all(n >= 32 for n in drawn), "tokens come from secrets with at least 256 bits"
    for token in tokens:
        assert len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))) >= 32
    assert len(set(tokens)) == len(tokens)

    rows = {row["RowKey"]: row for row in await raw_rows(runtime, "tenants")}
    for name, token in zip(names, tokens, strict=True):
        row = rows[name]
        stored_tokens = json.loads(row["tokens"])
        assert [t["h"] for t in stored_tokens] == [hashlib.sha256(token.encode()).hexdigest()]
        stored = " ".join(f"{k}={v}" for k, v in row.items())
        assert token not in stored and token[:16] not in stored
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        assert raw.hex() not in stored and base64.b64encode(raw).decode() not in stored


async def test_tokens_are_compared_in_constant_time(client, monkeypatch):
    compared: list[tuple[int, int]] = []
    real = scim.tenants.hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(scim.tenants.hmac, "compare_digest", spy)
    assert (await client.get("/Users")).status == 200
    assert (await client.get("/Users", token="wrong")).status == 401
    assert (await client.get("/Users", tenant="nosuchtenant")).status == 401
    # Each request compared a SHA-256 hex digest with hmac.compare_digest, unknown tenant included.
    assert compared == [(64, 64)] * 3


async def test_a_regenerated_token_fails_at_once_on_every_instance_and_a_deleted_tenant_fails(
    runtime, client, azurite, table_prefix
):
    second = build_runtime(azurite_settings(azurite, table_prefix))
    try:
        old = client.token
        assert (await client.get("/Users")).status == 200  # instance 1 has used the token
        new = await second.tenants.set_token(client.tenant)  # the admin CLI, on another instance
        assert new != old
        for instance in (runtime, second):
            use_runtime(instance)
            assert_scim_error(await client.get("/Users", token=old), 401)
            assert (await client.get("/Users", token=new)).status == 200
        await second.tenants.delete(client.tenant)
        unknown = await client.get("/Users", tenant="nosuchtenant", token=new)
        for instance in (runtime, second):
            use_runtime(instance)
            gone = await client.get("/Users", token=new)
            assert_scim_error(gone, 401)
            assert gone.body == unknown.body
    finally:
        use_runtime(runtime)
        await second.close()


# ---- 401 reveals nothing -----------------------------------------------------------------------


async def test_every_401_is_byte_identical_and_asks_for_a_bearer_token(client, other_client):
    token = client.token
    assert token
    variants: list[tuple[str, dict[str, Any]]] = [
        ("no header", {"token": None}),
        ("wrong token", {"token": "not-the-token"}),
        ("other tenant's token", {"token": other_client.token}),
        ("token with a suffix", {"token": token + "x"}),
        ("token truncated", {"token": token[:-1]}),
        ("unknown tenant, valid token", {"tenant": "no-such-tenant"}),
        ("unknown tenant, no token", {"tenant": "no-such-tenant", "token": None}),
        ("invalid tenant name", {"tenant": "Bad_Name!"}),
        ("tenant name too long", {"tenant": "a" * 64}),
        ("Basic x", {"token": False, "headers": {"Authorization": "Basic x"}}),
        ("Basic with the token", {"token": False, "headers": {"Authorization": f"Basic {token}"}}),
        ("Bearer alone", {"token": False, "headers": {"Authorization": "Bearer"}}),
        ("Bearer and spaces", {"token": False, "headers": {"Authorization": "Bearer    "}}),
        ("lowercase bearer x", {"token": False, "headers": {"Authorization": "bearer x"}}),
        ("token without scheme", {"token": False, "headers": {"Authorization": token}}),
        ("empty header", {"token": False, "headers": {"Authorization": ""}}),
        ("other scheme", {"token": False, "headers": {"Authorization": f"Token {token}"}}),
    ]
    bodies: dict[bytes, list[str]] = {}
    for path, method in (
        ("/Users", "GET"),
        ("/Users/anything", "DELETE"),
        ("/Groups", "POST"),
        ("/Schemas", "GET"),
        ("/Bulk", "POST"),
        ("/no/such/endpoint", "PUT"),
    ):
        for name, kwargs in variants:
            response = await client.request(
                method, path, {"displayName": "x"} if method in ("POST", "PUT") else None, **kwargs
            )
            assert_scim_error(response, 401)
            assert response.headers["www-authenticate"] == 'Bearer realm="SCIM"', name
            assert (
                response.headers["cache-control"] == "no-store"
                and response.headers["x-content-type-options"] == "nosniff"
            )
            bodies.setdefault(response.body, []).append(f"{method} {path}: {name}")
    assert len(bodies) == 1, f"401 bodies differ: {list(bodies.values())}"
    detail = next(iter(bodies))
    assert b"tenant" not in detail.lower() and b"exist" not in detail.lower()
    # The scheme is case-insensitive (RFC 7235 §2.1): a lowercase "bearer" with the right token works.
    assert (await client.get("/Users", token=False, headers={"Authorization": f"bearer {token}"})).status == 200


# ---- nothing sensitive in logs or in the provisioning log ------------------------------------


@pytest.mark.azurite(reason="reads the provisioning log (Table Storage)")
async def test_logs_and_provisioning_log_rows_hold_no_tokens_passwords_or_bodies(runtime, client, caplog):
    caplog.set_level(logging.DEBUG)
    marker = f"MARKER{uuid.uuid4().hex}"
    password = f"Pw-{uuid.uuid4().hex}!"
    body = new_user(password=password, title=f"title-{marker}", nickName=f"nick-{marker}")
    user = (await client.post("/Users", body)).json
    await client.get("/Users", params={"filter": f'userName eq "{body["userName"]}"'})
    await client.patch(
        f"/Users/{user['id']}",
        patch(
            {"op": "replace", "path": "password", "value": password},
            {"op": "replace", "path": "title", "value": f"new-{marker}"},
        ),
    )
    await client.patch(f"/Users/{user['id']}", payload("entra-patch-user-default.json"))
    group = await create_group(client)
    await client.patch(f"/Groups/{group['id']}", payload("entra-patch-add-member-default.json", USER_ID=user["id"]))
    failures = [
        await client.post("/Users", {**body, "displayName": f"dup-{marker}"}),  # 409
        await client.post(
            "/Users", {"userName": f"bad-{uuid.uuid4().hex[:6]}@x", "password": password, "active": f"maybe-{marker}"}
        ),  # 400 echoes the bad value
        await client.put(
            f"/Users/{user['id']}", {"userName": body["userName"], "password": password, "name": f"str-{marker}"}
        ),
        await client.patch(
            f"/Users/{user['id']}", patch({"op": "replace", "path": "emails[type eq", "value": password})
        ),
        await client.patch(
            f"/Users/{user['id']}", patch({"op": "replace", "path": "active", "value": f"maybe-{marker}"})
        ),
        await client.patch(
            f"/Users/{user['id']}", patch({"op": "replace", "path": "name", "value": [marker, password]})
        ),
        await client.get("/Users", token=f"wrong-{marker}"),
        await client.get("/Users", token=False, headers={"Authorization": f"Basic {password}"}),
        await client.request(
            "POST", "/Users", raw=b'{"password":"' + password.encode() + b'",' + b" " * (1024 * 1024)
        ),  # 413
        await client.get("/Users", params={"filter": 'userName eq "x" and ('}),
    ]
    assert {r.status for r in failures} >= {400, 401, 409, 413}
    await client.delete(f"/Users/{user['id']}")
    await runtime.log_writer.drain()

    rows = await raw_rows(runtime, "log", client.tenant)
    assert len(rows) >= 2 * (len(failures) - 2), (
        "every authenticated request is logged, failures twice (a| and f| rows)"
    )
    assert any(row.get("status") == "413" for row in rows)
    assert not any(row.get("status") == "401" for row in rows), "unauthenticated requests are only counted"
    assert sum(int(row.get("unauthenticated") or 0) for row in rows) == 2
    stored = "\n".join(f"{k}={v}" for row in rows for k, v in row.items())
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "/Users" in logged
    secrets = [
        client.token,
        password,
        marker,
        "Bearer",
        "Basic",
        "wrong-",
        '"schemas"',
        "Operations",
        "urn:ietf:params:scim:api:messages",
    ]
    for secret in secrets:
        assert secret not in stored, f"{secret!r} in the provisioning log"
        assert secret not in logged, f"{secret!r} in the logs"
    # What the operator needs is there: operations, statuses, scimType, detail, correlation ids.
    assert any(row.get("scim_type") == "uniqueness" and row.get("subject") == body["userName"] for row in rows)
    assert all(row.get("correlation_id") for row in rows if not row["RowKey"].startswith(("x|", "h|")))


# ---- response headers on every status class -------------------------------------------------


@pytest.fixture
async def failing_service(runtime: Runtime) -> AsyncIterator[None]:
    original = runtime.service.handle

    async def boom(request: Any) -> Any:
        if request.path.endswith("/boom"):
            raise RuntimeError("an internal bug, with a secret in its message: hunter2")
        return await original(request)

    runtime.service.handle = boom  # type: ignore[method-assign]
    yield
    runtime.service.handle = original  # type: ignore[method-assign]


async def test_security_headers_on_every_status_class(client, failing_service):
    user = await create_user(client)
    seen: dict[int, Response] = {}

    async def record(response: Response) -> Response:
        seen[response.status] = response
        return response

    await record(await client.get("/Users"))  # 200
    await record(await client.post("/Users", new_user()))  # 201
    await record(await client.get(f"/Users/{user['id']}", headers={"If-None-Match": user["meta"]["version"]}))  # 304
    await record(await client.patch(f"/Users/{user['id']}", {"Operations": "nope"}))  # 400
    await record(await client.get("/Users", token="wrong"))  # 401
    await record(await client.get("/Users/no-such-id"))  # 404
    await record(await client.put("/Users", new_user()))  # 405
    await record(await client.post("/Users", {**new_user(), "userName": user["userName"]}))  # 409
    await record(await client.delete(f"/Users/{user['id']}", headers={"If-Match": '"stale"'}))  # 412
    await record(await client.request("POST", "/Users", raw=b" " * (1024 * 1024 + 1)))  # 413
    await record(await client.get("/Users/boom"))  # 500
    await record(await client.post("/Bulk", {"Operations": []}))  # 501
    await record(await client.delete(f"/Users/{user['id']}"))  # 204
    assert set(seen) == {200, 201, 204, 304, 400, 401, 404, 405, 409, 412, 413, 500, 501}
    for status, response in seen.items():
        assert response.headers.get("cache-control") == "no-store", status
        assert response.headers.get("x-content-type-options") == "nosniff", status
        if response.body:
            assert response.content_type.startswith("application/scim+json"), status
    assert b"hunter2" not in seen[500].body and b"Traceback" not in seen[500].body
    assert seen[401].headers["www-authenticate"].startswith("Bearer")
