"""The webhook sender (:mod:`scim.webhooks.sender`) against a real receiver: an aiohttp server on
127.0.0.1 started by each test, which verifies every delivery with the Standard Webhooks
reference library (``standardwebhooks``) and records what it got."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from scim.core.delivery_schedule import Outcome
from scim.core.webhook_messages import WebhookMessage, build_message, new_secret
from scim.webhooks.sender import (
    MAX_RESPONSE_BYTES,
    USER_AGENT,
    PinnedResolver,
    SendResult,
    WebhookSender,
    close_shared_sender,
    shared_sender,
)
from scim.webhooks.urls import IPAddress, UnsafeWebhookUrl, parse_webhook_url

EVENT = {
    "id": "evt_5f0c8e6a2b7d4c1e9a3f6b8d0c2e4a61",
    "type": "user.deactivated",
    "tenant": "contoso",
    "time": "2026-12-01T18:00:00.000Z",
    "data": {"object": {"id": "2819c223", "userName": "bjensen@contoso.com", "displayName": "Björn", "active": False}},
}
SECRET = new_secret()


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    peer: tuple[str, int]
    verified_with: list[str]
    """The secrets (of the receiver's) whose Standard Webhooks verification passed."""
    payload: Any = None


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1; what it answers depends on the path (see :meth:`handle`)."""

    secrets: list[str]
    port: int = 0
    received: list[Received] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = dict(request.headers)
        verified, payload = [], None
        for secret in self.secrets:
            try:
                payload = Webhook(secret).verify(body, headers)
                verified.append(secret)
            except WebhookVerificationError:
                pass
        peer = request.transport.get_extra_info("peername") if request.transport else ("?", 0)
        self.received.append(Received(request.path, headers, body, tuple(peer[:2]), verified, payload))
        path = request.path
        if path == "/ok":
            return web.Response(status=204, headers={"Set-Cookie": "session=planted; Path=/"})
        if path.startswith("/status/"):
            return web.Response(status=int(path.rsplit("/", 1)[1]), text="receiver failed\n\x1b[31mred\x00 ")
        if path == "/gone":
            return web.Response(status=410, text="endpoint removed")
        if path == "/redirect":
            raise web.HTTPFound("/redirected")
        if path == "/redirected":
            return web.Response(status=204)
        if path == "/slow":
            await asyncio.sleep(5)
            return web.Response(status=204)
        if path.startswith("/retry-after/"):
            return web.Response(status=503, headers={"Retry-After": request.query["value"]})
        if path == "/big":
            return web.Response(status=500, body=b"E" * (MAX_RESPONSE_BYTES - 4) + b"TAIL" + b"x" * 1_000_000)
        if path == "/endless":
            response = web.StreamResponse(status=502)
            await response.prepare(request)
            while True:  # until the client goes away
                await response.write(b"z" * 65536)
        return web.Response(status=404)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver([SECRET])
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", r.handle)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    r.port = runner.addresses[0][1]
    try:
        yield r
    finally:
        await runner.cleanup()


@pytest.fixture
async def sender() -> AsyncIterator[WebhookSender]:
    s = WebhookSender(in_azure=False)
    try:
        yield s
    finally:
        await s.close()


def _message(secrets: list[str] | None = None, event: dict[str, Any] | None = None) -> WebhookMessage:
    return build_message(event or EVENT, secrets or [SECRET], datetime.now(UTC))


# -- answers ---------------------------------------------------------------------------------------


async def test_a_2xx_is_a_success_and_the_message_verifies(receiver: Receiver, sender: WebhookSender) -> None:
    message = _message()
    result = await sender.send(f"{receiver.base}/ok", message)
    assert (result.status, result.error, result.retry_after, result.outcome) == (204, None, None, Outcome.SUCCESS)
    assert 0 < result.elapsed < 5
    [got] = receiver.received
    assert got.verified_with == [SECRET]
    assert got.body == message.body  # the exact bytes that were signed
    assert got.payload == {"type": "user.deactivated", "timestamp": EVENT["time"], "data": EVENT}
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["webhook-id"] == EVENT["id"]
    assert got.headers["webhook-timestamp"] == str(message.timestamp)
    assert got.headers["User-Agent"] == USER_AGENT
    assert got.headers["Accept-Encoding"] == "identity"


async def test_connections_are_kept_alive_and_cookies_are_not(receiver: Receiver, sender: WebhookSender) -> None:
    for _ in range(3):
        assert (await sender.send(f"{receiver.base}/ok", _message())).outcome is Outcome.SUCCESS
    assert len({r.peer for r in receiver.received}) == 1  # one connection for the three
    assert all("Cookie" not in r.headers for r in receiver.received)


@pytest.mark.parametrize("status", [400, 401, 404, 429, 500, 503])
async def test_a_failure_status_is_retried_and_its_body_is_the_error(
    receiver: Receiver, sender: WebhookSender, status: int
) -> None:
    result = await sender.send(f"{receiver.base}/status/{status}", _message())
    assert (result.status, result.outcome) == (status, Outcome.RETRY)
    assert result.error is not None
    assert result.error.startswith(f"HTTP {status} ") and result.error.endswith(": receiver failed [31mred")
    assert result.error.isprintable()


async def test_410_gone_disables(receiver: Receiver, sender: WebhookSender) -> None:
    result = await sender.send(f"{receiver.base}/gone", _message())
    assert (result.status, result.outcome, result.error) == (410, Outcome.GONE, "HTTP 410 Gone: endpoint removed")


async def test_a_redirect_is_a_failure_and_is_not_followed(receiver: Receiver, sender: WebhookSender) -> None:
    result = await sender.send(f"{receiver.base}/redirect", _message())
    assert (result.status, result.outcome) == (302, Outcome.RETRY)
    assert result.error is not None and "redirect to '/redirected' not followed" in result.error
    assert [r.path for r in receiver.received] == ["/redirect"]


async def test_a_receiver_slower_than_the_timeout(receiver: Receiver) -> None:
    sender = WebhookSender(in_azure=False, timeout=0.3)
    try:
        result = await sender.send(f"{receiver.base}/slow", _message())
    finally:
        await sender.close()
    assert (result.status, result.outcome) == (None, Outcome.RETRY)
    assert isinstance(result.exception, TimeoutError)
    assert result.error == "no complete answer within 0.3 s"
    assert 0.25 < result.elapsed < 2


async def test_connection_refused(sender: WebhookSender) -> None:
    with socket.socket() as s:  # a port nothing listens on (bound, then released)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = await sender.send(f"http://127.0.0.1:{port}/hook", _message())
    assert (result.status, result.outcome) == (None, Outcome.RETRY)
    assert result.error is not None and result.error.startswith(f"cannot connect to 127.0.0.1:{port}: ")
    assert "refused" in result.error.lower()


IN_AN_HOUR = "an HTTP-date an hour from now"


@pytest.mark.parametrize(
    ("value", "wait"),
    [("120", timedelta(minutes=2)), ("0", timedelta(0)), ("soon", None), (IN_AN_HOUR, timedelta(hours=1))],
)
async def test_retry_after_is_read(
    receiver: Receiver, sender: WebhookSender, value: str, wait: timedelta | None
) -> None:
    if value == IN_AN_HOUR:
        value = (datetime.now(UTC) + timedelta(hours=1)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    result = await sender.send(f"{receiver.base}/retry-after/?value={quote(value)}", _message())
    assert (result.status, result.outcome) == (503, Outcome.RETRY)
    if wait is None or wait < timedelta(minutes=10):
        assert result.retry_after == wait
    else:  # an HTTP-date: whole seconds, read a moment after it was written
        assert result.retry_after is not None and wait - timedelta(seconds=5) < result.retry_after <= wait


async def test_only_the_start_of_a_big_body_is_read(receiver: Receiver, sender: WebhookSender) -> None:
    result = await sender.send(f"{receiver.base}/big", _message())
    assert (result.status, result.outcome) == (500, Outcome.RETRY)
    assert result.error is not None and result.error.startswith("HTTP 500 Internal Server Error: EEEE")
    assert len(result.error) <= 500 and "x" not in result.error


async def test_the_body_cap_holds_against_an_endless_body(receiver: Receiver) -> None:
    sender = WebhookSender(in_azure=False, max_response_bytes=100)
    try:
        result = await sender.send(f"{receiver.base}/endless", _message())
        big = await sender.send(f"{receiver.base}/big", _message())
    finally:
        await sender.close()
    assert (result.status, result.error) == (502, "HTTP 502 Bad Gateway: " + "z" * 100)
    assert result.elapsed < 2  # not the timeout: reading stopped at the cap
    assert big.error == "HTTP 500 Internal Server Error: " + "E" * 100


async def test_during_a_rotation_both_secrets_verify(receiver: Receiver, sender: WebhookSender) -> None:
    old, new = SECRET, new_secret()
    receiver.secrets = [old, new, new_secret()]
    result = await sender.send(f"{receiver.base}/ok", _message([new, old]))
    assert result.outcome is Outcome.SUCCESS
    [got] = receiver.received
    assert got.verified_with == [old, new]  # either secret verifies; an unrelated one does not
    assert len(got.headers["webhook-signature"].split(" ")) == 2


# -- where the sender connects (SSRF) --------------------------------------------------------------


@dataclass
class FakeDns:
    """A lookup answering ``addresses`` for every name, counting its calls."""

    addresses: list[str]
    calls: list[tuple[str, int]] = field(default_factory=list)

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.calls.append((host, port))
        return [ipaddress.ip_address(a) for a in self.addresses]


@pytest.fixture
async def listener() -> AsyncIterator[tuple[int, list[object]]]:
    """A TCP listener on 127.0.0.1 that counts the connections it accepts."""
    accepted: list[object] = []

    def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer.get_extra_info("peername"))
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], accepted
    finally:
        server.close()
        await server.wait_closed()


async def _send_with(dns: FakeDns, url: str, *, in_azure: bool) -> SendResult:
    sender = WebhookSender(in_azure=in_azure, lookup=dns, timeout=3)
    try:
        return await sender.send(url, _message())
    finally:
        await sender.close()


@pytest.mark.parametrize(
    "addresses", [["127.0.0.1"], ["10.0.0.5"], ["93.184.216.34", "127.0.0.1"], ["169.254.169.254"]]
)
async def test_in_azure_a_name_resolving_to_a_private_address_is_refused_without_connecting(
    listener: tuple[int, list[object]], addresses: list[str]
) -> None:
    port, accepted = listener
    dns = FakeDns(addresses)
    result = await _send_with(dns, f"https://hooks.example.com:{port}/hook", in_azure=True)
    assert (result.status, result.outcome) == (None, Outcome.RETRY)
    assert isinstance(result.exception, UnsafeWebhookUrl)
    assert result.error is not None and result.error.startswith("refused webhook URL 'https://hooks.example.com:")
    assert "SSRF" in result.error
    assert dns.calls == [("hooks.example.com", port)]
    await asyncio.sleep(0.05)
    assert accepted == []


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1:{port}/",
        "https://10.0.0.5:{port}/",
        "https://[::1]:{port}/",
        "https://[::ffff:127.0.0.1]:{port}/",
        "http://93.184.216.34:{port}/",
        "http://localhost:{port}/",
        "https://localhost:{port}/",
    ],
)
async def test_in_azure_literals_and_localhost_are_refused(listener: tuple[int, list[object]], url: str) -> None:
    port, accepted = listener
    dns = FakeDns(["93.184.216.34"])  # even if localhost were public
    result = await _send_with(dns, url.format(port=port), in_azure=True)
    assert isinstance(result.exception, UnsafeWebhookUrl) and result.outcome is Outcome.RETRY
    if "localhost" not in url:
        assert dns.calls == []  # an IP literal is checked before anything
    await asyncio.sleep(0.05)
    assert accepted == []


async def test_locally_http_goes_only_to_this_machine(listener: tuple[int, list[object]]) -> None:
    port, accepted = listener
    dns = FakeDns(["10.0.0.5"])
    result = await _send_with(dns, f"http://intranet.example:{port}/hook", in_azure=False)
    assert isinstance(result.exception, UnsafeWebhookUrl)
    assert accepted == []


async def test_the_connection_goes_to_the_address_that_was_checked(receiver: Receiver) -> None:
    """The name is not in any DNS (``.invalid``): the delivery reaches the receiver only because
    the connector connects to what the checking lookup returned, and it is looked up once per
    connection (no second, unchecked lookup)."""
    dns = FakeDns(["127.0.0.1"])
    sender = WebhookSender(in_azure=False, lookup=dns)
    try:
        for _ in range(2):
            result = await sender.send(f"http://rebind.invalid:{receiver.port}/ok", _message())
            assert result.outcome is Outcome.SUCCESS, result.error
        dns.addresses = ["10.0.0.5"]  # re-pointed: a new connection is checked again
        await sender.close()
        sender = WebhookSender(in_azure=False, lookup=dns)
        refused = await sender.send(f"http://rebind.invalid:{receiver.port}/ok", _message())
    finally:
        await sender.close()
    assert dns.calls == [("rebind.invalid", receiver.port)] * 2
    assert len(receiver.received) == 2 and receiver.received[0].headers["Host"] == f"rebind.invalid:{receiver.port}"
    assert isinstance(refused.exception, UnsafeWebhookUrl)


async def test_the_resolver_pins_the_checked_addresses() -> None:
    dns = FakeDns(["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"])
    resolver = PinnedResolver(in_azure=True, lookup=dns)
    from scim.webhooks import sender as webhook_sender

    token = webhook_sender._TARGET.set(parse_webhook_url("https://hooks.example.com/hook"))
    try:
        results = await resolver.resolve("hooks.example.com", 443, socket.AF_UNSPEC)
        only_v4 = await resolver.resolve("hooks.example.com", 443, socket.AF_INET)
        with pytest.raises(UnsafeWebhookUrl, match="not the webhook's host"):
            await resolver.resolve("elsewhere.example.com", 443)
    finally:
        webhook_sender._TARGET.reset(token)
    assert [(r["host"], r["family"], r["port"], r["hostname"]) for r in results] == [
        ("93.184.216.34", socket.AF_INET, 443, "hooks.example.com"),
        ("2606:2800:220:1:248:1893:25c8:1946", socket.AF_INET6, 443, "hooks.example.com"),
    ]
    assert [r["host"] for r in only_v4] == ["93.184.216.34"]
    with pytest.raises(UnsafeWebhookUrl):  # outside a send
        await resolver.resolve("hooks.example.com", 443)


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/", "http://user:pw@127.0.0.1/", "http://127.0.0.1/#x", "not a url", "http://[::1"]
)
async def test_an_unusable_url_is_a_failure_not_an_exception(sender: WebhookSender, url: str) -> None:
    result = await sender.send(url, _message())
    assert result.outcome is Outcome.RETRY and isinstance(result.exception, UnsafeWebhookUrl)


# -- the process's sender ------------------------------------------------------------------------------


async def test_one_shared_sender_per_process_with_a_close_hook(receiver: Receiver) -> None:
    first = shared_sender(in_azure=False)
    assert shared_sender(in_azure=False) is first
    with pytest.raises(ValueError, match="other SSRF policy"):
        shared_sender(in_azure=True)
    assert (await first.send(f"{receiver.base}/ok", _message())).outcome is Outcome.SUCCESS
    await close_shared_sender()
    assert first.closed
    with pytest.raises(RuntimeError, match="closed"):
        await first.send(f"{receiver.base}/ok", _message())
    second = shared_sender(in_azure=False)
    assert second is not first
    await close_shared_sender()
    await close_shared_sender()  # idempotent
