"""The Table client uses an HTTP proxy from the environment only when one is configured.

``scim.store.azure_client.service_client`` turns azure-core's ``use_env_settings`` on only when
``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY`` (either case) is set: aiohttp's per-request proxy
lookup cost 7 % of the service's CPU when no proxy was configured (docs/performance.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from scim.store.azure_client import proxy_configured
from scim.store.base import ResourceNotFound, StoreUnavailable
from scim.store.tables import TableStore
from tests.scim_fixtures import azurite_settings

_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


class RecordingProxy:
    """A listener on 127.0.0.1 that records request lines and answers 503 (a proxy refusing)."""

    def __init__(self) -> None:
        self.request_lines: list[str] = []
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            self.request_lines.append(head.split(b"\r\n", 1)[0].decode())
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def recording_proxy(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[RecordingProxy, int]]:
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    proxy = RecordingProxy()
    port = await proxy.start()
    yield proxy, port
    await proxy.stop()


def test_a_proxy_is_configured_by_any_of_the_usual_variables() -> None:
    assert not proxy_configured({})
    assert not proxy_configured({"NO_PROXY": "127.0.0.1", "HTTP_PROXY": ""})
    assert proxy_configured({"HTTPS_PROXY": "http://proxy:3128"})
    assert proxy_configured({"http_proxy": "http://proxy:3128"})
    assert proxy_configured({"ALL_PROXY": "http://proxy:3128"})


async def test_without_a_proxy_variable_storage_is_reached_directly(azurite, table_prefix, recording_proxy) -> None:
    proxy, _ = recording_proxy
    store = TableStore.from_settings(azurite_settings(azurite, table_prefix))
    try:
        with pytest.raises(ResourceNotFound):
            await store.get("direct", "User", "00000000000000000000000000000000")
    finally:
        await store.close()
    assert proxy.request_lines == []


async def test_with_a_proxy_variable_storage_requests_go_through_the_proxy(
    azurite, table_prefix, recording_proxy, monkeypatch
) -> None:
    proxy, port = recording_proxy
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    store = TableStore.from_settings(azurite_settings(azurite, table_prefix))
    try:
        with pytest.raises(StoreUnavailable):
            await store.get("proxied", "User", "00000000000000000000000000000000")
    finally:
        await store.close()
    assert proxy.request_lines, "no request reached the proxy"
    assert all(line.split()[1].startswith("http://127.0.0.1:") for line in proxy.request_lines), proxy.request_lines
