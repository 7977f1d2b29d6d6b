"""``GET /api/health`` (issue 15, :mod:`scim.functions.health_adapter`): whether the instance
reaches its storage, for a platform's health check or an uptime monitor.

- Storage healthy (memory doubles and Azurite): ``200 {"status":"ok"}``, ``Cache-Control:
  no-store``, nothing else in the answer, and no row written (the probed tenant stays absent, the
  tenants table keeps its rows).
- Storage unreachable (the TCP proxy of ``tests/tcp_proxy.py`` refusing, resetting, hanging or
  answering 503 Server Busy): ``503 {"status":"unavailable"}`` with ``Retry-After`` within the
  fault tests' bound (15 s; a hang is cut at the check's 10 s), and ``200`` again as soon as
  storage is back, with the same runtime (no restart). A runtime that cannot be built: 503, no
  error text.
- One storage read however many checks arrive together, reused for a second.
- Over HTTP from ``python -m devtools.localhost``: the session's host, and a host of its own
  behind the proxy (503 while storage refuses, 200 after, the same process).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import azure.functions as func
import pytest
from azure.data.tables.aio import TableClient

from devtools.local_defaults import azurite_connection_string
from scim.functions import health_adapter
from scim.functions.health_adapter import OK, PROBE_TENANT, RETRY_AFTER, REUSE_SECONDS, UNAVAILABLE
from scim.functions.runtime import Runtime, build_runtime, use_runtime
from scim.store.roundtrips import RoundTripCounter
from tests.functions_client import REGISTERED, Response
from tests.localhost_server import LocalServer, app_processes
from tests.scim_fixtures import azurite_settings
from tests.tcp_proxy import TcpProxy

HEALTH = REGISTERED["health"]
BOUND = 15.0
"""Seconds within which a request must answer when storage refuses, resets or hangs (tests/test_faults.py)."""


async def get_health() -> Response:
    request = func.HttpRequest(method="GET", url="http://127.0.0.1:7071/api/health", headers={}, params={}, body=b"")
    answer = await HEALTH(request)
    return Response(answer.status_code, {k.lower(): v for k, v in answer.headers.items()}, answer.get_body() or b"")


def assert_ok(status: int, headers: dict[str, str], body: bytes) -> None:
    assert (status, body) == (200, OK), (status, body)
    assert json.loads(body) == {"status": "ok"}
    assert headers["cache-control"] == "no-store"
    assert headers["content-type"].startswith("application/json")
    assert "retry-after" not in headers


def assert_unavailable(status: int, headers: dict[str, str], body: bytes) -> None:
    assert (status, body) == (503, UNAVAILABLE), (status, body)  # exactly this: no error, no tenant
    assert json.loads(body) == {"status": "unavailable"}
    assert headers["cache-control"] == "no-store"
    assert int(headers["retry-after"]) == RETRY_AFTER > 0


async def _tenant_rows(connection_string: str, prefix: str) -> int:
    async with TableClient.from_connection_string(connection_string, table_name=f"{prefix}tenants") as table:
        return len([row async for row in table.query_entities("PartitionKey eq 'tenant'", select=["RowKey"])])


async def test_reachable_storage_answers_200_with_nothing_else_and_writes_nothing(runtime: Runtime, request) -> None:
    name = "h" + uuid.uuid4().hex[:12]
    await runtime.tenants.create(name)  # the tables exist, as in Azure
    before = [i.name for i in await runtime.tenants.list()]
    rows = None
    if request.node.callspec.params["runtime"] == "azurite":
        azurite, prefix = request.getfixturevalue("azurite"), request.getfixturevalue("table_prefix")
        rows = await _tenant_rows(azurite, prefix)
    for _ in range(3):
        response = await get_health()
        assert_ok(response.status, response.headers, response.body)
        assert name.encode() not in response.body
    assert await runtime.tenants.read_credentials(PROBE_TENANT) is None, "the probe created its tenant"
    assert [i.name for i in await runtime.tenants.list()] == before
    if rows is not None:
        assert await _tenant_rows(azurite, prefix) == rows


async def test_a_runtime_that_cannot_be_built_answers_503_without_the_error(monkeypatch) -> None:
    async def broken() -> Runtime:
        raise RuntimeError("SCIM_TABLE_ENDPOINT=https://secret.example is refused")

    monkeypatch.setattr(health_adapter, "get_runtime", broken)
    response = await get_health()
    assert_unavailable(response.status, response.headers, response.body)
    assert b"secret" not in response.body


@pytest.fixture
async def proxied(azurite: str, table_prefix: str) -> AsyncIterator[tuple[TcpProxy, Runtime, RoundTripCounter]]:
    """The app's runtime with its storage behind a :class:`TcpProxy` (and its round trips counted)."""
    port = int(azurite.split("TableEndpoint=http://127.0.0.1:")[1].split("/")[0])
    proxy = TcpProxy(port).start()
    counter = RoundTripCounter()
    settings = azurite_settings(azurite_connection_string("127.0.0.1", proxy.port), table_prefix)
    runtime = build_runtime(settings, per_call_policies=[counter])
    use_runtime(runtime)
    try:
        yield proxy, runtime, counter
    finally:
        proxy.set_mode("pass")
        use_runtime(None)
        await runtime.close()
        proxy.stop()


async def _healthy_again(within: float) -> float:
    """Poll until the check answers 200; the seconds it took."""
    started = time.perf_counter()
    while True:
        response = await get_health()
        if response.status == 200:
            assert_ok(response.status, response.headers, response.body)
            return time.perf_counter() - started
        assert_unavailable(response.status, response.headers, response.body)
        assert time.perf_counter() - started < within, "not healthy again after storage came back"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("mode", ["refuse", "reset", "hang", "busy"])
async def test_unreachable_storage_answers_503_within_the_bound_then_200_without_a_restart(proxied, mode) -> None:
    proxy, runtime, _ = proxied
    response = await get_health()
    assert_ok(response.status, response.headers, response.body)
    proxy.set_mode(mode)
    await asyncio.sleep(REUSE_SECONDS + 0.05)  # the healthy answer is not reused any more
    started = time.perf_counter()
    response = await asyncio.wait_for(get_health(), BOUND + 10)
    elapsed = time.perf_counter() - started
    assert_unavailable(response.status, response.headers, response.body)
    assert elapsed <= BOUND, elapsed
    if mode == "hang":  # storage never answers: the check gives up after its own bound
        assert health_adapter.TIMEOUT - 0.5 <= elapsed <= health_adapter.TIMEOUT + 1, elapsed
    else:  # refused, reset or busy: known at once (retries included)
        assert elapsed < 3, elapsed
    proxy.set_mode("pass")
    await _healthy_again(within=REUSE_SECONDS + 5)
    assert (await runtime.tenants.read_credentials(PROBE_TENANT)) is None


async def test_concurrent_checks_share_one_storage_read_reused_for_a_second(proxied) -> None:
    _, _, counter = proxied
    assert (await get_health()).status == 200  # the process's first call also makes sure of the table
    await asyncio.sleep(REUSE_SECONDS + 0.05)
    counter.reset()
    answers = await asyncio.gather(*(get_health() for _ in range(50)))
    assert {(a.status, a.body) for a in answers} == {(200, OK)}
    assert counter.count == 1, counter.methods
    assert (await get_health()).status == 200 and counter.count == 1, "reused within the second"
    await asyncio.sleep(REUSE_SECONDS + 0.05)
    assert (await get_health()).status == 200 and counter.count == 2, counter.methods
    assert counter.methods == ["GET", "GET"]


# ---- over HTTP, from the local host -------------------------------------------------------------


def _get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes, float]:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=BOUND + 10) as answer:
            status, headers, body = answer.status, dict(answer.headers.items()), answer.read()
    except urllib.error.HTTPError as error:
        status, headers, body = error.code, dict(error.headers.items()), error.read()
    return status, {k.lower(): v for k, v in headers.items()}, body, time.perf_counter() - started


async def test_the_local_host_serves_the_health_check_over_http(local_server: LocalServer) -> None:
    status, headers, body, _ = await asyncio.to_thread(_get, f"{local_server.base_url}/api/health")
    assert_ok(status, headers, body)
    status, _, body, _ = await asyncio.to_thread(_get, f"{local_server.base_url}/api/health", "POST")
    assert status == 404 and body == b""  # GET only


async def test_a_host_whose_storage_refuses_answers_503_over_http_then_200_without_a_restart(
    azurite: str, table_prefix: str, tmp_path: Path
) -> None:
    port = int(azurite.split("TableEndpoint=http://127.0.0.1:")[1].split("/")[0])
    with (
        TcpProxy(port) as proxy,
        app_processes(
            1, azurite_connection_string("127.0.0.1", proxy.port), table_prefix, tmp_path, args=["--no-timers"]
        ) as (app,),
    ):
        url = f"{app.base_url}/api/health"
        assert_ok(*(await asyncio.to_thread(_get, url))[:3])
        pid = app.server.pid
        for mode in ("refuse", "hang"):
            proxy.set_mode(mode)
            await asyncio.sleep(REUSE_SECONDS + 0.05)
            status, headers, body, elapsed = await asyncio.to_thread(_get, url)
            assert_unavailable(status, headers, body)
            assert elapsed <= BOUND, (mode, elapsed)
            proxy.set_mode("pass")
            deadline = time.monotonic() + REUSE_SECONDS + 5
            while (answer := await asyncio.to_thread(_get, url))[0] != 200:
                assert time.monotonic() < deadline, answer
                await asyncio.sleep(0.1)
            assert_ok(*answer[:3])
        assert app.alive and app.server.pid == pid and app.starts == 1  # the same process throughout
