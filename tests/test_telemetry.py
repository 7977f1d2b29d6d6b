"""Telemetry (:mod:`scim.telemetry`): the spans and metrics of an Entra flow, the correlation id,
the hygiene of every attribute, and the cost when telemetry is off.

The tests record with the OpenTelemetry SDK's in-memory exporter and reader, through
:func:`scim.telemetry.instruments.install` (the instruments take the test's providers: no global
provider is needed for them). The Azure SDK's storage spans are made with the *global* tracer
provider (azure-core's OpenTelemetry span asks for it), so the tests set it once per process
(OpenTelemetry allows no second) to :data:`PROVIDER`, whose only processor writes to
:data:`SPANS`; azure-core's tracing is turned on per test and off after it, and the instruments
are uninstalled after each test: outside these tests nothing makes a span. What the distro
configures (global providers, exporter threads) is tested in subprocesses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import azure.functions as func
import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from scim.functions.runtime import Runtime, build_memory_runtime, use_runtime
from scim.notify import notifier as notifier_module
from scim.settings import Settings
from scim.telemetry import instruments, setup
from scim.telemetry.storage import unavailable_reason
from scim.webhooks.delivery import DeliveryEngine
from scim.webhooks.sender import WebhookSender
from tests.functions_client import REGISTERED, SCIM_FUNCTION, FunctionsClient, Response
from tests.helpers import MEMORY_SETTINGS, new_user, smtp_server
from tests.payloads import payload

ROOT = Path(__file__).resolve().parents[1]

SPANS = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(SPANS))


def _global_provider() -> None:
    """Make :data:`PROVIDER` the global tracer provider (once per process; see the module docstring)."""
    if trace.get_tracer_provider() is not PROVIDER:
        trace.set_tracer_provider(PROVIDER)
    assert trace.get_tracer_provider() is PROVIDER, "another global tracer provider was set in this process"


@dataclass
class Recorded:
    """What the test's providers got."""

    reader: InMemoryMetricReader

    def spans(self) -> list[ReadableSpan]:
        return list(SPANS.get_finished_spans())

    def ours(self, kind: SpanKind | None = None) -> list[ReadableSpan]:
        """The app's spans (tracer ``scim``), of ``kind`` if given."""
        return [
            s
            for s in self.spans()
            if s.instrumentation_scope is not None
            and s.instrumentation_scope.name == "scim"
            and (kind is None or s.kind == kind)
        ]

    def points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        """The data points of metric ``name``: (attributes, point), over every collection so far."""
        found: list[tuple[dict[str, Any], Any]] = []
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found += [(dict(p.attributes or {}), p) for p in metric.data.data_points]
        return found


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    """The app's instruments on the test's providers, azure-core's tracing on, for one test."""
    from azure.core.settings import settings

    _global_provider()
    SPANS.clear()
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    instruments.install(tracer_provider=PROVIDER, meter_provider=meters)
    settings.tracing_implementation = setup.scrubbed_span_type()
    try:
        yield Recorded(reader)
    finally:
        settings.tracing_implementation.unset_value()
        instruments.uninstall()
        meters.shutdown()
        SPANS.clear()


def _values(obj: Any) -> Iterator[str]:
    """Every string in attribute values (sequences included)."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _values(item)
    elif obj is not None:
        yield str(obj)


def everything_recorded(recorded: Recorded) -> str:
    """Every span name, status, attribute and event of every span, and every data point's
    attributes of every metric, as one text (the hygiene check reads it)."""
    texts: list[str] = []
    for s in recorded.spans():
        texts += [s.name, s.status.description or ""]
        for value in (s.attributes or {}).values():
            texts += _values(value)
        for event in s.events:
            texts.append(event.name)
            for value in (event.attributes or {}).values():
                texts += _values(value)
    data = recorded.reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                texts.append(metric.name)
                for point in metric.data.data_points:
                    for value in (point.attributes or {}).values():
                        texts += _values(value)
    return "\n".join(texts)


def assert_clean(text: str, secrets: list[str]) -> None:
    """None of ``secrets`` in ``text``, as it is or URL-encoded, in any case."""
    for secret in secrets:
        assert secret, "a value to look for"
        for form in {secret, quote(secret, safe="")}:
            assert form.lower() not in text.lower(), f"{secret!r} was recorded"


# ---- the Entra flow ---------------------------------------------------------------------------------


async def entra_flow(client: FunctionsClient) -> tuple[list[tuple[str, Response]], dict[str, Any]]:
    """Create a user, GET it by filter, PATCH it, disable it, create a group, add and remove the
    user, a 409, a 401, delete the user: (operation, response) of each, and what was used."""
    body = new_user()
    done: list[tuple[str, Response]] = []

    async def step(operation: str, response: Response) -> Response:
        done.append((operation, response))
        return response

    user = (await step("POST /Users", await client.post("/Users", body))).json
    await step("GET /Users", await client.get("/Users", params={"filter": f'userName eq "{body["userName"]}"'}))
    await step(
        "PATCH /Users/{id}", await client.patch(f"/Users/{user['id']}", payload("entra-patch-user-default.json"))
    )
    await step(
        "PATCH /Users/{id}", await client.patch(f"/Users/{user['id']}", payload("entra-patch-disable-default.json"))
    )
    group_name = f"Group {uuid.uuid4().hex[:8]}"
    group_response = await client.post("/Groups", {**payload("entra-post-group.json"), "displayName": group_name})
    group = (await step("POST /Groups", group_response)).json
    add = payload("entra-patch-add-member-default.json", USER_ID=user["id"])
    await step("PATCH /Groups/{id}", await client.patch(f"/Groups/{group['id']}", add))
    remove = payload("entra-patch-remove-member-default.json", USER_ID=user["id"])
    await step("PATCH /Groups/{id}", await client.patch(f"/Groups/{group['id']}", remove))
    await step("POST /Users", await client.post("/Users", body))  # 409: the userName is taken
    await step("GET /Users", await client.get("/Users", token="wrong-token-" + uuid.uuid4().hex))
    await step("DELETE /Users/{id}", await client.delete(f"/Users/{user['id']}"))
    used = {
        "userName": body["userName"],
        "email": body["emails"][0]["value"],
        "displayName": group_name,
        "given": "Giver",
        "user_id": user["id"],
        "group_id": group["id"],
        "token": client.token or "",
        "wrong_token": "wrong-token-",
    }
    return done, used


EXPECTED_STATUS = [201, 200, 200, 200, 201, 204, 204, 409, 401, 204]


async def test_an_entra_flow_makes_one_span_per_request_with_its_metrics(
    runtime: Runtime, client: FunctionsClient, recorded: Recorded, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="scim.http")
    done, used = await entra_flow(client)
    assert [r.status for _, r in done] == EXPECTED_STATUS
    await runtime.log_writer.drain()
    requests = sorted(recorded.ours(SpanKind.SERVER), key=lambda s: s.start_time or 0)

    # One span per request, named after its operation, with the request's attributes.
    assert len(requests) == len(done)
    for span, (operation, response) in zip(requests, done, strict=True):
        attributes = dict(span.attributes or {})
        assert span.name == operation
        assert attributes["scim.operation"] == operation
        assert attributes["scim.tenant"] == client.tenant
        assert attributes["http.response.status_code"] == response.status
        assert attributes["http.request.method"] == operation.split()[0]
        assert attributes["scim.correlation_id"] == response.headers["x-correlation-id"]
        assert span.parent is None  # no host here: the root
    ids = [r.headers["x-correlation-id"] for _, r in done]
    assert len(set(ids)) == len(ids) and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)

    # The provisioning log has the same correlation ids (the 401 is only counted).
    page = await runtime.log.page(client.tenant, limit=50)
    logged = {e.correlation_id: e.operation for e in page.entries}
    assert logged == {r.headers["x-correlation-id"]: op for op, r in done if r.status != 401}

    # A log line made inside each request carries its correlation id.
    lines = {r.correlation_id: r.getMessage() for r in caplog.records if r.name == "scim.http"}  # type: ignore[attr-defined]
    for operation, response in done:
        assert lines[response.headers["x-correlation-id"]].startswith(f"{operation} -> {response.status}")

    # The metrics: every request counted with its tenant, operation and status.
    counted: dict[tuple[str, str, int], int] = {}
    for attributes, point in recorded.points("scim.requests"):
        assert set(attributes) == {"scim.tenant", "scim.operation", "http.response.status_code"}
        key = (attributes["scim.tenant"], attributes["scim.operation"], attributes["http.response.status_code"])
        counted[key] = counted.get(key, 0) + point.value
    expected: dict[tuple[str, str, int], int] = {}
    for operation, response in done:
        key = (client.tenant, operation, response.status)
        expected[key] = expected.get(key, 0) + 1
    assert counted == expected
    durations = recorded.points("scim.request.duration")
    assert sum(p.count for _, p in durations) == len(done)
    assert {a["scim.operation"] for a, _ in durations} == {op for op, _ in done}
    calls = recorded.points("scim.request.storage_calls")
    assert sum(p.count for _, p in calls) == len(done)
    assert all(set(a) == {"scim.tenant", "scim.operation"} for a, _ in calls)
    on_azurite = runtime.table_service is not None
    assert (sum(p.sum for _, p in calls) > 0) == on_azurite  # the memory store makes no storage calls

    # No personal data, secret or resource id in any span or metric.
    assert_clean(everything_recorded(recorded), list(used.values()))


@pytest.mark.azurite(reason="the Azure SDK's storage spans")
async def test_storage_calls_are_child_spans_of_their_request_and_hold_no_entity_key(
    runtime: Runtime, client: FunctionsClient, recorded: Recorded
) -> None:
    _, used = await entra_flow(client)
    await runtime.log_writer.drain()
    await runtime.token_use().drain()
    spans = recorded.spans()
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    requests = {s.context.span_id: s for s in recorded.ours(SpanKind.SERVER) if s.context is not None}

    def request_of(span: ReadableSpan) -> ReadableSpan | None:
        current: ReadableSpan | None = span
        while current is not None and current.parent is not None:
            current = by_id.get(current.parent.span_id)
            if current is not None and current.context is not None and current.context.span_id in requests:
                return current
        return None

    storage = [s for s in spans if s.instrumentation_scope is None or s.instrumentation_scope.name != "scim"]
    assert storage, "the Azure SDK made spans"
    # Every storage span is under a request (background work, the provisioning log writer's
    # flushes included, makes none), and every request that reads storage has some.
    orphans = [s.name for s in storage if request_of(s) is None]
    assert orphans == []
    under = {r.context.span_id: 0 for r in requests.values() if r.context is not None}
    for s in storage:
        parent = request_of(s)
        if parent is not None and parent.context is not None and s.kind == SpanKind.CLIENT:
            under[parent.context.span_id] += 1
    assert all(n > 0 for n in under.values()), under

    # scim.request.storage_calls counts what the spans show: per operation, the HTTP spans
    # under its requests (but for POST /Users: the first request's token-use write, in the
    # background, may end after the request was counted).
    http_spans: dict[str, int] = {}
    for s in storage:
        parent = request_of(s)
        if parent is not None and "http.request.method" in (s.attributes or {}):
            http_spans[parent.name] = http_spans.get(parent.name, 0) + 1
    calls = {a["scim.operation"]: p.sum for a, p in recorded.points("scim.request.storage_calls")}
    assert {op: n for op, n in calls.items() if op != "POST /Users"} == {
        op: n for op, n in http_spans.items() if op != "POST /Users"
    }
    assert calls["POST /Users"] >= http_spans["POST /Users"] - 1

    # The provisioning log writer's writes (in the background) make no span.
    log_table = f"/{runtime.settings.table_prefix}log"
    # Their URLs end at the table: no PartitionKey, RowKey or query.
    urls = [str(v) for s in storage for k, v in (s.attributes or {}).items() if k in ("http.url", "url.full")]
    assert urls and all("(" not in u and "?" not in u for u in urls), urls
    assert not [u for u in urls if u.endswith(log_table)]
    assert_clean(everything_recorded(recorded), list(used.values()))


async def test_the_span_is_a_child_of_the_hosts_invocation(runtime: Runtime, recorded: Recorded) -> None:
    name = "t" + uuid.uuid4().hex[:12]
    token = await runtime.tenants.create(name)
    trace_id, parent_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]

    class TraceContext:
        trace_parent = f"00-{trace_id}-{parent_id}-01"
        trace_state = "host=1"
        attributes: ClassVar[dict[str, str]] = {}

    class Invocation:
        trace_context = TraceContext()

    request = func.HttpRequest(
        method="GET",
        url=f"http://127.0.0.1:7071/scim/{name}/Users",
        headers={"Authorization": f"Bearer {token}"},
        params={},
        route_params={"tenant": name, "path": "Users"},
        body=b"",
    )
    response = await SCIM_FUNCTION(request, Invocation())
    assert response.status_code == 200
    (span,) = recorded.ours(SpanKind.SERVER)
    assert span.context is not None and span.parent is not None
    assert (f"{span.context.trace_id:032x}", f"{span.parent.span_id:016x}") == (trace_id, parent_id)
    assert (span.attributes or {})["scim.correlation_id"] == response.headers["X-Correlation-ID"] != trace_id


async def test_unauthenticated_requests_are_counted_without_the_callers_text(
    runtime: Runtime, client: FunctionsClient, recorded: Recorded
) -> None:
    stranger = FunctionsClient("no-such-tenant-" + uuid.uuid4().hex[:8], "some-token-" + uuid.uuid4().hex)
    assert (await stranger.get("/Users")).status == 401
    assert (await client.get("/Users", tenant="Bad\nName<script>")).status == 401
    assert (await client.get("/Users/some-user-id-xyz/extra")).status in (404, 400)
    tenants = {
        (a["scim.tenant"], a["scim.operation"], a["http.response.status_code"])
        for a, _ in recorded.points("scim.requests")
    }
    assert ("(unknown)", "GET /Users", 401) in tenants
    assert ("(invalid)", "GET /Users", 401) in tenants
    assert any(t == client.tenant and op == "GET /Users/{id}/{other}" for t, op, _ in tenants)
    assert_clean(everything_recorded(recorded), [stranger.tenant, stranger.token or "", "script", "some-user-id-xyz"])


# ---- storage failures, log drops ---------------------------------------------------------------------


def test_storage_failures_are_classified() -> None:
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseTimeoutError

    from scim.store.azure_errors import store_error

    def mapped(exc: BaseException) -> BaseException:
        try:
            raise store_error(exc) from exc
        except Exception as error:  # noqa: BLE001 - the mapped error, with its cause
            return error

    def answered(status: int) -> HttpResponseError:
        error = HttpResponseError(message=f"status {status}")
        error.status_code = status
        return error

    assert unavailable_reason(mapped(answered(429))) == "throttled"
    assert unavailable_reason(mapped(answered(503))) == "throttled"
    assert unavailable_reason(mapped(answered(500))) == "unreachable"
    assert unavailable_reason(mapped(answered(504))) == "timeout"
    assert unavailable_reason(mapped(ServiceResponseTimeoutError("read timed out"))) == "timeout"
    assert unavailable_reason(mapped(TimeoutError())) == "timeout"
    assert unavailable_reason(mapped(ServiceRequestError("connection refused"))) == "unreachable"


async def test_a_failed_storage_call_is_counted_once_with_its_reason(recorded: Recorded) -> None:
    from azure.core.exceptions import HttpResponseError

    from scim.store.azure_client import _io
    from scim.store.base import StoreUnavailable

    async def throttled() -> None:
        error = HttpResponseError(message="server busy")
        error.status_code = 503
        raise error

    async def slow() -> None:
        await asyncio.sleep(10)

    with pytest.raises(StoreUnavailable):
        await _io(throttled)
    from scim.store import azure_client

    budget = azure_client.STORAGE_BUDGET
    azure_client.STORAGE_BUDGET = 0.05
    try:
        with pytest.raises(StoreUnavailable):
            await azure_client._budgeted(lambda: _io(slow))()
    finally:
        azure_client.STORAGE_BUDGET = budget
    reasons = {a["scim.reason"]: p.value for a, p in recorded.points("scim.storage.unavailable")}
    assert reasons == {"throttled": 1, "timeout": 1}


async def test_dropped_provisioning_log_entries_are_counted(recorded: Recorded) -> None:
    from datetime import UTC, datetime

    from scim.provisioning_log import LogEntry, LogWriter, MemoryProvisioningLog, format_time

    class Failing(MemoryProvisioningLog):
        async def record_many(self, *args: Any, **kwargs: Any) -> None:
            raise OSError("storage is down")

    writer = LogWriter(Failing(), window=0.01)
    for _ in range(3):
        entry = LogEntry(format_time(datetime.now(UTC)), "POST /Users", 201, uuid.uuid4().hex, 1.0)
        writer.submit("contoso", entry)
    await writer.drain()
    assert [(a, p.value) for a, p in recorded.points("scim.log.dropped")] == [({"scim.tenant": "contoso"}, 3)]


# ---- webhooks and digests --------------------------------------------------------------------------


@pytest.fixture
async def hook_receiver() -> AsyncIterator[tuple[str, str]]:
    """Two receivers on 127.0.0.1: one answers 204, the other 500 (URLs with a secret path)."""

    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    async def broken(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=500)

    app = web.Application()
    app.router.add_post("/ok/secret-path-abc", ok)
    app.router.add_post("/broken/secret-path-abc", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/ok/secret-path-abc", f"http://127.0.0.1:{port}/broken/secret-path-abc"
    finally:
        await runner.cleanup()


async def test_webhook_deliveries_are_spans_and_metrics(
    runtime: Runtime, client: FunctionsClient, recorded: Recorded, hook_receiver: tuple[str, str]
) -> None:
    good, bad = hook_receiver
    sender = WebhookSender(in_azure=False, timeout=2)
    engine = DeliveryEngine(
        runtime.store,
        runtime.webhooks,
        runtime.deliveries,
        sender.send,
        settle_seconds=0.2,
        poll_seconds=0.05,
        rescan_seconds=0.1,
        schedule=lambda attempts, at, after: at + timedelta(seconds=30),
    )
    runtime._delivery = engine
    endpoints: list[str] = []
    try:
        endpoints.append((await runtime.webhooks.add(good, [client.tenant]))[0])
        endpoints.append((await runtime.webhooks.add(bad, [client.tenant]))[0])
        await engine.endpoints(fresh=True)
        body = new_user()
        assert (await client.post("/Users", body)).status == 201  # pokes the engine
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            outcomes = {a["scim.outcome"] for a, _ in recorded.points("scim.webhook.deliveries")}
            if outcomes == {"delivered", "failed"}:
                break
            await asyncio.sleep(0.05)
        await engine.idle(10)
        from scim.functions.delivery_adapter import run_delivery_sweep

        await run_delivery_sweep(runtime)  # the timer's check: the failed lane waits (retry in 30 s)
    finally:
        await engine.close()
        await sender.close()
        for endpoint_id in endpoints:  # on Azurite, other tests' timers would go on retrying them
            await runtime.webhooks.remove(endpoint_id)
    deliveries = {(a["scim.tenant"], a["scim.outcome"]): p.value for a, p in recorded.points("scim.webhook.deliveries")}
    assert deliveries == {(client.tenant, "delivered"): 1, (client.tenant, "failed"): 1}
    spans = [s for s in recorded.ours() if s.name == "scim.webhook.deliver"]
    assert sorted((s.attributes or {})["scim.outcome"] for s in spans) == ["delivered", "failed"]
    for s in spans:
        assert s.parent is None and s.kind == SpanKind.CLIENT  # a trace of its own, not the request's
        assert (s.attributes or {})["scim.tenant"] == client.tenant
    assert {(s.attributes or {})["http.response.status_code"] for s in spans} == {204, 500}
    ages = [(a, p) for a, p in recorded.points("scim.webhook.backlog_age")]
    assert ages and all(a == {"scim.tenant": client.tenant} for a, _ in ages)
    assert max(p.max for _, p in ages) > 0  # the failed event waits in its lane
    assert_clean(everything_recorded(recorded), [body["userName"], body["emails"][0]["value"], "secret-path-abc"])


@pytest.fixture
async def mail_runtime(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Runtime, Any]]:
    with smtp_server() as (mailbox, port):
        monkeypatch.setattr(notifier_module, "DEFAULT_LAG", timedelta(0))
        settings = Settings.from_env(
            {**MEMORY_SETTINGS, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "NOTIFY_FROM": "scim@example.test"}
        )
        runtime = build_memory_runtime(settings)
        use_runtime(runtime)
        try:
            yield runtime, mailbox
        finally:
            use_runtime(None)
            await runtime.close()


async def test_digest_emails_are_spans_and_metrics(mail_runtime: tuple[Runtime, Any], recorded: Recorded) -> None:
    runtime, mailbox = mail_runtime
    name = "n" + uuid.uuid4().hex[:12]
    token = await runtime.tenants.create(name)
    await runtime.tenants.set_notifications(name, ("ops-person@example.test",), True)
    client = FunctionsClient(name, token)
    timer = REGISTERED["notify_timer"]
    body = new_user()
    for status in (201, 409):
        assert (await client.post("/Users", body)).status == status
    await runtime.log_writer.drain()
    await asyncio.sleep(0.01)  # the digest's window ends at the run's millisecond, excluded
    await timer(None)
    assert len(mailbox.messages) == 1
    assert (await client.post("/Users", body)).status == 409
    await runtime.log_writer.drain()
    await asyncio.sleep(0.01)
    mailbox.refuse = 1
    await timer(None)
    emails = {a["scim.outcome"]: p.value for a, p in recorded.points("scim.digest.emails")}
    assert emails == {"sent": 1, "failed": 1}
    runs = [s for s in recorded.ours() if s.name == "scim.notify"]
    sends = [s for s in recorded.ours() if s.name == "scim.email.send"]
    assert len(runs) == 2 and len(sends) == 2
    for run, send in zip(
        sorted(runs, key=lambda s: s.start_time or 0), sorted(sends, key=lambda s: s.start_time or 0), strict=True
    ):
        assert send.parent is not None and run.context is not None and send.parent.span_id == run.context.span_id
        assert (send.attributes or {})["scim.email.transport"] == "smtp"
    assert sorted((s.attributes or {})["scim.outcome"] for s in sends) == ["failed", "sent"]
    assert_clean(everything_recorded(recorded), ["ops-person", body["userName"], "127.0.0.1", "scim@example.test"])


# ---- configuration -----------------------------------------------------------------------------------


def test_the_managed_identity_of_the_authentication_setting() -> None:
    client_id = str(uuid.uuid4())
    assert setup.managed_identity_client_id(f"ClientId={client_id};Authorization=AAD") == client_id
    assert setup.managed_identity_client_id(f"authorization=aad; clientid={client_id}") == client_id
    assert setup.managed_identity_client_id("Authorization=AAD") == ""
    assert setup.managed_identity_client_id("ClientId=x;Authorization=Other") is None
    assert setup.managed_identity_client_id(None) is None


def test_the_distro_is_configured_with_the_managed_identity_and_the_apps_logger(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What :func:`scim.telemetry.setup.configure_once` asks of the distro (the distro itself is
    replaced: configuring it sets this process's global providers for good)."""
    import azure.identity
    import azure.monitor.opentelemetry

    calls: list[dict[str, Any]] = []
    credentials: list[str | None] = []

    class Identity:
        def __init__(self, client_id: str | None = None) -> None:
            credentials.append(client_id)

    monkeypatch.setattr(azure.monitor.opentelemetry, "configure_azure_monitor", lambda **kw: calls.append(kw))
    monkeypatch.setattr(azure.identity, "ManagedIdentityCredential", Identity)
    client_id = str(uuid.uuid4())
    connection = "InstrumentationKey=00000000-0000-0000-0000-000000000000"
    env = {
        setup.CONNECTION_SETTING: connection,
        setup.AUTHENTICATION_SETTING: f"ClientId={client_id};Authorization=AAD",
    }
    try:
        setup._configure(connection, env)
        assert instruments.active() is not None
        # With the worker's own configuration on, the app only adds its instruments.
        setup._configure(connection, {**env, "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "true"})
    finally:
        instruments.uninstall()
    assert len(calls) == 1 and credentials == [client_id]
    (options,) = calls
    assert options["connection_string"] == connection and isinstance(options["credential"], Identity)
    assert options["logger_name"] == "scim" and options["enable_live_metrics"] is False
    assert "azure_sdk" not in options["instrumentation_options"]  # the storage spans stay on
    assert options["instrumentation_options"]["requests"] == {"enabled": False}
    assert env["OTEL_EXPERIMENTAL_RESOURCE_DETECTORS"] == "azure_functions"


def test_table_urls_keep_no_entity_key() -> None:
    base = "https://acct.table.core.windows.net"
    assert setup.table_url(f"{base}/scimdirectory(PartitionKey='t',RowKey='u%7Calice%40contoso.com')") == (
        f"{base}/scimdirectory"
    )
    assert setup.table_url(f"{base}/scimdirectory()?$filter=RowKey%20eq%20'alice'") == f"{base}/scimdirectory"
    assert (
        setup.table_url("http://127.0.0.1:10002/devstoreaccount1/$batch")
        == "http://127.0.0.1:10002/devstoreaccount1/$batch"
    )
    assert setup.table_url(f"{base}/odd path/alice@contoso.com") == f"{base}/"


_SCRIPT_PRELUDE = """
import asyncio, json, logging, sys, threading
import function_app
from scim.functions.runtime import use_runtime
from scim.telemetry import instruments
from tests.functions_client import FunctionsClient
from tests.helpers import memory_runtime, new_user

async def requests():
    runtime = memory_runtime()
    use_runtime(runtime)
    name = "t0telemetry"
    client = FunctionsClient(name, await runtime.tenants.create(name))
    statuses = [(await client.post("/Users", new_user())).status]
    statuses.append((await client.get("/Users")).status)
    return statuses
"""


def _run(script: str, tmp_path: Path, **env: str) -> dict[str, Any]:
    environ = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", ""),
        "TMPDIR": str(tmp_path),  # the exporter keeps what it could not send here
        "SCIM_TABLE_CONNECTION_STRING": "UseDevelopmentStorage=true",
        **env,
    }
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["seconds"] = time.monotonic() - started
    return result


def test_importing_the_app_loads_no_telemetry_sdk(tmp_path: Path) -> None:
    """The cold-start budget: neither the distro nor the SDK is loaded by ``import function_app``,
    even with the connection string set (configuration waits for the first invocation)."""
    script = """
    import json, sys
    import function_app
    print(json.dumps(sorted(m for m in sys.modules if m.startswith(("azure.monitor", "opentelemetry")))))
    """
    environ = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "")}
    environ |= {"SCIM_TABLE_CONNECTION_STRING": "UseDevelopmentStorage=true", "TMPDIR": str(tmp_path)}
    environ["APPLICATIONINSIGHTS_CONNECTION_STRING"] = "InstrumentationKey=00000000-0000-0000-0000-000000000000"
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT, env=environ, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout)
    assert not [m for m in loaded if m.startswith(("azure.monitor", "opentelemetry.sdk"))], loaded


def test_without_the_connection_string_nothing_is_configured(tmp_path: Path) -> None:
    script = (
        _SCRIPT_PRELUDE
        + """
statuses = asyncio.run(requests())
print(json.dumps({
    "statuses": statuses,
    "active": instruments.active() is not None,
    "loaded": sorted(m for m in sys.modules if m.startswith(("azure.monitor", "opentelemetry"))),
    "threads": sorted(t.name for t in threading.enumerate()),
}))
"""
    )
    result = _run(script, tmp_path)
    assert result["statuses"] == [201, 200]
    assert result["active"] is False
    assert result["loaded"] == []  # not even the OpenTelemetry API
    assert not [t for t in result["threads"] if t.startswith(("Otel", "AzureMonitor", "Configuration"))]


def test_with_the_connection_string_telemetry_is_configured_once_and_requests_work(tmp_path: Path) -> None:
    """A dummy connection string to a closed local port: configuration runs once on the first
    invocation, requests are answered and traced, and the failed exports do no harm."""
    script = (
        _SCRIPT_PRELUDE
        + """
from opentelemetry import metrics, trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from azure.core.settings import settings
from scim.telemetry import setup

async def main():
    first = await requests()
    provider = trace.get_tracer_provider()
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    second = await requests()
    return first + second, provider, spans

statuses, provider, spans = asyncio.run(main())
handlers = [type(h).__name__ for h in logging.getLogger("scim").handlers]
again = setup.configure_once()
threads = sorted(t.name for t in threading.enumerate())
# Shut down now (what the SDK's exit hook would do), while the interpreter is whole.
from opentelemetry._logs import get_logger_provider
for p in (provider, metrics.get_meter_provider(), get_logger_provider()):
    p.shutdown()
print(json.dumps({
    "statuses": statuses,
    "active": instruments.active() is not None,
    "again": again,
    "same_provider": trace.get_tracer_provider() is provider,
    "provider": type(provider).__module__,
    "meter_provider": type(metrics.get_meter_provider()).__module__,
    "azure_spans": settings.tracing_implementation().__name__,
    "handlers": handlers,
    "request_spans": sorted(s.name for s in spans.get_finished_spans() if s.instrumentation_scope.name == "scim"),
    "threads": threads,
}))
"""
    )
    result = _run(
        script,
        tmp_path,
        APPLICATIONINSIGHTS_CONNECTION_STRING=(
            "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=http://127.0.0.1:9/"
        ),
        # Every trace (the default, 5 traces a second, drops most of a burst of fast requests).
        OTEL_TRACES_SAMPLER="microsoft.fixed_percentage",
        OTEL_TRACES_SAMPLER_ARG="1.0",
    )
    assert result["statuses"] == [201, 200, 201, 200]
    assert result["active"] is True and result["again"] is True and result["same_provider"] is True
    assert result["provider"].startswith("opentelemetry.sdk") and result["meter_provider"].startswith(
        "opentelemetry.sdk"
    )
    assert result["azure_spans"] == "ScrubbedSpan"
    assert result["handlers"].count("LoggingHandler") == 1
    assert result["request_spans"] == ["GET /Users", "POST /Users"]
    assert any(t.startswith("Otel") for t in result["threads"])
    assert result["seconds"] < 60
