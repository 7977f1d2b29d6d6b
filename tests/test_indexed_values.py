"""The bound on a resource's indexed values (security review L5), through the Functions entry point
on Azurite: a clear 400 instead of a 500, and every user that exists stays deletable."""

from __future__ import annotations

from scim.core.resource import MAX_INDEXED_VALUES
from tests.helpers import new_user


def _emails(n: int, tag: str) -> list[dict[str, str]]:
    return [{"value": f"{tag}{i}@contoso.com", "type": "other"} for i in range(n)]


async def test_a_user_with_too_many_emails_is_a_400_not_a_500(client):
    body = new_user(emails=_emails(150, "many"))
    response = await client.post("/Users", body)
    assert response.status == 400, response.body
    assert response.json["scimType"] == "invalidValue"
    assert f"at most {MAX_INDEXED_VALUES} distinct values" in response.json["detail"]
    assert (await client.get("/Users", params={"filter": f'userName eq "{body["userName"]}"'})).json[
        "totalResults"
    ] == 0


async def test_a_patch_past_the_bound_is_refused_and_the_user_stays_deletable(client):
    body = new_user(emails=_emails(MAX_INDEXED_VALUES - 3, "near"))  # userName, externalId, displayName + 42 emails
    body.pop("displayName", None)
    created = await client.post("/Users", body)
    assert created.status == 201, created.body
    user_id = created.json["id"]
    more = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "add", "path": "emails", "value": _emails(20, "extra")}],
    }
    refused = await client.patch(f"/Users/{user_id}", more)
    assert refused.status == 400 and refused.json["scimType"] == "invalidValue", refused.body
    assert len((await client.get(f"/Users/{user_id}")).json["emails"]) == len(body["emails"])
    disable = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "Replace", "path": "active", "value": "False"}],
    }
    assert (await client.patch(f"/Users/{user_id}", disable)).status == 200
    assert (await client.delete(f"/Users/{user_id}")).status == 204
    assert (await client.get(f"/Users/{user_id}")).status == 404
