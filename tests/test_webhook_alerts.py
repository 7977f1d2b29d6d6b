"""Webhook endpoints in the operators' emails (issue 12): the failure digest's section on the
endpoints failing or disabled (scim.notify.notifier, on the memory runtime), and the email sent
when the delivery engine disables an endpoint (scim.notify.webhook_alerts, through a real SMTP
server: aiosmtpd)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from scim.functions.runtime import Runtime, build_memory_runtime
from scim.functions.timer_adapter import build_notifier
from scim.notify import webhook_alerts
from scim.notify.mail import RecordingSender, SentEmail
from scim.notify.notifier import Notifier, notifier_for
from scim.settings import Settings
from scim.webhooks import WebhookEndpoint
from tests.helpers import MEMORY_SETTINGS, Mailbox, memory_runtime, smtp_server

QUERY_KEY = "fn-key-5ecret"


@pytest.fixture(scope="module")
def smtp() -> Iterator[tuple[Mailbox, int]]:
    with smtp_server() as server:
        yield server


@pytest.fixture
async def mem() -> AsyncIterator[Runtime]:
    runtime = memory_runtime()
    yield runtime
    await runtime.close()


@pytest.fixture
async def mail_runtime(smtp: tuple[Mailbox, int]) -> AsyncIterator[Runtime]:
    """A memory runtime whose email goes to the SMTP server above; events kept 12 days."""
    mailbox, port = smtp
    mailbox.messages.clear()
    mailbox.refuse = 0
    settings = Settings.from_env(
        {
            **MEMORY_SETTINGS,
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(port),
            "NOTIFY_FROM": "scim@example.test",
            "EVENTS_RETENTION_DAYS": "12",
        }
    )
    runtime = build_memory_runtime(settings)
    yield runtime
    await runtime.close()


async def _tenant(runtime: Runtime, name: str, *recipients: str, enabled: bool = True) -> None:
    await runtime.tenants.create(name)
    if recipients:
        await runtime.tenants.set_notifications(name, recipients, enabled)


def _notifier(runtime: Runtime, sender: RecordingSender, *, webhooks: bool = True) -> Notifier:
    return Notifier(
        runtime.settings,
        runtime.tenants,
        runtime.log,
        runtime.states,
        sender,
        lag=timedelta(0),
        webhooks=runtime.webhooks if webhooks else None,
    )


def _sent_to(sender: RecordingSender, address: str) -> list[SentEmail]:
    return [m for m in sender.sent if address in m.to]


async def _soon() -> datetime:
    """A run's ``now``, a few milliseconds after what the test recorded (a window ends on the
    millisecond before ``now``; the next one starts there)."""
    await asyncio.sleep(0.003)
    return datetime.now(UTC)


# ---- the failure digest's webhook section ----------------------------------------------------


async def test_a_failing_endpoint_appears_in_the_digest_of_the_tenants_it_serves(mem: Runtime) -> None:
    await _tenant(mem, "contoso", "ops@contoso.example")
    await _tenant(mem, "fabrikam", "ops@fabrikam.example")
    hooks = mem.webhooks
    every, _ = await hooks.add(f"https://all.example.com/hook?code={QUERY_KEY}")
    mine, _ = await hooks.add("https://contoso.example.com/hook", tenants=["contoso"])
    theirs, _ = await hooks.add("https://fabrikam.example.com/hook", tenants=["fabrikam"])
    healthy, _ = await hooks.add("https://healthy.example.com/hook", tenants=["contoso"])
    await hooks.record_success(healthy)
    for endpoint_id in (every, mine, theirs):
        await hooks.record_failure(endpoint_id, "HTTP 503 from the receiver")
    sender = RecordingSender()
    results = {r.tenant: r for r in await _notifier(mem, sender).run_all(await _soon())}

    assert results["contoso"].outcome == "sent" and results["contoso"].webhooks == 2
    assert results["contoso"].failures == 0, "webhook endpoints alone are a reason to send"
    [digest] = _sent_to(sender, "ops@contoso.example")
    assert digest.subject == "SCIM webhooks: 2 endpoints failing for tenant contoso"
    assert every in digest.text and mine in digest.text and theirs not in digest.text and healthy not in digest.text
    assert "https://all.example.com/hook?…" in digest.text and "https://contoso.example.com/hook" in digest.text
    assert "failing since 20" in digest.text and "HTTP 503 from the receiver" in digest.text
    assert "python -m scim.admin webhook list" in digest.text
    assert every in digest.html and "HTTP 503 from the receiver" in digest.html
    endpoint = await hooks.get(every)
    for secret in (QUERY_KEY, endpoint.secret):
        assert secret not in digest.text and secret not in digest.html

    [other] = _sent_to(sender, "ops@fabrikam.example")
    assert theirs in other.text and every in other.text and mine not in other.text


async def test_nothing_new_no_repeat_and_a_new_failure_is_reported_again(mem: Runtime) -> None:
    await _tenant(mem, "contoso", "ops@contoso.example")
    endpoint_id, _ = await mem.webhooks.add("https://hooks.example.com/x", tenants=["contoso"])
    await mem.webhooks.record_failure(endpoint_id, "connection refused")
    sender = RecordingSender()
    notifier = _notifier(mem, sender)
    assert [r.outcome for r in await notifier.run_all(await _soon())] == ["sent"]

    [again] = await notifier.run_all(await _soon())
    assert again.outcome == "nothing" and len(sender.sent) == 1, "still failing, but nothing new: no repeat"

    await mem.webhooks.record_failure(endpoint_id, "HTTP 502 on the retry")
    [third] = await notifier.run_all(await _soon())
    assert third.outcome == "sent" and len(sender.sent) == 2
    assert "HTTP 502 on the retry" in sender.sent[1].text

    await mem.webhooks.record_failure(endpoint_id, "HTTP 500")
    await mem.webhooks.record_success(endpoint_id)  # recovered before the digest: nothing to say
    [fourth] = await notifier.run_all(await _soon())
    assert fourth.outcome == "nothing" and len(sender.sent) == 2


async def test_a_disabled_endpoint_is_reported_once_with_its_reason_and_how_to_resume(mem: Runtime) -> None:
    await _tenant(mem, "contoso", "ops@contoso.example")
    endpoint_id, _ = await mem.webhooks.add("https://gone.example.com/hook")
    sender = RecordingSender()
    notifier = _notifier(mem, sender)
    await notifier.run_all(await _soon())  # nothing yet: the window moves on
    assert sender.sent == []

    await mem.webhooks.record_failure(endpoint_id, "HTTP 410 Gone")
    await mem.webhooks.disable(endpoint_id, "the receiver answered 410 Gone")
    [result] = await notifier.run_all(await _soon())
    assert result.outcome == "sent" and result.webhooks == 1
    [digest] = sender.sent
    assert digest.subject == "SCIM webhooks: 1 endpoint disabled for tenant contoso"
    disabled_at = (await mem.webhooks.get(endpoint_id)).disabled_at
    assert f"DISABLED {disabled_at}: the receiver answered 410 Gone" in digest.text
    assert "python -m scim.admin webhook enable ID" in digest.text and "resumes where it stopped" in digest.text
    assert "30 days (EVENTS_RETENTION_DAYS)" in digest.text

    [again] = await notifier.run_all(await _soon())
    assert again.outcome == "nothing" and len(sender.sent) == 1, "disabled before the window: not repeated"


async def test_without_the_registry_there_is_no_webhook_section(mem: Runtime) -> None:
    await _tenant(mem, "contoso", "ops@contoso.example")
    endpoint_id, _ = await mem.webhooks.add("https://hooks.example.com/x")
    await mem.webhooks.record_failure(endpoint_id, "timeout")
    sender = RecordingSender()
    [result] = await _notifier(mem, sender, webhooks=False).run_all(await _soon())
    assert result.outcome == "nothing" and sender.sent == []


async def test_failures_and_webhooks_share_one_digest(mem: Runtime) -> None:
    from scim.provisioning_log import LogEntry, format_time

    await _tenant(mem, "contoso", "ops@contoso.example")
    endpoint_id, _ = await mem.webhooks.add("https://hooks.example.com/x")
    await mem.webhooks.record_failure(endpoint_id, "timeout")
    await mem.log.record("contoso", LogEntry(format_time(datetime.now(UTC)), "GET /Users/{id}", 404, "corr-1", 1.0))
    sender = RecordingSender()
    [both] = await _notifier(mem, sender).run_all(await _soon())
    assert both.outcome == "sent" and both.failures == 1 and both.webhooks == 1
    [digest] = sender.sent
    assert digest.subject == "SCIM provisioning: 1 failure for tenant contoso; webhooks: 1 endpoint failing"
    assert "By operation and status" in digest.text and "corr-1" in digest.text
    assert endpoint_id in digest.text and "timeout" in digest.text


async def test_the_timer_and_run_now_notifiers_get_the_registry(mem: Runtime) -> None:
    notifier = build_notifier(mem)
    try:
        assert notifier.webhooks is mem.webhooks
    finally:
        if notifier.sender is not None:
            await notifier.sender.close()
    plain = notifier_for(mem.settings, mem.tenants, mem.log, states=mem.states)
    assert plain.webhooks is None


# ---- the email when an endpoint is disabled ---------------------------------------------------


def _text(message) -> str:  # type: ignore[no-untyped-def]
    part = next(p for p in message.walk() if p.get_content_type() == "text/plain")
    return part.get_payload(decode=True).decode()


def _html(message) -> str:  # type: ignore[no-untyped-def]
    part = next(p for p in message.walk() if p.get_content_type() == "text/html")
    return part.get_payload(decode=True).decode()


async def _disabled(runtime: Runtime, url: str, tenants: list[str] | None = None) -> WebhookEndpoint:
    endpoint_id, _ = await runtime.webhooks.add(url, tenants=tenants)
    await runtime.webhooks.record_failure(endpoint_id, "HTTP 503 Service Unavailable")
    return await runtime.webhooks.get(endpoint_id)  # as the engine passes it: before disabling


async def test_the_disable_email_reaches_the_tenants_operators(mail_runtime: Runtime, smtp) -> None:  # type: ignore[no-untyped-def]
    mailbox, _ = smtp
    await _tenant(mail_runtime, "contoso", "ops@contoso.example", "lead@contoso.example")
    endpoint = await _disabled(mail_runtime, f"https://hooks.example.com/scim?code={QUERY_KEY}")
    reason = "no delivery succeeded within the retry window (about three days)"
    now = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)

    assert await webhook_alerts.alert_disabled_endpoint(mail_runtime, endpoint, "contoso", reason, now=now)

    [message] = mailbox.to("ops@contoso.example")
    assert mailbox.to("lead@contoso.example") == [message]
    assert message["From"] == "scim@example.test"
    assert message["Subject"] == "Webhook endpoint disabled: hooks.example.com (tenant contoso)"
    text, html = _text(message), _html(message)
    assert f"Endpoint:      {endpoint.id}" in text
    assert "URL:           https://hooks.example.com/scim?…" in text
    assert f"Reason:        {reason}" in text
    assert "Disabled at:   2026-11-29T10:00:00.000Z" in text
    assert "HTTP 503 Service Unavailable" in text
    assert "12 days (EVENTS_RETENTION_DAYS)" in text
    assert f"python -m scim.admin webhook enable {endpoint.id}` then resumes delivery from where it stopped" in text
    assert f"python -m scim.admin webhook replay {endpoint.id} --since TIME" in text
    assert endpoint.id in html and "12 days" in html
    for secret in (QUERY_KEY, endpoint.secret):
        assert secret not in message.as_string()


async def test_the_runtimes_delivery_engine_emails_through_this_alert(mail_runtime: Runtime, smtp) -> None:  # type: ignore[no-untyped-def]
    from scim.webhooks.sender import close_shared_sender

    mailbox, _ = smtp
    await _tenant(mail_runtime, "contoso", "ops@contoso.example")
    endpoint = await _disabled(mail_runtime, "https://gone.example.com/hook")
    engine = mail_runtime.delivery()
    try:
        assert engine.on_disabled is not None
        await engine.on_disabled(endpoint, "contoso", "the receiver answered 410 Gone")
    finally:
        await close_shared_sender()
    [message] = mailbox.to("ops@contoso.example")
    assert message["Subject"] == "Webhook endpoint disabled: gone.example.com (tenant contoso)"
    assert "the receiver answered 410 Gone" in _text(message)


async def test_no_disable_email_when_notifications_are_off_or_nobody_to_tell(
    mail_runtime: Runtime,
    smtp,  # type: ignore[no-untyped-def]
    caplog: pytest.LogCaptureFixture,
) -> None:
    mailbox, _ = smtp
    caplog.set_level(logging.INFO, "scim.notify")
    await _tenant(mail_runtime, "muted", "ops@muted.example", enabled=False)
    await _tenant(mail_runtime, "nobody")
    endpoint = await _disabled(mail_runtime, "https://hooks.example.com/x")
    for tenant in ("muted", "nobody", "deleted"):
        caplog.clear()
        assert not await webhook_alerts.alert_disabled_endpoint(mail_runtime, endpoint, tenant, "410 Gone")
        assert f"no email about disabled webhook endpoint {endpoint.id}" in caplog.text, tenant
    assert mailbox.messages == []


async def test_no_disable_email_without_a_sender(mem: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "scim.notify")
    await _tenant(mem, "contoso", "ops@contoso.example")
    endpoint = await _disabled(mem, "https://hooks.example.com/x")
    assert not await webhook_alerts.alert_disabled_endpoint(mem, endpoint, "contoso", "410 Gone")
    assert "no email sender configured" in caplog.text


async def test_a_failed_disable_email_is_logged_never_raised(
    mail_runtime: Runtime,
    smtp,  # type: ignore[no-untyped-def]
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mailbox, _ = smtp
    await _tenant(mail_runtime, "contoso", "ops@contoso.example")
    endpoint = await _disabled(mail_runtime, "https://hooks.example.com/x")
    mailbox.refuse = 1
    assert not await webhook_alerts.alert_disabled_endpoint(mail_runtime, endpoint, "contoso", "410 Gone")
    assert f"the email about disabled webhook endpoint {endpoint.id} was not sent" in caplog.text
    assert mailbox.messages == []

    async def broken(name: str) -> None:
        raise RuntimeError("the tenants table is unreachable")

    monkeypatch.setattr(mail_runtime.tenants, "info", broken)
    assert not await webhook_alerts.alert_disabled_endpoint(mail_runtime, endpoint, "contoso", "410 Gone")
    assert "RuntimeError" in caplog.text


async def test_the_alert_closes_the_sender_it_makes_not_one_it_is_given(
    mem: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _tenant(mem, "contoso", "ops@contoso.example")
    endpoint = await _disabled(mem, "https://hooks.example.com/x")
    made = RecordingSender()
    monkeypatch.setattr(webhook_alerts, "sender_from_settings", lambda settings: made)
    assert await webhook_alerts.alert_disabled_endpoint(mem, endpoint, "contoso", "410 Gone")
    assert len(made.sent) == 1 and made.closed

    given = RecordingSender()
    assert await webhook_alerts.alert_disabled_endpoint(mem, endpoint, "contoso", "410 Gone", sender=given)
    assert len(given.sent) == 1 and not given.closed
    assert given.sent[0].to == ("ops@contoso.example",) and given.sent[0].sender == mem.settings.notify_from


def test_the_disable_email_cleans_and_escapes_what_it_shows() -> None:
    hostile = '<script>alert("x")</script>'
    endpoint = WebhookEndpoint(
        id="ep_" + "a" * 32,
        url=f"https://hooks.example.com/{hostile}?key=k",
        tenants=None,
        events=None,
        created="2026-11-20T00:00:00.000Z",
        last_error=f"HTTP 500 {hostile}\r\nBcc: victim@example.com",
        last_error_at="2026-11-26T10:05:00.000Z",
    )
    email = webhook_alerts.disabled_email(
        endpoint, "contoso", f"gone {hostile}\n" + "r" * 5000, disabled_at="2026-11-26T10:06:00.000Z", retention_days=1
    )
    assert "<script" not in email.html and "&lt;script&gt;" in email.html
    assert "\n" not in email.subject and "key=k" not in email.text + email.html
    assert 'HTTP 500 <script>alert("x")</script> Bcc: victim@example.com' in email.text  # one line
    assert "r" * 400 not in email.text and "1 day (EVENTS_RETENTION_DAYS)" in email.text
