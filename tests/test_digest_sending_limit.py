"""The failure digest timer within an email service's sending limit (issue 15, "Deployability").

Azure Communication Services' Azure-managed domain sends at most 5 emails a minute and 10 an
hour; two tenants with failures on the 10-minute schedule exceed it, and ACS then answers 429
(and its SDK waits out ``Retry-After`` past the timer's 2-minute limit). So a run sends at most
``NOTIFY_MAX_EMAILS_PER_RUN`` digests (``infra/`` sets 1 for that domain), stops at the first
throttled send, and leaves the other tenants for the next runs untouched: their watermark does
not move, so their next digest covers the longer window (nothing is lost; failures are batched).
Each run starts at another tenant, so every tenant gets its turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from scim.functions.runtime import Runtime, build_memory_runtime
from scim.notify.mail import EmailSender, RecordingSender, SendError
from scim.notify.notifier import Notifier
from scim.provisioning_log import LogEntry, format_time
from scim.settings import Settings
from tests.helpers import MEMORY_SETTINGS

TENANTS = ("alpha", "bravo", "charlie")
RUN = timedelta(minutes=10)


async def runtime_with_failing_tenants(cap: int) -> Runtime:
    settings = Settings.from_env({**MEMORY_SETTINGS, "NOTIFY_MAX_EMAILS_PER_RUN": str(cap)})
    runtime = build_memory_runtime(settings)
    for name in TENANTS:
        await runtime.tenants.create(name)
        await runtime.tenants.set_notifications(name, [f"ops@{name}.example"], True)
    return runtime


async def fail(runtime: Runtime, at: datetime, label: str) -> None:
    """A failed request in every tenant, logged at ``at``."""
    for name in TENANTS:
        entry = LogEntry(format_time(at), "POST /Users", 409, f"{label}-{name}", 3.0, scim_type="uniqueness")
        await runtime.log.record_many(name, [entry], None, "test")


def notifier(runtime: Runtime, sender: EmailSender) -> Notifier:
    return Notifier(runtime.settings, runtime.tenants, runtime.log, runtime.states, sender, lag=timedelta(0))


def recipients(sender: RecordingSender) -> list[str]:
    return [email.to[0].split("@")[1].split(".")[0] for email in sender.sent]


async def test_a_run_sends_at_most_the_cap_and_every_tenant_gets_its_turn() -> None:
    runtime = await runtime_with_failing_tenants(cap=1)
    sender = RecordingSender()
    start = datetime.now(UTC) + timedelta(minutes=1)  # digests cover what came after the tenant was made
    await fail(runtime, start - timedelta(seconds=30), "first")
    outcomes = []
    for run in range(3):
        results = await notifier(runtime, sender).run_all(start + run * RUN)
        outcomes.append(sorted(r.outcome for r in results))
        assert len(sender.sent) == run + 1, f"run {run} sent {len(sender.sent) - run} digests, not 1"
    assert outcomes[0] == ["deferred", "deferred", "sent"]
    assert sorted(recipients(sender)) == sorted(TENANTS)  # each tenant once, none starved
    for email in sender.sent:  # each digest reports its tenant's failure, deferred or not
        assert "409" in email.text
    # Nothing more to say: the next run sends nothing, defers nothing.
    results = await notifier(runtime, sender).run_all(start + 3 * RUN)
    assert {r.outcome for r in results} == {"nothing"} and len(sender.sent) == 3
    await runtime.close()


async def test_no_cap_sends_every_digest_in_one_run() -> None:
    runtime = await runtime_with_failing_tenants(cap=0)
    sender = RecordingSender()
    now = datetime.now(UTC) + timedelta(minutes=1)
    await fail(runtime, now - timedelta(seconds=30), "first")
    results = await notifier(runtime, sender).run_all(now)
    assert [r.outcome for r in results] == ["sent"] * 3 and len(sender.sent) == 3
    await runtime.close()


@dataclass
class ThrottlingSender(EmailSender):
    """Accepts ``allowed`` emails, then answers as ACS does over its limit (429)."""

    allowed: int
    sent: list[str] = field(default_factory=list)
    attempts: int = 0

    async def send(self, *, sender: str, to: object, subject: str, text: str, html: str) -> None:
        self.attempts += 1
        if len(self.sent) >= self.allowed:
            raise SendError("ACS email send failed: HttpResponseError: (429) Too many requests", throttled=True)
        self.sent.append(subject)


async def test_a_throttled_send_stops_the_run_and_the_rest_wait_for_the_next() -> None:
    runtime = await runtime_with_failing_tenants(cap=0)
    sender = ThrottlingSender(allowed=1)
    now = datetime.now(UTC) + timedelta(minutes=1)
    await fail(runtime, now - timedelta(seconds=30), "first")
    results = await notifier(runtime, sender).run_all(now)
    assert sorted(r.outcome for r in results) == ["deferred", "failed", "sent"]
    assert sender.attempts == 2  # not a third attempt into the same limit
    sender.allowed = 10  # the limit's window passed
    results = await notifier(runtime, sender).run_all(now + RUN)
    assert sorted(r.outcome for r in results) == ["nothing", "sent", "sent"]
    assert len(sender.sent) == 3
    await runtime.close()


def test_the_cap_is_a_setting_checked_at_start_up() -> None:
    assert Settings.from_env(MEMORY_SETTINGS).notify_max_emails_per_run == 0
    try:
        Settings.from_env({**MEMORY_SETTINGS, "NOTIFY_MAX_EMAILS_PER_RUN": "-1"})
    except ValueError as exc:
        assert "NOTIFY_MAX_EMAILS_PER_RUN" in str(exc)
    else:
        raise AssertionError("a negative cap was accepted")
