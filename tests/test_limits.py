"""Documented limits (README "Limits") and JSON bombs, through the registered Functions entry point.

Each limit answers with its documented status and ``scimType`` and a ``detail`` that says
what to change. Storage-facing limits run on Azurite (value length against Table Storage's
64 KiB property, keys holding characters Table Storage forbids in PartitionKey/RowKey);
limits that only need many resources (``count`` capped at maxResults, 1,000 members in one
PATCH) run on the memory store, where creating them is instant.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from scim.core.filtering import MAX_FILTER_DEPTH, MAX_FILTER_LENGTH
from scim.core.jsonbody import MAX_CONTAINERS, MAX_DEPTH, MAX_NUMBER_DIGITS
from scim.core.patching import MAX_OPERATIONS
from scim.core.resource import MAX_MEMBERS_PER_REQUEST, index_terms
from scim.core.schema import ENTERPRISE_USER_URN, USER
from scim.core.values import MAX_VALUE_LENGTH
from scim.functions.runtime import Runtime, use_runtime
from tests.functions_client import FunctionsClient, Response
from tests.helpers import assert_scim_error, create_group, create_user, memory_runtime, new_user

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
CUSTOM_URN = "urn:ietf:params:scim:schemas:extension:Custom:2.0:User"
MIB = 1024 * 1024


def patch(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


def assert_security_headers(response: Response) -> None:
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"


@contextlib.asynccontextmanager
async def memory_client() -> AsyncIterator[tuple[FunctionsClient, Runtime]]:
    """A tenant on a memory runtime installed as the process runtime (for limits needing many resources)."""
    runtime = memory_runtime()
    use_runtime(runtime)
    try:
        yield FunctionsClient("limits", await runtime.tenants.create("limits")), runtime
    finally:
        await runtime.log_writer.drain()
        use_runtime(None)


# ---- request body size: 413 ----------------------------------------------------------------


async def test_a_body_over_the_limit_is_413_whether_declared_or_not(client):
    limit = MIB  # SCIM_MAX_BODY_BYTES default
    body = new_user()
    text = json.dumps(body)
    exactly = (text + " " * (limit - len(text))).encode()
    assert len(exactly) == limit
    accepted = await client.request("POST", "/Users", raw=exactly)
    assert accepted.status == 201, accepted.body[:300]

    over = exactly + b" "
    for response in (
        await client.request("POST", "/Users", raw=over),
        await client.request("PUT", f"/Users/{accepted.json['id']}", raw=over),
        await client.request("PATCH", f"/Users/{accepted.json['id']}", raw=over),
        await client.request("POST", "/Users", raw=b"{}", headers={"Content-Length": str(limit + 1)}),
    ):
        assert_scim_error(response, 413)
        assert str(limit) in response.json["detail"]
        assert_security_headers(response)


# ---- PATCH: operations and members ----------------------------------------------------------


async def test_operations_per_patch_are_limited_to_the_advertised_maximum(client):
    user = await create_user(client)
    assert MAX_OPERATIONS == 1000
    ok = await client.patch(
        f"/Users/{user['id']}",
        patch(*[{"op": "replace", "path": "title", "value": f"t{i}"} for i in range(MAX_OPERATIONS)]),
    )
    assert ok.status == 200 and ok.json["title"] == f"t{MAX_OPERATIONS - 1}"
    too_many = await client.patch(
        f"/Users/{user['id']}", patch(*[{"op": "replace", "path": "title", "value": "x"}] * (MAX_OPERATIONS + 1))
    )
    assert_scim_error(too_many, 400, "tooMany")
    assert str(MAX_OPERATIONS) in too_many.json["detail"]


async def test_members_per_request_over_the_limit_are_refused_before_anything_is_stored(client):
    group = await create_group(client)
    member = await create_user(client)
    many = [{"value": member["id"]}] + [{"value": str(uuid.uuid4())} for _ in range(MAX_MEMBERS_PER_REQUEST)]
    half = len(many) // 2
    for body in (
        patch({"op": "add", "path": "members", "value": many}),
        patch(
            {"op": "Add", "path": "members", "value": many[:half]},
            {"op": "Add", "path": "members", "value": many[half:]},
        ),
        patch({"op": "replace", "path": "members", "value": many}),
        patch({"op": "remove", "path": "members", "value": many}),
    ):
        response = await client.patch(f"/Groups/{group['id']}", body)
        assert_scim_error(response, 400, "tooMany")
        assert str(MAX_MEMBERS_PER_REQUEST) in response.json["detail"]
    assert (await client.get(f"/Groups/{group['id']}")).json.get("members", []) == []
    for method, path in (("POST", "/Groups"), ("PUT", f"/Groups/{group['id']}")):
        response = await client.request(method, path, {"displayName": f"big-{uuid.uuid4().hex[:6]}", "members": many})
        assert_scim_error(response, 400, "tooMany")
    assert (await client.get(f"/Groups/{group['id']}")).json["displayName"] == group["displayName"]


async def test_a_patch_of_exactly_the_maximum_members_is_applied():
    # 1,000 members on Azurite take ~13 s (21 transactions); the memory store checks the rule in no time.
    async with memory_client() as (client, runtime):
        ids = []
        for i in range(MAX_MEMBERS_PER_REQUEST):
            doc = {"userName": f"m{i}@contoso.com"}
            ids.append((await runtime.store.create(client.tenant, "User", doc, index_terms(USER, doc))).id)
        group = await create_group(client)
        response = await client.patch(
            f"/Groups/{group['id']}", patch({"op": "add", "path": "members", "value": [{"value": i} for i in ids]})
        )
        assert response.status == 204, response.body
        members = (await client.get(f"/Groups/{group['id']}")).json["members"]
        assert sorted(m["value"] for m in members) == sorted(ids)


# ---- filters -----------------------------------------------------------------------------------


async def test_filter_length_and_nesting_are_limited(client):
    user = await create_user(client)
    prefix = f'userName eq "{user["userName"]}" or userName eq "'
    longest = prefix + "x" * (MAX_FILTER_LENGTH - len(prefix) - 1) + '"'
    assert len(longest) == MAX_FILTER_LENGTH
    found = await client.get("/Users", params={"filter": longest})
    assert found.status == 200 and found.json["totalResults"] == 1
    too_long = await client.get("/Users", params={"filter": longest[:-1] + 'x"'})
    assert_scim_error(too_long, 400, "invalidFilter")
    assert str(MAX_FILTER_LENGTH) in too_long.json["detail"]

    def nested(levels: int) -> str:
        return "(" * levels + f'userName eq "{user["userName"]}"' + ")" * levels

    assert (await client.get("/Users", params={"filter": nested(MAX_FILTER_DEPTH)})).json["totalResults"] == 1
    deep = await client.get("/Users", params={"filter": nested(MAX_FILTER_DEPTH + 1)})
    assert_scim_error(deep, 400, "invalidFilter")
    assert str(MAX_FILTER_DEPTH) in deep.json["detail"]
    search = await client.post("/Users/.search", {"filter": nested(MAX_FILTER_DEPTH + 1)})
    assert_scim_error(search, 400, "invalidFilter")
    path = "emails[" * (MAX_FILTER_DEPTH + 1) + 'value eq "x"' + "]" * (MAX_FILTER_DEPTH + 1)
    assert_scim_error(
        await client.patch(f"/Users/{user['id']}", patch({"op": "remove", "path": path})), 400, "invalidPath"
    )


# ---- count is capped at maxResults -----------------------------------------------------------


async def test_count_is_capped_at_max_results():
    async with memory_client() as (client, runtime):
        config = (await client.get("/ServiceProviderConfig")).json
        max_results = config["filter"]["maxResults"]
        assert max_results == runtime.service.limits.max_results == 1000
        for i in range(max_results + 5):
            doc = {"userName": f"c{i:04d}@contoso.com"}
            await runtime.store.create(client.tenant, "User", doc, index_terms(USER, doc))
        page = (await client.get("/Users", params={"count": "5000", "attributes": "userName"})).json
        assert page["totalResults"] == max_results + 5 and page["itemsPerPage"] == max_results == len(page["Resources"])
        by_filter = (await client.get("/Users", params={"count": "99999999", "filter": 'userName sw "c"'})).json
        assert by_filter["totalResults"] == max_results + 5 and by_filter["itemsPerPage"] == max_results
        assert (await client.get("/Users", params={"count": "-3"})).json["itemsPerPage"] == 0
        assert (await client.get("/Users", params={"count": "0"})).json["Resources"] == []
        default = (await client.get("/Users")).json
        assert default["itemsPerPage"] == runtime.service.limits.default_count == 100


# ---- attribute value length (Table Storage's 64 KiB string property) --------------------------


async def test_a_value_longer_than_the_limit_is_400_invalid_value_not_a_storage_error(client):
    user = await create_user(client)
    long_title = "t" * 40_000
    created = await client.post("/Users", new_user(title=long_title))
    assert_scim_error(created, 400, "invalidValue")
    assert "title" in created.json["detail"] and str(MAX_VALUE_LENGTH) in created.json["detail"]

    replaced = await client.put(
        f"/Users/{user['id']}", {**new_user(), "userName": user["userName"], "title": long_title}
    )
    assert_scim_error(replaced, 400, "invalidValue")
    for body in (
        patch({"op": "Replace", "path": "title", "value": long_title}),
        patch({"op": "replace", "value": {"title": long_title}}),
        patch({"op": "add", "path": f"{CUSTOM_URN}:badge", "value": long_title}),
        patch({"op": "add", "path": 'emails[type eq "home"].value', "value": long_title}),
        patch({"op": "add", "path": f"{ENTERPRISE_USER_URN}:department", "value": "😀" * (MAX_VALUE_LENGTH // 2 + 1)}),
    ):
        response = await client.patch(f"/Users/{user['id']}", body)
        assert_scim_error(response, 400, "invalidValue")
    unchanged = await client.get(f"/Users/{user['id']}")
    assert unchanged.json["meta"]["version"] == user["meta"]["version"]

    group = await create_group(client)
    assert_scim_error(await client.post("/Groups", {"displayName": "g" * 40_000}), 400, "invalidValue")
    display = await client.patch(
        f"/Groups/{group['id']}",
        patch({"op": "add", "path": "members", "value": [{"value": user["id"], "display": long_title}]}),
    )
    assert_scim_error(display, 400, "invalidValue")


async def test_a_value_of_exactly_the_limit_is_stored_and_read_back_as_sent(client):
    title = "t" * (MAX_VALUE_LENGTH - 1) + "é"
    badge = "😀" * (MAX_VALUE_LENGTH // 2)
    created = await client.post("/Users", new_user(title=title, **{CUSTOM_URN: {"badge": badge}}))
    assert created.status == 201, created.body[:300]
    read = (await client.get(f"/Users/{created.json['id']}")).json
    assert read["title"] == title and read[CUSTOM_URN]["badge"] == badge
    group = await create_group(client)
    display = "d" * MAX_VALUE_LENGTH
    added = await client.patch(
        f"/Groups/{group['id']}",
        patch({"op": "add", "path": "members", "value": [{"value": created.json["id"], "display": display}]}),
    )
    assert added.status == 204, added.body[:300]
    members = (await client.get(f"/Groups/{group['id']}")).json["members"]
    assert [m.get("display") for m in members] == [display]


# ---- keys holding characters Table Storage forbids in PartitionKey/RowKey ---------------------

KEY_VALUES = [
    "slash/back\\slash#hash?question",
    "ctrl\x00\x01\x1f\x7f\x85end",
    "pipe|percent%7C%tilde~h",
    "tab\tnew\nline\u2028sep",
    "ünï€ødé😀",
    "/" * 300 + "#" * 300,  # long enough to be hashed in its key (docs/table-layout.md)
]


@pytest.mark.parametrize(
    "value", KEY_VALUES, ids=["slashes-hash-question", "control", "separators", "whitespace", "non-ascii", "long"]
)
async def test_values_with_forbidden_key_characters_round_trip_and_are_found_by_filter(client, value):
    user_name = f"{value}@contoso.com"
    body = new_user(userName=user_name, externalId=value)
    created = await client.post("/Users", body)
    assert created.status == 201, created.body[:300]
    user = created.json
    assert user["userName"] == user_name and user["externalId"] == value
    read = (await client.get(f"/Users/{user['id']}")).json
    assert read == user
    for expression in (
        f"userName eq {json.dumps(user_name)}",
        f"userName eq {json.dumps(user_name.upper())}",
        f"externalId eq {json.dumps(value)}",
    ):
        found = await client.get("/Users", params={"filter": expression})
        assert found.status == 200 and [r["id"] for r in found.json["Resources"]] == [user["id"]], expression
    duplicate = await client.post("/Users", new_user(userName=user_name.upper()))
    assert_scim_error(duplicate, 409, "uniqueness")

    group = await create_group(client, name=value)
    assert group["displayName"] == value
    found = await client.get(
        "/Groups", params={"filter": f"displayName eq {json.dumps(value)}", "excludedAttributes": "members"}
    )
    assert [r["id"] for r in found.json["Resources"]] == [group["id"]]
    assert_scim_error(await client.post("/Groups", {"displayName": value}), 409, "uniqueness")
    added = await client.patch(
        f"/Groups/{group['id']}",
        patch({"op": "add", "path": "members", "value": [{"value": user["id"], "display": value}]}),
    )
    assert added.status == 204
    members = (await client.get(f"/Groups/{group['id']}")).json["members"]
    assert [(m["value"], m.get("display")) for m in members] == [(user["id"], value)]
    renamed = await client.patch(
        f"/Users/{user['id']}", patch({"op": "replace", "path": "userName", "value": value + "-2"})
    )
    assert renamed.status == 200
    assert (await client.get("/Users", params={"filter": f"userName eq {json.dumps(user_name)}"})).json[
        "totalResults"
    ] == 0
    assert (await client.get("/Users", params={"filter": f"userName eq {json.dumps(value + '-2')}"})).json[
        "totalResults"
    ] == 1


# ---- JSON bombs: refused cheaply ---------------------------------------------------------------

BOMB_BOUND = 0.5
"""Seconds a 1 MiB hostile body may cost, end to end through the entry point."""


def _bombs() -> dict[str, bytes]:
    n = MIB // 2
    return {
        "deep arrays": b"[" * n + b"]" * n,
        "deep arrays, unclosed": b"[" * MIB,
        "deep objects": b'{"a":' * (MIB // 5),
        "deep mixed": b'{"a":[' * (MIB // 6),
        "deep inside a user": b'{"userName":"x","title":' + b"[" * (MIB // 2 - 30) + b"]" * (MIB // 2 - 30) + b"}",
        "huge integer": b'{"userName":"x","n":' + b"9" * (MIB - 40) + b"}",
        "huge float": b'{"userName":"x","n":1.' + b"9" * (MIB - 40) + b"}",
        "out of range": b'{"userName":"x","urn:ietf:params:scim:schemas:extension:Custom:2.0:User":{"n":1e999}}',
        "NaN": b'{"userName":"x","n":NaN}',
        "duplicate keys": b'{"userName":"a","userName":"b"}',
        "duplicate keys, many": b"{" + b",".join(b'"k":1' for _ in range(MIB // 8)) + b"}",
        "many small arrays": b"[" + b",".join([b"[]"] * (MIB // 3)) + b"]",
        "many nested arrays": b"[" + b",".join([b"[" * 31 + b"]" * 31] * (MIB // 64)) + b"]",
        "unpaired surrogate": b'{"userName":"\\ud800"}',
    }


@pytest.mark.parametrize("name", list(_bombs()))
async def test_json_bombs_are_refused_cheaply(client, name):
    raw = _bombs()[name]
    assert len(raw) <= MIB
    # POST /Users is timed in test_a_refused_user_body_is_not_parsed_again_for_the_log.
    for method, path in (
        ("POST", "/Groups"),
        ("PUT", "/Groups/anything"),
        ("PATCH", "/Users/anything"),
        ("POST", "/.search"),
    ):
        started = time.perf_counter()
        response = await client.request(method, path, raw=raw)
        elapsed = time.perf_counter() - started
        assert response.status == 400, (name, method, response.body[:200])
        assert_scim_error(response, 400)
        assert response.json["scimType"] in ("invalidSyntax", "invalidValue")
        assert elapsed < BOMB_BOUND, f"{name}: {method} {path} took {elapsed:.3f} s"
    if name.startswith("deep"):
        assert str(MAX_DEPTH) in response.json["detail"]
    if name.startswith("many"):
        assert str(MAX_CONTAINERS) in response.json["detail"]
    if name.startswith("huge"):
        assert str(MAX_NUMBER_DIGITS) in response.json["detail"]


async def test_a_refused_user_body_is_not_parsed_again_for_the_log(client, monkeypatch):
    """A failed POST /Users logs its userName; reading it must not re-parse a bomb without the limits."""
    import scim.functions.http_adapter as adapter

    parsed_sizes: list[int] = []

    class SpyJson:
        def __getattr__(self, name: str) -> Any:
            return getattr(json, name)

        def loads(self, text: Any, *args: Any, **kwargs: Any) -> Any:
            parsed_sizes.append(len(text))
            return json.loads(text, *args, **kwargs)

    monkeypatch.setattr(adapter, "json", SpyJson())
    raw = _bombs()["many nested arrays"]
    response = await client.request("POST", "/Users", raw=raw)
    assert_scim_error(response, 400, "invalidSyntax")
    assert not [size for size in parsed_sizes if size >= len(raw)], (
        "the adapter parsed the refused body again, without limits"
    )


# ---- size of one stored resource (Table Storage's 1 MiB entity) ------------------------------


def _oversized_extension(values: int) -> dict[str, Any]:
    return {CUSTOM_URN: {f"a{i}": "x" * 31_000 for i in range(values)}}


@pytest.mark.azurite(reason="Table Storage's 1 MiB entity limit: the memory store has no size limit")
async def test_a_resource_larger_than_an_entity_is_400_invalid_value(client):
    created = await client.post(
        "/Users", new_user(**_oversized_extension(33))
    )  # ~1 MiB of values, each under the value limit
    assert_scim_error(created, 400, "invalidValue")
    user = await create_user(client)
    statuses = []
    for i in range(40):
        response = await client.patch(
            f"/Users/{user['id']}", patch({"op": "add", "path": f"{CUSTOM_URN}:b{i}", "value": "x" * 31_000})
        )
        statuses.append(response.status)
        if response.status != 200:
            assert_scim_error(response, 400, "invalidValue")
            break
    assert statuses[-1] == 400, "the entity limit was never reached"
    assert (await client.get(f"/Users/{user['id']}")).status == 200


@pytest.mark.azurite(reason="Table Storage's 1 MiB entity limit: the memory store has no size limit")
async def test_a_resource_larger_than_an_entity_gets_an_actionable_detail(client):
    created = await client.post("/Users", new_user(**_oversized_extension(33)))
    detail = created.json["detail"]
    assert "too large" in detail and "u|" not in detail and "TableErrorCode" not in detail
