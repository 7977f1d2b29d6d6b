"""The provisioning log and failure digests, end to end: real requests through the Functions entry
point, the real timer function, Azurite, and a real SMTP server (aiosmtpd) started here."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from devtools.azurite import AzuriteProcess
from scim.functions.runtime import Runtime, build_runtime, use_runtime
from scim.functions.timer_adapter import build_notifier
from scim.notify import notifier as notifier_module
from scim.provisioning_log import LogEntry, format_time
from scim.provisioning_log import entries as log_entries
from scim.provisioning_log import tables as log_tables
from tests.functions_client import REGISTERED, FunctionsClient
from tests.helpers import Mailbox, create_user, new_user, smtp_server
from tests.scim_fixtures import azurite_settings


@pytest.fixture(scope="module")
def smtp() -> Iterator[tuple[Mailbox, int]]:
    with smtp_server() as server:
        yield server


@pytest.fixture
async def mail_runtime(azurite: str, table_prefix: str, smtp, monkeypatch) -> AsyncIterator[Runtime]:  # type: ignore[no-untyped-def]
    async for runtime in _mail_runtime(azurite, table_prefix, smtp, monkeypatch):
        yield runtime


@pytest.fixture
async def burst_runtime(smtp, monkeypatch) -> AsyncIterator[Runtime]:  # type: ignore[no-untyped-def]
    """On an Azurite of its own: Azurite slows down as its database grows, and this test writes 10,000 rows."""
    azurite = AzuriteProcess(0, in_memory=True)
    azurite.start()
    try:
        async for runtime in _mail_runtime(azurite.connection_string, "burst", smtp, monkeypatch):
            yield runtime
    finally:
        azurite.stop()


async def _mail_runtime(azurite: str, table_prefix: str, smtp, monkeypatch) -> AsyncIterator[Runtime]:  # type: ignore[no-untyped-def]
    mailbox, port = smtp
    mailbox.messages.clear()
    mailbox.refuse = 0
    monkeypatch.setattr(notifier_module, "DEFAULT_LAG", timedelta(0))  # the tests' requests are all done
    # Unauthenticated requests are counted per second (not per minute), so that a count made a
    # second after a run falls in the next run's window even with no lag.
    monkeypatch.setattr(log_entries, "BUCKET_SECONDS", 1)
    settings = azurite_settings(
        azurite, table_prefix, SMTP_HOST="127.0.0.1", SMTP_PORT=str(port), NOTIFY_FROM="scim@example.test"
    )
    runtime = build_runtime(settings)
    use_runtime(runtime)
    yield runtime
    use_runtime(None)
    await runtime.close()


NOTIFY_TIMER = REGISTERED["notify_timer"]


async def run_timer(runtime: Runtime) -> None:
    await runtime.log_writer.drain()
    await NOTIFY_TIMER(None)


async def tenant(runtime: Runtime, notify: tuple[str, ...] = (), enabled: bool = True) -> FunctionsClient:
    name = "n" + uuid.uuid4().hex[:12]
    token = await runtime.tenants.create(name)
    if notify:
        await runtime.tenants.set_notifications(name, notify, enabled)
    return FunctionsClient(name, token)


async def make_failures(client: FunctionsClient, n: int = 3) -> None:
    for _ in range(n):
        await client.get(f"/Users/{uuid.uuid4()}")  # 404
    body = new_user()
    await client.post("/Users", body)
    await client.post("/Users", body)  # 409 uniqueness


async def test_every_request_is_logged_with_a_correlation_id(mail_runtime):
    client = await tenant(mail_runtime)
    user = await create_user(client)
    missing = await client.get(f"/Users/{uuid.uuid4()}")
    body = new_user()
    await client.post("/Users", body)
    conflict = await client.post("/Users", body)
    await mail_runtime.log_writer.drain()
    page = await mail_runtime.log.page(client.tenant, limit=10)
    assert [e.operation for e in page.entries] == ["POST /Users", "POST /Users", "GET /Users/{id}", "POST /Users"]
    newest = page.entries[0]
    assert newest.status == 409 and newest.scim_type == "uniqueness" and newest.subject == body["userName"]
    assert newest.correlation_id == conflict.headers["x-correlation-id"]
    assert page.entries[2].status == 404 and page.entries[2].correlation_id == missing.headers["x-correlation-id"]
    assert page.entries[3].resource_id == user["id"] and page.entries[3].detail is None
    failures = await mail_runtime.log.page(client.tenant, failures_only=True)
    assert [e.status for e in failures.entries] == [409, 404]
    first, second = await mail_runtime.log.page(client.tenant, limit=2), None
    second = await mail_runtime.log.page(client.tenant, limit=2, cursor=first.cursor)
    assert [e.correlation_id for e in first.entries + second.entries] == [e.correlation_id for e in page.entries]
    assert second.cursor is None
    logged = repr(page.entries)
    assert client.token not in logged and "Bearer" not in logged


async def test_a_failing_log_never_breaks_provisioning(mail_runtime, monkeypatch, caplog):
    """The storage call of the log write the service really makes (LogWriter -> record_many ->
    one transaction: the entry and its hour's tally) fails: the response is unaffected, the
    error arrives as the store's StoreUnavailable, the writer survives, and the failure is
    logged once."""
    client = await tenant(mail_runtime)
    calls: list[list[str]] = []
    real = log_tables.submit_transaction

    async def broken(table, operations, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append([entity["correlation_id"] for _, entity, _ in operations if "correlation_id" in entity])
        raise ConnectionError("log storage is down")

    monkeypatch.setattr(log_tables, "submit_transaction", broken)
    response = await client.post("/Users", new_user())
    await mail_runtime.log_writer.drain()  # must not raise
    assert response.status == 201
    assert calls == [[response.headers["x-correlation-id"]]], "the failing write was not the one the service makes"
    assert [r.getMessage() for r in caplog.records if "could not write" in r.getMessage()] == [
        "could not write 1 provisioning log entries (StoreUnavailable): POST /Users"
    ]
    monkeypatch.setattr(log_tables, "submit_transaction", real)
    assert (await client.post("/Users", new_user())).status == 201
    await mail_runtime.log_writer.drain()
    assert len((await mail_runtime.log.page(client.tenant)).entries) == 1, "the writer keeps writing after a failure"


async def test_one_digest_per_tenant_with_failures_none_again_and_alert(mail_runtime, smtp):
    mailbox, _ = smtp
    failing = await tenant(mail_runtime, ("ops@a.example", "lead@a.example"))
    quiet = await tenant(mail_runtime, ("ops@b.example",))
    muted = await tenant(mail_runtime, ("ops@c.example",), enabled=False)
    healthy = await tenant(mail_runtime, ("ops@d.example",))
    await make_failures(failing, 20)
    await create_user(quiet)
    await make_failures(muted)
    await asyncio.gather(*(create_user(healthy) for _ in range(25)))
    await make_failures(healthy, 1)
    await run_timer(mail_runtime)
    assert len(mailbox.to("ops@a.example")) == 1 and len(mailbox.to("lead@a.example")) == 1
    assert mailbox.to("ops@b.example") == [] and mailbox.to("ops@c.example") == []
    digest = mailbox.to("ops@a.example")[0]
    assert digest["From"] == "scim@example.test"
    assert digest["Subject"].startswith("ALERT: "), "21 of 22 requests failed: above Entra's 40 % quarantine ratio"
    [calm] = mailbox.to("ops@d.example")
    assert not calm["Subject"].startswith("ALERT"), "2 of 27 requests failed: no alert"
    parts = {
        part.get_content_type(): part.get_payload(decode=True).decode()
        for part in digest.walk()
        if not part.is_multipart()
    }
    assert set(parts) == {"text/plain", "text/html"}
    text = parts["text/plain"]
    assert failing.tenant in text, text
    assert "404" in text and "uniqueness" in text, text

    await run_timer(mail_runtime)
    assert len(mailbox.to("ops@a.example")) == 1, "no duplicate on the next run"

    await asyncio.sleep(1.1)  # the next counting period
    await failing.get("/Users", token="stolen-or-stale-token")
    await run_timer(mail_runtime)
    second = mailbox.to("ops@a.example")
    assert (
        len(second) == 2
        and second[1]["Subject"].startswith("ALERT: ")
        and "401" in second[1].get_payload()[0].get_payload(decode=True).decode()
    )


async def test_a_refused_send_is_retried_on_the_next_run(mail_runtime, smtp):
    mailbox, _ = smtp
    client = await tenant(mail_runtime, ("retry@a.example",))
    await make_failures(client)
    mailbox.refuse = 1
    await run_timer(mail_runtime)
    assert mailbox.to("retry@a.example") == []
    await run_timer(mail_runtime)
    assert len(mailbox.to("retry@a.example")) == 1
    await run_timer(mail_runtime)
    assert len(mailbox.to("retry@a.example")) == 1


async def test_overlapping_runs_send_one_digest(mail_runtime, smtp):
    mailbox, _ = smtp
    client = await tenant(mail_runtime, ("race@a.example",))
    await make_failures(client)
    await mail_runtime.log_writer.drain()
    runs = [build_notifier(mail_runtime) for _ in range(4)]
    await asyncio.gather(*(n.run_all() for n in runs))
    for n in runs:
        await n.sender.close()
    assert len(mailbox.to("race@a.example")) == 1


@pytest.mark.azurite(reason="burst_runtime starts an Azurite of its own")
async def test_a_burst_of_10000_failures_is_summarised_in_a_bounded_message(burst_runtime, smtp):
    mail_runtime = burst_runtime
    from scim.provisioning_log.tables import _row

    mailbox, _ = smtp
    client = await tenant(mail_runtime, ("burst@a.example",))
    created = datetime.fromisoformat((await mail_runtime.tenants.info(client.tenant)).created.replace("Z", "+00:00"))
    # Bulk-load 10,000 failures (their "f" rows only: the digest reads those, and Azurite's
    # inserts slow down as its table grows): sending 10,000 real requests would take minutes. Times fall between the tenant's creation and now.
    entries = [
        LogEntry(
            format_time(created + timedelta(milliseconds=1 + i // 10)),
            "POST /Users",
            409 if i % 2 else 400,
            f"c{i:05d}",
            3.0,
            "User",
            None,
            "uniqueness" if i % 2 else "invalidValue",
            f"detail {i % 7}",
            f"user{i}@contoso.com",
        )
        for i in range(10_000)
    ]
    log = mail_runtime.log
    await log.page(client.tenant, limit=1)  # creates the log table
    rows = [_row(client.tenant, "f", e) for e in entries]
    gate = asyncio.Semaphore(4)

    async def put(chunk: int) -> None:
        async with gate:
            await log._write(rows[chunk : chunk + 100])  # upserts, sent again if a connection is reset

    await asyncio.gather(*(put(c) for c in range(0, len(rows), 100)))
    await asyncio.sleep(max(0.0, (created + timedelta(seconds=1.1) - datetime.now(UTC)).total_seconds()))
    await run_timer(mail_runtime)
    [digest] = mailbox.to("burst@a.example")
    raw = digest.as_bytes()
    assert len(raw) < 400_000, len(raw)
    text = next(p for p in digest.walk() if p.get_content_type() == "text/plain").get_payload(decode=True).decode()
    assert "10,000 failures" in text and "and 9,980 more" in text, text[:3000]


async def test_the_timer_removes_log_entries_past_the_retention(mail_runtime):
    client = await tenant(mail_runtime)
    now = datetime.now(UTC)
    log = mail_runtime.log
    retention = mail_runtime.settings.log_retention_days
    old = LogEntry(format_time(now - timedelta(days=retention + 1)), "GET /Users/{id}", 404, "old", 1.0)
    kept = LogEntry(format_time(now - timedelta(days=retention - 1)), "GET /Users/{id}", 404, "kept", 1.0)
    await log.record(client.tenant, old)
    await log.record(client.tenant, kept)
    await run_timer(mail_runtime)
    remaining = await log.page(client.tenant, limit=10)
    failures = await log.page(client.tenant, failures_only=True, limit=10)
    assert [e.correlation_id for e in remaining.entries] == ["kept"]
    assert [e.correlation_id for e in failures.entries] == ["kept"]


async def test_a_strangers_wrong_tokens_never_email_the_operators(mail_runtime, smtp):
    """Anyone who knows a Tenant URL can send wrong tokens: that alone must not email anyone."""
    mailbox, _ = smtp
    busy = await tenant(mail_runtime, ("busy@a.example",))
    idle = await tenant(mail_runtime, ("idle@a.example",))
    await create_user(busy)
    for _ in range(30):
        await busy.get("/Users", token="a-guess")
        await idle.get("/Users", token="a-guess")
    await create_user(busy)  # Entra's own requests keep succeeding
    await run_timer(mail_runtime)
    assert mailbox.to("busy@a.example") == [] and mailbox.to("idle@a.example") == []


async def test_entras_token_failing_after_successes_alerts_once_a_day(mail_runtime, smtp):
    """A regenerated token not pasted into Entra: accepted requests, then only 401s. One alert,
    and not another for the same tenant within 24 hours however often it continues."""
    mailbox, _ = smtp
    client = await tenant(mail_runtime, ("cred@a.example",))
    await create_user(client)
    await run_timer(mail_runtime)  # no failure: nothing sent, the window moves past the success
    assert mailbox.to("cred@a.example") == []
    stale = client.token
    await mail_runtime.tenants.set_token(client.tenant)  # Entra still holds the old token
    await asyncio.sleep(1.1)
    for _ in range(3):
        assert (await client.get("/Users", token=stale)).status == 401
    await run_timer(mail_runtime)
    [alert] = mailbox.to("cred@a.example")
    text = next(p for p in alert.walk() if p.get_content_type() == "text/plain").get_payload(decode=True).decode()
    assert alert["Subject"].startswith("ALERT: "), alert["Subject"]
    assert "3 requests refused" in text and f"token regenerate {client.tenant}" in text, text
    for _ in range(2):
        await asyncio.sleep(1.1)
        await client.get("/Users", token=stale)
        await run_timer(mail_runtime)
    assert len(mailbox.to("cred@a.example")) == 1, "a second credential alert within 24 hours"


async def test_run_now_right_after_a_failure_says_how_many_wait(mail_runtime, smtp):
    """``notify run-now`` leaves failures of the last few seconds for the next run: it says so,
    with their count, instead of a bare "nothing"."""
    from scim.admin import core

    mailbox, _ = smtp
    client = await tenant(mail_runtime, ("now@a.example",))
    await client.get(f"/Users/{uuid.uuid4()}")  # 404
    await mail_runtime.log_writer.drain()
    result = await core.notify_now(mail_runtime.settings, client.tenant)
    assert result.outcome == "nothing" and mailbox.to("now@a.example") == []
    assert result.reason.startswith("1 failure(s) of the last 5 s wait for the next run"), result.reason


def _text(message) -> str:  # type: ignore[no-untyped-def]
    part = next(p for p in message.walk() if p.get_content_type() == "text/plain")
    return part.get_payload(decode=True).decode()


async def test_a_failing_webhook_endpoint_is_in_the_tenants_digest_once_per_new_failure(
    mail_runtime, smtp, monkeypatch
):
    """Issue 12, on Azure Tables: the timer's digest reports a failing endpoint of the tenant (not
    to a tenant it does not serve), not again without a new failure; a disabled one once; and
    ``notify run-now`` reads the registry too."""
    from scim.admin import core

    mailbox, _ = smtp
    served = await tenant(mail_runtime, ("hooks@a.example",))
    await tenant(mail_runtime, ("hooks@b.example",))  # served by no endpoint of this test
    hooks = mail_runtime.webhooks
    endpoint_id, secret = await hooks.add("https://hooks.example.com/scim?code=fn-key-5ecret", [served.tenant])
    try:
        await hooks.record_failure(endpoint_id, "HTTP 503 from the receiver")
        await asyncio.sleep(0.01)
        await run_timer(mail_runtime)
        [digest] = mailbox.to("hooks@a.example")
        text = _text(digest)
        assert digest["Subject"] == f"SCIM webhooks: 1 endpoint failing for tenant {served.tenant}"
        assert endpoint_id in text and "https://hooks.example.com/scim?…" in text, text
        assert "HTTP 503 from the receiver" in text and "python -m scim.admin webhook list" in text
        assert "fn-key-5ecret" not in digest.as_string() and secret not in digest.as_string()
        assert all(endpoint_id not in m.as_string() for m in mailbox.to("hooks@b.example"))

        await run_timer(mail_runtime)
        assert len(mailbox.to("hooks@a.example")) == 1, "still failing, nothing new: no second digest"

        await hooks.disable(endpoint_id, "the receiver answered 410 Gone")
        await asyncio.sleep(0.01)
        monkeypatch.setattr(core, "NOTIFY_NOW_LAG", timedelta(0))
        result = await core.notify_now(mail_runtime.settings, served.tenant)
        assert result.outcome == "sent" and result.webhooks == 1, result
        disabled = mailbox.to("hooks@a.example")[1]
        assert disabled["Subject"] == f"SCIM webhooks: 1 endpoint disabled for tenant {served.tenant}"
        assert "the receiver answered 410 Gone" in _text(disabled) and "webhook enable ID" in _text(disabled)
        await run_timer(mail_runtime)
        assert len(mailbox.to("hooks@a.example")) == 2
        assert all(endpoint_id not in m.as_string() for m in mailbox.to("hooks@b.example"))
    finally:
        await hooks.remove(endpoint_id)
