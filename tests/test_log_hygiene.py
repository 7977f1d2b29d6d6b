"""No token, userName or email in logs at INFO or above during a whole Entra flow (issue: logs)."""

from __future__ import annotations

import logging

from tests.helpers import create_group, new_user
from tests.payloads import payload


async def test_entra_flow_logs_no_secrets_or_identifiers(client, caplog):
    caplog.set_level(logging.DEBUG)
    body = new_user()
    user = (await client.post("/Users", body)).json
    await client.get("/Users", params={"filter": f'userName eq "{body["userName"]}"'})
    await client.patch(f"/Users/{user['id']}", payload("entra-patch-user-default.json"))
    group = await create_group(client)
    await client.patch(f"/Groups/{group['id']}", payload("entra-patch-add-member-default.json", USER_ID=user["id"]))
    await client.post("/Users", body)  # 409: its detail must not be logged
    await client.get("/Users", token="wrong-token")
    await client.delete(f"/Users/{user['id']}")
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    assert "/Users" in logged, "the adapter logs one line per request"
    for secret in (client.token, "wrong-token", body["userName"], body["emails"][0]["value"], "Bearer"):
        assert secret not in logged
    for value in (body["userName"], body["emails"][0]["value"], body["userName"].split("@")[0]):
        assert value.lower() not in logged.lower()
