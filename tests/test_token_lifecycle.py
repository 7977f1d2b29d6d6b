"""Secret Token lifecycle over the SCIM endpoint, across two service instances (issue 13).

Two runtimes on one Azurite stand for two Functions instances: what the admin CLI does through
one (regenerate, rotate, revoke) or what time does (expiry, the end of an overlap) holds on the
next request on both, because authentication reads the tenant's credentials on every request
(one point read, no cache). Plus: the last use is recorded without a write per request, and the
``token`` commands of the CLI.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.core.pipeline.policies import SansIOHTTPPolicy

from scim.admin import __main__ as cli
from scim.functions.runtime import Runtime, build_runtime, use_runtime
from tests.functions_client import FunctionsClient
from tests.helpers import assert_scim_error
from tests.scim_fixtures import azurite_settings


@pytest.fixture
async def second(runtime: Runtime, azurite: str, table_prefix: str) -> AsyncIterator[Runtime]:
    """A second instance of the service on the same Azurite tables as ``runtime``."""
    other = build_runtime(azurite_settings(azurite, table_prefix))
    yield other
    use_runtime(runtime)
    await other.close()


async def _status_on_each(client: FunctionsClient, instances: tuple[Runtime, ...], token: str) -> list[int]:
    statuses = []
    for instance in instances:
        use_runtime(instance)
        response = await client.get("/Users", token=token)
        if response.status == 401:
            assert_scim_error(response, 401)
        statuses.append(response.status)
    return statuses


async def test_rotation_keeps_both_tokens_until_the_overlap_ends_on_every_instance(runtime, second, client):
    old = client.token
    assert old is not None
    new, _ = await second.tenants.rotate_token(client.tenant, overlap=2)  # the CLI, through instance 2
    assert await _status_on_each(client, (runtime, second), old) == [200, 200]
    assert await _status_on_each(client, (runtime, second), new) == [200, 200]
    await asyncio.sleep(2.2)
    assert await _status_on_each(client, (runtime, second), old) == [401, 401], "rotated out"
    assert await _status_on_each(client, (runtime, second), new) == [200, 200]


async def test_regenerate_fails_every_other_token_at_once_on_every_instance(runtime, second, client):
    old = client.token
    assert old is not None
    rotated, _ = await runtime.tenants.rotate_token(client.tenant, overlap=3600)
    assert await _status_on_each(client, (runtime, second), rotated) == [200, 200]
    regenerated = await second.tenants.set_token(client.tenant)
    for token in (old, rotated):
        assert await _status_on_each(client, (runtime, second), token) == [401, 401]
    assert await _status_on_each(client, (runtime, second), regenerated) == [200, 200]


async def test_revoke_fails_that_token_at_once_on_every_instance(runtime, second, client):
    old = client.token
    assert old is not None
    new, record = await runtime.tenants.rotate_token(client.tenant, overlap=3600)
    assert await _status_on_each(client, (runtime, second), new) == [200, 200]
    await second.tenants.revoke_token(client.tenant, record.id)
    assert await _status_on_each(client, (runtime, second), new) == [401, 401]
    assert await _status_on_each(client, (runtime, second), old) == [200, 200]


async def test_an_expired_token_answers_401_like_a_wrong_one_on_every_instance(runtime, second, client):
    expiring = await second.tenants.set_token(client.tenant, expires=2)
    assert await _status_on_each(client, (runtime, second), expiring) == [200, 200]
    await asyncio.sleep(2.2)
    use_runtime(runtime)
    expired = await client.get("/Users", token=expiring)
    wrong = await client.get("/Users", token="not-a-token-of-this-tenant")
    assert expired.status == 401 and expired.body == wrong.body
    assert await _status_on_each(client, (runtime, second), expiring) == [401, 401]


class _Requests(SansIOHTTPPolicy):  # type: ignore[type-arg]
    """Records the method and URL of every storage request."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def on_request(self, request: Any) -> None:
        self.seen.append((request.http_request.method, request.http_request.url))


@pytest.mark.azurite(reason="counts storage requests")
async def test_last_use_costs_one_write_per_token_per_hour_not_one_per_request(runtime, client):
    requests = _Requests()
    counted = build_runtime(runtime.settings, per_call_policies=[requests])
    use_runtime(counted)
    try:
        started = datetime.now(UTC)
        for _ in range(20):
            assert (await client.get("/Users")).status == 200
        await counted.token_use().drain()
        tenants = [(m, u) for m, u in requests.seen if f"{runtime.settings.table_prefix}tenants" in u]
        reads = [m for m, _ in tenants if m == "GET"]
        writes = [m for m, _ in tenants if m != "GET"]
        assert len(reads) == 20, "one read of the credentials per request"
        assert len(writes) == 1, tenants
        (listed,) = await counted.tenants.list_tokens(client.tenant)
        assert listed.last_used is not None and listed.last_used >= int(started.timestamp()) - 1
        requests.seen.clear()
        for _ in range(5):
            assert (await client.get("/Users")).status == 200
        await counted.token_use().drain()
        assert [m for m, u in requests.seen if "tenants" in u and m != "GET"] == [], "not again within the hour"
    finally:
        use_runtime(runtime)
        await counted.close()


# ---- the CLI -----------------------------------------------------------------------------------


@pytest.fixture
def cli_env(azurite: str, table_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCIM_TABLE_CONNECTION_STRING", azurite)
    monkeypatch.setenv("SCIM_TABLE_PREFIX", table_prefix)
    monkeypatch.delenv("SCIM_TABLE_ENDPOINT", raising=False)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as usage:  # argparse refuses the command line
        code = int(usage.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_token_commands(cli_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    name = "tok-cli-" + datetime.now(UTC).strftime("%H%M%S%f")
    code, out, _ = _cli(capsys, "tenant", "create", name, "--expires", "90d", "--json")
    assert code == 0
    created = json.loads(out)
    assert set(created) == {"tenant", "url", "token", "token_id", "expires"}
    days = (datetime.fromisoformat(created["expires"].replace("Z", "+00:00")) - datetime.now(UTC)).total_seconds()
    assert 89.9 < days / 86400 <= 90

    code, out, err = _cli(capsys, "token", "rotate", name, "--overlap", "2h", "--expires", "30d", "--json")
    assert code == 0, err
    rotated = json.loads(out)
    assert set(rotated) == set(created) and rotated["token"] != created["token"]

    code, out, _ = _cli(capsys, "token", "list", name, "--json")
    listed = json.loads(out)
    assert [t["id"] for t in listed] == [created["token_id"], rotated["token_id"]]
    assert all({"id", "created", "expires", "last_used"} <= set(t) for t in listed)
    assert created["token"] not in out and rotated["token"] not in out
    assert listed[0]["retires"] is not None and listed[0]["expires"] == listed[0]["retires"]

    code, out, _ = _cli(capsys, "token", "list", name)
    assert code == 0 and created["token_id"] in out and "retires" in out and "last used never" in out

    code, out, err = _cli(capsys, "token", "rotate", name)
    assert code == 0 and "Secret Token: " in out and "keep working until" in err
    code, out, err = _cli(capsys, "token", "rotate", name)
    assert code == 1 and "3 active tokens" in err and "Secret Token" not in out

    code, out, _ = _cli(capsys, "token", "revoke", name, created["token_id"])
    assert code == 0 and "revoked" in out
    code, _, err = _cli(capsys, "token", "revoke", name, created["token_id"])
    assert code == 1 and "no active token" in err

    code, out, _ = _cli(capsys, "tenant", "update", name, "--token-expires", "7d")
    assert code == 0 and "expire after: 7d" in out and "Failure digests" not in out
    code, out, err = _cli(capsys, "token", "regenerate", name, "--json")
    assert code == 0, err
    regenerated = json.loads(out)
    expires = datetime.fromisoformat(regenerated["expires"].replace("Z", "+00:00"))
    assert 6.9 < (expires - datetime.now(UTC)).total_seconds() / 86400 <= 7, "the tenant's default lifetime"
    code, out, _ = _cli(capsys, "token", "list", name, "--json")
    assert [t["id"] for t in json.loads(out)] == [regenerated["token_id"]], "regenerate leaves one token"

    code, _, err = _cli(capsys, "token", "regenerate", name, "--expires", "soon")
    assert code == 2 and "not a duration" in err
    code, _, err = _cli(capsys, "token", "list", "no-such-tenant")
    assert code == 1 and "no tenant" in err
    # Each change is in the tenant's audit trail (the portal shows it), by "cli", never a token.
    code, out, _ = _cli(capsys, "audit", name, "--json")
    assert code == 0 and created["token"] not in out and rotated["token"] not in out
    actions = [(e["action"], e["actor"]) for e in json.loads(out)["entries"]]
    assert actions[::-1] == [
        ("tenant.created", "cli"),
        ("token.rotated", "cli"),
        ("token.rotated", "cli"),
        ("token.revoked", "cli"),
        ("token.lifetime_set", "cli"),
        ("token.regenerated", "cli"),
    ], actions
    code, _, _ = _cli(capsys, "tenant", "delete", name, "--yes")
    assert code == 0
