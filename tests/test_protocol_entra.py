"""Entra's whole conversation (docs/ENTRA.md §1-§5) through the registered Functions entry point, on Azurite."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from scim.core.schema import ENTERPRISE_USER_URN
from tests.helpers import assert_scim_error, create_group, create_user, new_user
from tests.payloads import payload

LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"


async def test_test_connection_gets_200_and_an_empty_list(client):
    response = await client.get("/Users", params={"filter": f'userName eq "{uuid.uuid4()}"'})
    assert response.status == 200
    assert response.content_type.startswith("application/scim+json")
    assert response.json == {"schemas": [LIST], "totalResults": 0, "itemsPerPage": 0, "startIndex": 1, "Resources": []}
    groups = await client.get(
        "/Groups", params={"excludedAttributes": "members", "filter": f'displayName eq "{uuid.uuid4()}"'}
    )
    assert groups.status == 200 and groups.json["Resources"] == []


async def test_every_response_has_scim_content_type_and_security_headers(client):
    for response in (await client.get("/Users"), await client.get("/Users/nope"), await client.get("/Schemas")):
        assert response.content_type.startswith("application/scim+json")
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-content-type-options"] == "nosniff"


async def test_missing_or_wrong_tokens_get_401_that_reveal_nothing(client, other_client):
    no_token = await client.get("/Users", token=None)
    wrong = await client.get("/Users", token="not-the-token")
    other = await client.get("/Users", token=other_client.token)
    unknown_tenant = await client.get("/Users", tenant="no-such-tenant")
    bad_name = await client.get("/Users", tenant="Bad_Name!")
    for response in (no_token, wrong, other, unknown_tenant, bad_name):
        assert_scim_error(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json == no_token.json


async def test_user_lifecycle_create_match_update_disable_enable_delete(client):
    body = new_user()
    created = await client.post("/Users", body)
    assert created.status == 201
    user = created.json
    assert user["id"] and user["userName"] == body["userName"] and user["active"] is True
    assert user["meta"]["resourceType"] == "User" and user["meta"]["location"] == created.headers["location"]
    assert user["meta"]["version"] == created.headers["etag"]
    assert user["schemas"] == ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE_USER_URN]
    assert "roles" not in user and "password" not in user

    for expression in (
        f'userName eq "{body["userName"].upper()}"',
        f'externalId eq "{body["externalId"]}"',
        f'emails[type eq "work"].value eq "{body["emails"][0]["value"]}"',
    ):
        found = await client.get("/Users", params={"filter": expression})
        assert found.status == 200 and [r["id"] for r in found.json["Resources"]] == [user["id"]], expression

    patched = await client.patch(f"/Users/{user['id']}", payload("entra-patch-user-default.json"))
    assert patched.status == 200
    assert patched.json["displayName"] == "Giv Fam (changed)" and patched.json["name"]["givenName"] == "Giver"
    assert patched.json[ENTERPRISE_USER_URN]["department"] == "Finance"
    assert patched.json["meta"]["version"] != user["meta"]["version"]

    disabled = await client.patch(f"/Users/{user['id']}", payload("entra-patch-disable-default.json"))
    assert disabled.status == 200 and disabled.json["active"] is False
    still = await client.get(f"/Users/{user['id']}")
    assert still.status == 200 and still.json["active"] is False
    by_filter = await client.get("/Users", params={"filter": f'userName eq "{body["userName"]}"'})
    assert by_filter.json["totalResults"] == 1 and by_filter.json["Resources"][0]["active"] is False

    enabled = await client.patch(f"/Users/{user['id']}", payload("entra-patch-disable-aadoptscim062020.json"))
    assert enabled.json["active"] is False
    enabled = await client.patch(f"/Users/{user['id']}", payload("entra-patch-enable-default.json"))
    assert enabled.json["active"] is True

    assert (await client.delete(f"/Users/{user['id']}")).status == 204
    assert_scim_error(await client.get(f"/Users/{user['id']}"), 404)
    assert_scim_error(await client.delete(f"/Users/{user['id']}"), 404)
    gone = await client.get("/Users", params={"filter": f'userName eq "{body["userName"]}"'})
    assert gone.json["totalResults"] == 0


async def test_username_is_unique_case_insensitively_and_external_id_is_not(client):
    first = await create_user(client, externalId="shared-nickname")
    duplicate = new_user()
    duplicate["userName"] = first["userName"].upper()
    assert_scim_error(await client.post("/Users", duplicate), 409, "uniqueness")
    second = await create_user(client, externalId="shared-nickname")
    found = await client.get("/Users", params={"filter": 'externalId eq "shared-nickname"'})
    assert {r["id"] for r in found.json["Resources"]} == {first["id"], second["id"]}


async def test_lost_post_response_retry_gets_409_and_entra_recovers_by_filter(client):
    body = new_user()
    assert (await client.post("/Users", body)).status == 201
    retry = await client.post("/Users", body)
    assert_scim_error(retry, 409, "uniqueness")
    found = await client.get("/Users", params={"filter": f'userName eq "{body["userName"]}"'})
    user_id = found.json["Resources"][0]["id"]
    assert (await client.patch(f"/Users/{user_id}", payload("entra-patch-disable-default.json"))).status == 200


async def test_post_tolerances_and_custom_extension_round_trip(client):
    body = payload("entra-post-user-tolerances.json")
    body["UserName"] = f"tolerant-{uuid.uuid4().hex[:6]}@contoso.com"
    created = await client.post("/Users", body)
    assert created.status == 201, created.body
    user = (await client.get(f"/Users/{created.json['id']}")).json
    custom = "urn:ietf:params:scim:schemas:extension:CustomExtension:2.0:User"
    assert user["active"] is True and user["emails"][0]["primary"] is True
    assert user[custom] == {"badgeNumber": "B-42", "building": "North"}
    assert custom in user["schemas"]
    patched = await client.patch(f"/Users/{user['id']}", payload("entra-patch-user-aadoptscim062020.json"))
    assert patched.json[custom] == {"badgeNumber": "B-7", "building": "North"}
    assert patched.json[ENTERPRISE_USER_URN]["employeeNumber"] == "E999"


async def test_manager_is_returned_as_an_object(client):
    manager = await create_user(client)
    user = await create_user(client)
    response = await client.patch(
        f"/Users/{user['id']}", payload("entra-patch-manager-add.json", MANAGER_ID=manager["id"])
    )
    expected = {"value": manager["id"], "$ref": f"{client.base}/scim/{client.tenant}/Users/{manager['id']}"}
    assert response.json[ENTERPRISE_USER_URN]["manager"] == expected
    assert (await client.get(f"/Users/{user['id']}")).json[ENTERPRISE_USER_URN]["manager"] == expected
    cleared = await client.patch(f"/Users/{user['id']}", payload("entra-patch-manager-clear.json"))
    assert "manager" not in cleared.json[ENTERPRISE_USER_URN]


async def test_add_on_missing_work_email_creates_it(client):
    body = new_user()
    del body["emails"]
    user = (await client.post("/Users", body)).json
    response = await client.patch(f"/Users/{user['id']}", payload("entra-patch-work-email-create.json"))
    assert response.status == 200 and response.json["emails"] == [{"type": "work", "value": "new.work@contoso.com"}]
    found = await client.get("/Users", params={"filter": 'emails[type eq "work"].value eq "NEW.WORK@contoso.com"'})
    assert [r["id"] for r in found.json["Resources"]] == [user["id"]]


@pytest.mark.parametrize("dialect", ["default", "aadoptscim062020"])
async def test_group_lifecycle_and_memberships(client, dialect):
    params = {"aadOptscim062020": ""} if dialect != "default" else None
    group = await create_group(client)
    assert group["displayName"] and group.get("members", []) == []
    dup = payload("entra-post-group.json")
    dup["displayName"] = group["displayName"].upper()
    assert_scim_error(await client.post("/Groups", dup), 409, "uniqueness")
    found = await client.get(
        "/Groups", params={"excludedAttributes": "members", "filter": f'displayName eq "{group["displayName"]}"'}
    )
    assert [r["id"] for r in found.json["Resources"]] == [group["id"]] and "members" not in found.json["Resources"][0]

    alice, bob = await create_user(client), await create_user(client)
    for member in (alice, bob):
        added = await client.patch(
            f"/Groups/{group['id']}",
            payload(f"entra-patch-add-member-{dialect}.json", USER_ID=member["id"]),
            params=params,
        )
        assert added.status == 204 and added.body == b""
    members = (await client.get(f"/Groups/{group['id']}")).json["members"]
    assert {m["value"] for m in members} == {alice["id"], bob["id"]}
    assert all(m["type"] == "User" and m["$ref"].endswith(m["value"]) for m in members)
    assert (await client.get(f"/Users/{alice['id']}")).json["groups"][0]["value"] == group["id"]

    removed = await client.patch(
        f"/Groups/{group['id']}",
        payload(f"entra-patch-remove-member-{dialect}.json", USER_ID=alice["id"]),
        params=params,
    )
    assert removed.status == 204
    members = (await client.get(f"/Groups/{group['id']}")).json["members"]
    assert [m["value"] for m in members] == [bob["id"]]
    assert "groups" not in (await client.get(f"/Users/{alice['id']}")).json

    excluded = await client.get(f"/Groups/{group['id']}", params={"excludedAttributes": "members"})
    assert "members" not in excluded.json and excluded.json["displayName"] == group["displayName"]
    renamed = await client.patch(f"/Groups/{group['id']}", payload("entra-patch-group-rename-default.json"))
    assert renamed.status == 204
    assert (await client.get(f"/Groups/{group['id']}")).json["displayName"] == "Sales EMEA"

    assert (await client.delete(f"/Users/{bob['id']}")).status == 204
    assert (await client.get(f"/Groups/{group['id']}")).json.get("members", []) == []
    assert (await client.delete(f"/Groups/{group['id']}")).status == 204
    assert_scim_error(await client.get(f"/Groups/{group['id']}"), 404)


async def test_member_ids_that_name_nothing_are_ignored_and_real_ones_kept(client):
    group = await create_group(client)
    user, subgroup = await create_user(client), await create_group(client)
    ids = [str(uuid.uuid4()), user["id"], "string id 1", subgroup["id"]]
    body = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "Add", "path": "members", "value": [{"value": i} for i in ids]}],
    }
    assert (await client.patch(f"/Groups/{group['id']}", body)).status == 204
    members = (await client.get(f"/Groups/{group['id']}")).json["members"]
    assert {(m["value"], m["type"]) for m in members} == {(user["id"], "User"), (subgroup["id"], "Group")}
    created = await client.post(
        "/Groups", {"displayName": f"g-{uuid.uuid4().hex[:6]}", "members": [{"value": "nope"}, {"value": user["id"]}]}
    )
    assert created.status == 201 and [m["value"] for m in created.json["members"]] == [user["id"]]
    missing = await client.patch(
        f"/Groups/{uuid.uuid4()}", payload("entra-patch-add-member-default.json", USER_ID=str(uuid.uuid4()))
    )
    assert_scim_error(missing, 404)


async def test_put_replaces_and_if_match_guards_writes(client):
    user = await create_user(client)
    replacement = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user["userName"],
        "displayName": "Put Name",
    }
    stale = '"W/"stale""'
    assert_scim_error(await client.put(f"/Users/{user['id']}", replacement, headers={"If-Match": stale}), 412)
    put = await client.put(f"/Users/{user['id']}", replacement, headers={"If-Match": user["meta"]["version"]})
    assert put.status == 200 and put.json["displayName"] == "Put Name" and "emails" not in put.json
    assert_scim_error(
        await client.patch(
            f"/Users/{user['id']}",
            payload("entra-patch-disable-default.json"),
            headers={"If-Match": user["meta"]["version"]},
        ),
        412,
    )
    assert_scim_error(await client.delete(f"/Users/{user['id']}", headers={"If-Match": user["meta"]["version"]}), 412)
    assert (await client.delete(f"/Users/{user['id']}", headers={"If-Match": put.headers["etag"]})).status == 204


async def test_pagination_pages_are_disjoint_and_complete(client):
    ids = {(await create_user(client))["id"] for _ in range(7)}
    seen: list[str] = []
    for start in (1, 4, 7):
        page = (await client.get("/Users", params={"startIndex": str(start), "count": "3"})).json
        assert page["totalResults"] == 7 and page["startIndex"] == start
        seen += [r["id"] for r in page["Resources"]]
    assert sorted(seen) == sorted(ids)
    empty = (await client.get("/Users", params={"count": "0"})).json
    assert empty["totalResults"] == 7 and empty["Resources"] == []


async def test_rich_filters_and_sorting(client):
    users = [await create_user(client, title=t) for t in ("b-title", "a-title", "c-title")]
    response = await client.get("/Users", params={"filter": 'title sw "a" or title eq "c-title"', "sortBy": "title"})
    assert [r["title"] for r in response.json["Resources"]] == ["a-title", "c-title"]
    response = await client.get("/Users", params={"sortBy": "title", "sortOrder": "descending", "attributes": "title"})
    assert [r["title"] for r in response.json["Resources"]] == ["c-title", "b-title", "a-title"]
    assert set(response.json["Resources"][0]) == {"schemas", "id", "title"}
    assert len(users) == 3


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/Bulk", 501),
        ("GET", "/Me", 501),
        ("GET", "/Unknown", 404),
        ("DELETE", "/Users", 405),
        ("GET", "", 404),
        ("GET", "/.search", 405),
    ],
)
async def test_unsupported_endpoints_answer_scim_errors(client, method, path, status):
    assert_scim_error(await client.request(method, path, {} if method == "POST" else None), status)


async def test_bad_input_gets_actionable_4xx(client):
    assert_scim_error(await client.request("POST", "/Users", raw=b"{not json"), 400, "invalidSyntax")
    assert_scim_error(
        await client.request("POST", "/Users", raw=b'{"userName":"a","userName":"b"}'), 400, "invalidSyntax"
    )
    assert_scim_error(await client.get("/Users", params={"filter": "userName eq"}), 400, "invalidFilter")
    assert_scim_error(await client.post("/Users", {"userName": "x", "active": "perhaps"}), 400, "invalidValue")
    assert_scim_error(await client.get("/Users", params={"count": "ten"}), 400)
    big = {"userName": "big@contoso.com", "title": "x" * (1024 * 1024)}
    assert_scim_error(await client.post("/Users", big), 413)


async def test_discovery_endpoints(client):
    spc = await client.get("/ServiceProviderConfig")
    assert spc.status == 200 and spc.json["patch"]["supported"] is True and spc.json["etag"]["supported"] is True
    schemas = await client.get("/Schemas")
    assert {r["id"] for r in schemas.json["Resources"]} >= {
        "urn:ietf:params:scim:schemas:core:2.0:User",
        ENTERPRISE_USER_URN,
    }
    assert "null" not in schemas.body.decode()
    one = await client.get(f"/Schemas/{ENTERPRISE_USER_URN}")
    assert one.status == 200 and one.json["id"] == ENTERPRISE_USER_URN
    types = await client.get("/ResourceTypes")
    assert {r["name"] for r in types.json["Resources"]} == {"User", "Group"}
    assert (await client.get("/ResourceTypes/User")).json["endpoint"] == "/Users"
    assert_scim_error(await client.get("/Schemas/urn:nope"), 404)


async def test_twenty_concurrent_single_member_patches_lose_nothing(client):
    group = await create_group(client)
    users = await asyncio.gather(*(create_user(client) for _ in range(20)))
    responses = await asyncio.gather(
        *(
            client.patch(f"/Groups/{group['id']}", payload("entra-patch-add-member-default.json", USER_ID=u["id"]))
            for u in users
        )
    )
    assert [r.status for r in responses] == [204] * 20
    members = (await client.get(f"/Groups/{group['id']}")).json["members"]
    assert {m["value"] for m in members} == {u["id"] for u in users}


async def test_eight_concurrent_posts_of_one_username_create_one_user(client):
    body = new_user()
    responses = await asyncio.gather(*(client.post("/Users", body) for _ in range(8)))
    assert sorted(r.status for r in responses) == [201] + [409] * 7
    found = await client.get("/Users", params={"filter": f'userName eq "{body["userName"]}"'})
    assert found.json["totalResults"] == 1


async def test_tenants_are_isolated(client, other_client):
    user = await create_user(client)
    group = await create_group(client)
    assert_scim_error(await other_client.get(f"/Users/{user['id']}"), 404)
    assert_scim_error(
        await other_client.patch(f"/Users/{user['id']}", payload("entra-patch-disable-default.json")), 404
    )
    assert_scim_error(await other_client.delete(f"/Groups/{group['id']}"), 404)
    found = await other_client.get("/Users", params={"filter": f'userName eq "{user["userName"]}"'})
    assert found.json["totalResults"] == 0
    assert (await other_client.get("/Users")).json["totalResults"] == 0
    assert (await client.get(f"/Users/{user['id']}")).json["active"] is True


async def test_search_with_post_on_one_type_and_across_types(client):
    user = await create_user(client)
    group = await create_group(client)
    one = await client.post(
        "/Users/.search",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "filter": f'userName eq "{user["userName"]}"',
            "attributes": ["userName"],
        },
    )
    assert one.status == 200 and [set(r) for r in one.json["Resources"]] == [{"schemas", "id", "userName"}]
    both = await client.post("/.search", {"filter": f'id eq "{user["id"]}" or id eq "{group["id"]}"', "count": 1})
    assert both.json["totalResults"] == 2 and [r["id"] for r in both.json["Resources"]] == [user["id"]]
    second = await client.post(
        "/.search", {"filter": f'id eq "{user["id"]}" or id eq "{group["id"]}"', "startIndex": 2}
    )
    assert [r["id"] for r in second.json["Resources"]] == [group["id"]]


async def test_every_rfc7643_user_attribute_round_trips(client):
    body = payload("rfc7643-8.3-enterprise-user.json")
    body["userName"] = f"bjensen-{uuid.uuid4().hex[:6]}@example.com"
    body["password"] = "t1meMa$heen"
    created = await client.post("/Users", body)
    assert created.status == 201, created.body
    fetched = (await client.get(f"/Users/{created.json['id']}")).json
    sent = {k: v for k, v in body.items() if k != "password"}
    assert {k: v for k, v in fetched.items() if k not in ("id", "meta")} == sent
    assert "password" not in created.body.decode() and "t1meMa$heen" not in created.body.decode()


async def test_scan_bound_gives_too_many_and_sw_uses_the_index(client, runtime):
    from scim.core.service import Limits

    stem = f"sw{uuid.uuid4().hex[:6]}"
    for i in range(4):
        await create_user(client, userName=f"{stem}-{i}@contoso.com", title="bounded")
    original = runtime.service.limits
    runtime.service.limits = Limits(max_scan=3)
    try:
        assert_scim_error(await client.get("/Users", params={"filter": 'title eq "bounded"'}), 400, "tooMany")
        assert_scim_error(await client.get("/Users", params={"filter": f'userName sw "{stem}"'}), 400, "tooMany")
        found = await client.get("/Users", params={"filter": f'userName sw "{stem.upper()}-1"'})
        assert found.status == 200 and [r["userName"] for r in found.json["Resources"]] == [f"{stem}-1@contoso.com"]
    finally:
        runtime.service.limits = original


async def test_cursor_pagination_walks_every_user_once(client):
    ids = {(await create_user(client, title="walk"))["id"] for _ in range(7)}
    spc = (await client.get("/ServiceProviderConfig")).json
    assert spc["pagination"]["cursor"] is True and spc["pagination"]["maxPageSize"] == 1000
    for params in ({}, {"filter": 'title eq "walk"'}, {"filter": 'title eq "walk"', "excludedAttributes": "emails"}):
        seen: list[str] = []
        cursor = ""
        for _ in range(10):
            page = (await client.get("/Users", params={**params, "cursor": cursor, "count": "3"})).json
            assert "startIndex" not in page and page["itemsPerPage"] == len(page["Resources"]) <= 3
            seen += [r["id"] for r in page["Resources"]]
            cursor = page.get("nextCursor")
            if cursor is None:
                break
        assert sorted(seen) == sorted(ids), params
    assert_scim_error(await client.get("/Users", params={"cursor": "forged"}), 400, "invalidCursor")
    assert_scim_error(await client.get("/Users", params={"cursor": "", "startIndex": "2"}), 400, "invalidCursor")
    by_index = (await client.get("/Users", params={"cursor": "", "filter": f'id eq "{sorted(ids)[0]}"'})).json
    assert [r["id"] for r in by_index["Resources"]] == [sorted(ids)[0]] and "nextCursor" not in by_index


async def test_cursor_scans_are_bounded_per_request(client, runtime):
    from scim.core.service import Limits

    for i in range(5):
        await create_user(client, title="needle" if i == 4 else "hay")
    original = runtime.service.limits
    runtime.service.limits = Limits(max_scan=2)
    try:
        pages, found, cursor = 0, [], ""
        while cursor is not None and pages < 10:
            page = (await client.get("/Users", params={"filter": 'title eq "needle"', "cursor": cursor})).json
            found += [r["title"] for r in page["Resources"]]
            cursor, pages = page.get("nextCursor"), pages + 1
        assert found == ["needle"] and pages == 3, "each request examines at most 2 users"
    finally:
        runtime.service.limits = original
