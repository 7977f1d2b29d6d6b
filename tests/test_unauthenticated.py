"""Requests without a valid token: the same cheap answer whatever their body or tenant, and no trace
in the tenant's log but a count (security review items H1, M1 and L1).

Everything runs through the registered Functions entry point on a real Azurite.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import scim.core.jsonbody
import scim.core.service
import scim.functions.http_adapter
from tests.functions_client import FunctionsClient

pytestmark = pytest.mark.azurite(reason="every test reads the provisioning log (Table Storage)")

NO_SUCH_TENANT = "no-such-tenant-" + uuid.uuid4().hex[:8]


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the bodies parsed as JSON, by any module of the request path (the real parser runs)."""
    sizes: list[int] = []
    real = scim.core.jsonbody.parse_json

    def counting(body: bytes) -> Any:
        sizes.append(len(body))
        return real(body)

    for module in (scim.core.service, scim.functions.http_adapter):
        monkeypatch.setattr(module, "parse_json", counting, raising=False)
    return sizes


def _user_body(size: int) -> bytes:
    """A valid SCIM user of about ``size`` bytes (a long title pads it)."""
    doc = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": f"big-{uuid.uuid4().hex}@contoso.com"}
    doc["title"] = "x" * max(0, size - len(json.dumps(doc)) - 20)
    return json.dumps(doc).encode()


def _comparable(response: Any) -> tuple[int, bytes, tuple[tuple[str, str], ...]]:
    headers = tuple(sorted((k, v) for k, v in response.headers.items() if k != "x-correlation-id"))
    return response.status, response.body, headers


async def test_an_unauthenticated_request_is_answered_alike_without_reading_its_body(runtime, client, parses):
    """A wrong token on an existing tenant costs what it costs on a missing one: no parse, same 401."""
    body = _user_body(900_000)  # under the 1 MiB limit: the old code parsed it a second time for the log
    answers = {}
    for tenant in (client.tenant, NO_SUCH_TENANT):
        for method, path in (("POST", "/Users"), ("PUT", f"/Users/{uuid.uuid4()}")):
            response = await client.request(method, path, raw=body, tenant=tenant, token="wrong-" + uuid.uuid4().hex)
            answers[(tenant, method)] = _comparable(response)
    assert parses == [], "an unauthenticated body was parsed"
    assert {a for a in answers.values()} == {answers[(client.tenant, "POST")]}
    assert answers[(client.tenant, "POST")][0] == 401
    await runtime.log_writer.drain()
    assert (await runtime.log.page(client.tenant)).entries == [], "unauthenticated requests get no log entry"


async def test_an_authenticated_failure_parses_its_body_once_and_logs_its_user_name(runtime, client, parses):
    body = _user_body(2_000)
    assert (await client.request("POST", "/Users", raw=body)).status == 201
    parses.clear()
    conflict = await client.request("POST", "/Users", raw=body)
    assert conflict.status == 409
    assert parses == [len(body)], f"the body was parsed {len(parses)} times"
    await runtime.log_writer.drain()
    newest = (await runtime.log.page(client.tenant, limit=1)).entries[0]
    assert newest.status == 409 and newest.subject == json.loads(body)["userName"]


async def test_unauthenticated_requests_are_only_counted_with_no_path(runtime, client):
    since = datetime.now(UTC) - timedelta(minutes=5)
    hostile = "\x1b[2J" + "A" * 2_000
    for _ in range(7):
        response = await client.get(f"/{hostile}/Users", token="not-the-token")
        assert response.status == 401
    await client.get("/Users", tenant=NO_SUCH_TENANT, token="not-the-token")
    await runtime.log_writer.drain()
    until = datetime.now(UTC) + timedelta(minutes=5)
    assert (await runtime.log.page(client.tenant, since=since, until=until)).entries == []
    assert await runtime.log.unauthenticated(client.tenant, since=since, until=until) == 7
    assert await runtime.log.unauthenticated(NO_SUCH_TENANT, since=since, until=until) == 0
    assert (await runtime.log.page(NO_SUCH_TENANT, since=since, until=until)).entries == []


async def test_log_lines_and_operations_name_scim_endpoints_only(runtime, client, caplog):
    """Text a caller puts in the path (control characters, identifiers) never reaches a log line."""
    caplog.set_level(logging.INFO, logger="scim.http")
    evil = "\x1b[2Jevil\r\nfake line"
    for path in (f"/{evil}", f"/Users/{evil}", f"/Users/x/{evil}", f"/Groups/{evil}/.search"):
        await client.get(path)
        await client.get(path, token="wrong")
    await runtime.log_writer.drain()
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "scim.http")
    assert "evil" not in logged and "\x1b" not in logged and "\r" not in logged, logged
    assert "GET /{other} -> 404" in logged and "GET /Users/{id} -> 404" in logged
    operations = {e.operation for e in (await runtime.log.page(client.tenant, limit=20)).entries}
    assert operations <= {"GET /{other}", "GET /Users/{id}", "GET /Users/{id}/{other}", "GET /Groups/{id}/{other}"}, (
        operations
    )
    assert all(len(e.resource_id or "") <= 100 for e in (await runtime.log.page(client.tenant, limit=20)).entries)


async def test_an_unknown_tenant_gets_no_log_rows_from_authenticated_looking_traffic(runtime):
    stranger = FunctionsClient(NO_SUCH_TENANT, "x" * 43)
    for path in ("/Users", "/Groups", "/Schemas"):
        assert (await stranger.get(path)).status == 401
    await runtime.log_writer.drain()
    assert (await runtime.log.page(NO_SUCH_TENANT)).entries == []
