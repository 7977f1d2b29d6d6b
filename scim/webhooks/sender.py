"""Sending one webhook message to one endpoint (issue 12, "Webhooks"): one POST, one result.

The delivery engine builds a signed message (:func:`scim.core.webhook_messages.build_message`),
hands it to :meth:`WebhookSender.send` with the endpoint's URL, and reads the
:class:`SendResult`: the status (or the error the attempt ended with), the ``Retry-After`` the
receiver asked for, an error text for the endpoint's last error, and the time it took.
:attr:`SendResult.outcome` is :func:`scim.core.delivery_schedule.classify` of it; when to try
again is :func:`scim.core.delivery_schedule.next_attempt`'s. The sender never raises for what
the receiver or the network does: every such failure is a result.

**The request**: ``POST`` of the message's body with its headers (``Content-Type:
application/json`` and the Standard Webhooks ones), ``User-Agent`` :data:`USER_AGENT`,
``Accept-Encoding: identity``; at most :data:`TIMEOUT` (15 s) from the start of the DNS lookup
to the end of reading the answer; **redirects are not followed** (a ``3xx`` is a failure whose
text names the ``Location``: following it would send directory data to a URL nobody checked);
at most :data:`MAX_RESPONSE_BYTES` of the answer's body are read (for the error text; a receiver
streaming an endless body costs nothing more), then the connection is dropped unless the body
ended there. No cookies are kept (a receiver cannot plant one for the next delivery), no proxy
from the environment is used (a proxy would resolve the name itself, out of reach of the
check below), the body is not decompressed.

**Server-side request forgery** (:mod:`scim.webhooks.urls`): the URL's form is checked first
(and an IP literal's address at once); for a host name, the connector's resolver
(:class:`PinnedResolver`) resolves it **each time a connection is opened** (aiohttp's DNS cache
is off), runs :func:`~scim.webhooks.urls.check_target` on every address found, and hands the
connector exactly those addresses: the connection goes to an address that was checked, with no
second lookup in between, so a name re-pointed at a private address after the check (DNS
rebinding) is never connected to. In Azure a name resolving to any refused address is refused
before any connection. A kept-alive connection is reused only for the same host and port, and
was checked when it was opened.

**One session per process**: :func:`shared_sender` returns the process's sender (one aiohttp
``ClientSession``, its connection pool kept alive between deliveries); :func:`close_shared_sender`
is the close hook (the host's shutdown, the end of a CLI command).
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import socket
import ssl
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from scim.core.delivery_schedule import Outcome, classify, is_redirect, parse_retry_after
from scim.core.webhook_messages import WebhookMessage
from scim.webhooks import MAX_ERROR_LENGTH
from scim.webhooks.urls import (
    IPAddress,
    Resolver,
    UnsafeWebhookUrl,
    WebhookTarget,
    check_target,
    parse_webhook_url,
    resolve,
)

__all__ = [
    "MAX_RESPONSE_BYTES",
    "TIMEOUT",
    "USER_AGENT",
    "PinnedResolver",
    "SendResult",
    "WebhookSender",
    "close_shared_sender",
    "shared_sender",
]

TIMEOUT = 15.0
"""Seconds an attempt may take, DNS lookup, connection, TLS and reading the answer included."""
MAX_RESPONSE_BYTES = 4096
"""Most bytes of an answer's body read (the error text shows their start)."""
USER_AGENT = "scim-entra-webhooks/1"
"""``User-Agent`` of every delivery (a receiver's logs and firewall can name the sender)."""
CONNECTIONS = 100
"""Connections open at most, all endpoints together (the default of :class:`WebhookSender`)."""
CONNECTIONS_PER_ENDPOINT = 32
"""Connections open at most to one host and port (the default of :class:`WebhookSender`)."""

_TARGET: contextvars.ContextVar[WebhookTarget | None] = contextvars.ContextVar("webhook_target", default=None)
"""The target of the send in progress, for the resolver (aiohttp calls it from the send's task)."""


@dataclass(frozen=True)
class SendResult:
    """What one attempt gave: the ``status`` of the answer (None when there was none: then
    ``exception`` says why), the wait ``Retry-After`` asked for, an ``error`` text for the
    endpoint's last error (None on success; at most :data:`~scim.webhooks.MAX_ERROR_LENGTH`
    printable characters) and the ``elapsed`` seconds."""

    status: int | None
    retry_after: timedelta | None
    error: str | None
    elapsed: float
    exception: Exception | None = field(default=None, repr=False, compare=False)

    @property
    def outcome(self) -> Outcome:
        """:func:`~scim.core.delivery_schedule.classify` of the status, or of the exception."""
        if self.status is not None:
            return classify(self.status)
        assert self.exception is not None, "a result without a status holds the exception"
        return classify(self.exception)


class PinnedResolver(AbstractResolver):
    """aiohttp's resolver for webhook connections: looks the name up with ``lookup``, refuses
    (:class:`~scim.webhooks.urls.UnsafeWebhookUrl`) unless every address passes
    :func:`~scim.webhooks.urls.check_target` for the send in progress, and returns those very
    addresses, which are what the connector connects to.

    A lookup of a host other than the send's (which aiohttp has no reason to make: no proxy, no
    redirect) is refused too."""

    def __init__(self, *, in_azure: bool, lookup: Resolver = resolve) -> None:
        self._in_azure = in_azure
        self._lookup = lookup

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        target = _TARGET.get()
        if target is None or host.lower().rstrip(".") != target.host.rstrip("."):
            raise UnsafeWebhookUrl(
                target.url if target else host, f"a connection to {host!r} that is not the webhook's host"
            )
        addresses: list[IPAddress] = list(await self._lookup(target.host, port))
        check_target(target, addresses, in_azure=self._in_azure)
        wanted = {socket.AF_INET: 4, socket.AF_INET6: 6}.get(family)
        return [
            ResolveResult(
                hostname=host,
                host=str(address),
                port=port,
                family=socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for address in addresses
            if wanted is None or address.version == wanted
        ]

    async def close(self) -> None:
        """Nothing to release."""


class WebhookSender:
    """POSTs webhook messages (see the module docstring); one instance holds one aiohttp session.

    ``in_azure`` selects the SSRF policy (:attr:`scim.settings.Settings.in_azure`); ``timeout``
    (seconds), ``max_response_bytes``, ``lookup`` (the DNS lookup, :func:`scim.webhooks.urls.resolve`),
    ``connections``, ``connections_per_endpoint`` and ``ssl_context`` (None: the system's trust
    store, certificates verified) are there for tests and tuning. The session is created on the
    first send, in the running event loop, and serves that loop only."""

    def __init__(
        self,
        *,
        in_azure: bool,
        timeout: float = TIMEOUT,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        lookup: Resolver = resolve,
        connections: int = CONNECTIONS,
        connections_per_endpoint: int = CONNECTIONS_PER_ENDPOINT,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if timeout <= 0 or max_response_bytes < 0:
            raise ValueError("a sender needs a positive timeout and a non-negative response cap")
        self.in_azure = in_azure
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self._lookup = lookup
        self._connections = connections
        self._per_endpoint = connections_per_endpoint
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    def _client(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self.closed:
            raise RuntimeError("this webhook sender is closed")
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=PinnedResolver(in_azure=self.in_azure, lookup=self._lookup),
                use_dns_cache=False,  # every new connection is looked up and checked again
                limit=self._connections,
                limit_per_host=self._per_endpoint,
                ssl=self._ssl,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                auto_decompress=False,
                headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
            )
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("a webhook sender serves the event loop it was first used in")
        return self._session

    async def send(self, url: str, message: WebhookMessage) -> SendResult:
        """POST ``message`` to ``url``; never raises for what the network or the receiver does."""
        started = time.monotonic()
        try:
            target = parse_webhook_url(url)
            try:
                request_url = URL(url)
            except ValueError as exc:
                raise UnsafeWebhookUrl(url, f"not a valid URL ({exc})") from None
            if (request_url.raw_host or "").lower() != target.host:  # both parsers must agree on it
                raise UnsafeWebhookUrl(url, "the URL's host is ambiguous")
            if target.literal is not None:  # no lookup: aiohttp connects to the literal itself
                check_target(target, [target.literal], in_azure=self.in_azure)
        except UnsafeWebhookUrl as exc:
            return self._failure(exc, str(exc), started)
        session = self._client()
        token = _TARGET.set(target)
        try:
            async with session.post(
                request_url, data=message.body, headers=message.headers, allow_redirects=False
            ) as response:
                status = response.status
                retry_after = parse_retry_after(response.headers.get("Retry-After"), datetime.now(UTC))
                if 200 <= status <= 299:
                    await _read_capped(response, self.max_response_bytes)  # lets the connection be reused
                    return SendResult(status, retry_after, None, time.monotonic() - started)
                body = await _read_capped(response, self.max_response_bytes)
                error = _status_error(status, response.reason, response.headers.get("Location"), body)
                return SendResult(status, retry_after, error, time.monotonic() - started)
        except UnsafeWebhookUrl as exc:
            return self._failure(exc, str(exc), started)
        except TimeoutError as exc:
            return self._failure(exc, f"no complete answer within {self.timeout:g} s", started)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return self._failure(exc, _exception_error(target, exc), started)
        finally:
            _TARGET.reset(token)

    def _failure(self, exc: Exception, error: str, started: float) -> SendResult:
        return SendResult(None, None, _printable(error), time.monotonic() - started, exc)

    async def close(self) -> None:
        """Close the session and its connections; the sender cannot send afterwards."""
        self.closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()


async def _read_capped(response: aiohttp.ClientResponse, cap: int) -> bytes:
    """At most ``cap`` bytes of the body; what arrived if reading fails or times out."""
    chunks: list[bytes] = []
    remaining = cap
    try:
        while remaining > 0:
            chunk = await response.content.read(remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    except (aiohttp.ClientError, OSError, TimeoutError):
        pass
    return b"".join(chunks)


def _printable(text: str) -> str:
    """``text`` on one line of printable characters, at most MAX_ERROR_LENGTH long."""
    cleaned = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    return cleaned if len(cleaned) <= MAX_ERROR_LENGTH else cleaned[: MAX_ERROR_LENGTH - 3] + "..."


def _status_error(status: int, reason: str | None, location: str | None, body: bytes) -> str:
    head = f"HTTP {status}" + (f" {reason}" if reason else "")
    if is_redirect(status):
        where = f" to {location[:200]!r}" if location else ""
        return _printable(
            f"{head}: redirect{where} not followed (webhooks are never redirected: register the final URL)"
        )
    text = body.decode("utf-8", errors="replace")
    return _printable(f"{head}: {text}" if text.strip() else head)


def _exception_error(target: WebhookTarget, exc: Exception) -> str:
    where = f"{target.host}:{target.port}"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"{target.host} does not resolve ({exc.os_error})"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate of {where} refused: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        errno = exc.os_error.errno
        return f"cannot connect to {where}: {os.strerror(errno) if errno else exc.os_error}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return f"{where} closed the connection without an answer"
    return f"{type(exc).__name__} from {where}: {exc}"


_shared: WebhookSender | None = None


def shared_sender(*, in_azure: bool) -> WebhookSender:
    """The process's sender (one session and connection pool for every delivery), made on
    first use; :func:`close_shared_sender` closes it."""
    global _shared
    if _shared is None or _shared.closed:
        _shared = WebhookSender(in_azure=in_azure)
    elif _shared.in_azure != in_azure:
        raise ValueError("the process's webhook sender was made for the other SSRF policy")
    return _shared


async def close_shared_sender() -> None:
    """The close hook: close the process's sender, if any (a later :func:`shared_sender` makes
    a new one)."""
    global _shared
    sender, _shared = _shared, None
    if sender is not None:
        await sender.close()
