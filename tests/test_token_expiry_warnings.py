"""Secret Token expiry warnings in the failure digest (issue 13): the rule of which warnings are
due (scim.notify.token_expiry, pure), the section of the digest, and the notifier's runs end to
end through a real SMTP server (aiosmtpd) on the memory runtime and on Azurite."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import Message

import pytest

from scim.credentials import SecretToken
from scim.functions.runtime import Runtime
from scim.notify.digest import Failure, build_digest
from scim.notify.mail import EmailSender, SmtpSender
from scim.notify.notifier import Notifier, RunResult
from scim.notify.token_expiry import TokenWarning, due_warnings, format_left, subject_phrase
from scim.provisioning_log import LogEntry, format_time
from scim.store.base import StoreUnavailable
from tests.helpers import Mailbox, smtp_server

DAY = 86400
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
T = int(NOW.timestamp())


def token(
    id: str = "0a1b2c3d",
    *,
    created: int = T - DAY,
    expires: int | None = None,
    retires: int | None = None,
    warned: int | None = None,
    last_used: int | None = None,
) -> SecretToken:
    return SecretToken(id, "h" * 64, created, expires, retires, last_used, warned)


# ---- the rule ------------------------------------------------------------------------------------


def due(*tokens: SecretToken, now: datetime = NOW) -> list[tuple[str, int]]:
    return [(w.token_id, w.days) for w in due_warnings(tokens, now)]


def test_a_token_without_expiry_or_expiring_later_than_14_days_is_not_warned_about() -> None:
    assert due(token()) == []
    assert due(token(expires=T + 14 * DAY + 1)) == []
    assert due(token(expires=T + 90 * DAY)) == []


def test_the_14_day_warning_then_the_3_day_warning_each_once() -> None:
    assert due(token(expires=T + 14 * DAY)) == [("0a1b2c3d", 14)], "14 days left is within 14 days"
    assert due(token(expires=T + 10 * DAY)) == [("0a1b2c3d", 14)]
    assert due(token(expires=T + 10 * DAY, warned=14)) == []
    assert due(token(expires=T + 3 * DAY + 1, warned=14)) == []
    assert due(token(expires=T + 3 * DAY, warned=14)) == [("0a1b2c3d", 3)]
    assert due(token(expires=T + 60, warned=3)) == []


def test_a_token_issued_expiring_in_2_days_gets_the_3_day_warning_only() -> None:
    assert due(token(expires=T + 2 * DAY)) == [("0a1b2c3d", 3)]
    assert due(token(expires=T + 2 * DAY, warned=3)) == []


def test_an_expired_token_is_not_warned_about() -> None:
    assert due(token(expires=T)) == []
    assert due(token(expires=T - DAY)) == []


def test_a_token_in_a_rotation_overlap_is_not_warned_about() -> None:
    old = token("0ld00000", expires=T + 5 * DAY, retires=T + DAY)
    assert due(old, token("new00000", created=T)) == [], "its replacement never expires"
    assert due(old, token("new00000", created=T, expires=T + 90 * DAY)) == []
    assert due(old, token("new00000", created=T, expires=T + 10 * DAY)) == [("new00000", 14)]


def test_when_every_token_is_in_an_overlap_the_newest_is_watched_until_it_stops_working() -> None:
    """The replacement was revoked: the newest remaining token is what Entra most likely holds,
    and it stops working when its overlap ends (no expiry needed)."""
    older = token("01d00000", created=T - 9 * DAY, retires=T + 20 * 3600)
    newest = token("n3w00000", created=T - 2 * DAY, retires=T + 20 * 3600)
    [warning] = due_warnings([older, newest], NOW)
    assert (warning.token_id, warning.days, warning.retiring) == ("n3w00000", 3, True)
    assert warning.ends == T + 20 * 3600 and warning.left == 20 * 3600
    far = token("n3w00000", created=T - 2 * DAY, expires=T + 90 * DAY, retires=T + 30 * DAY)
    assert due(older, far) == [], "the newest ends in 30 days"


def test_warnings_are_sorted_soonest_first_and_carry_what_the_email_shows() -> None:
    late = token("1a7e0000", expires=T + 12 * DAY, last_used=T - 3600)
    soon = token("50000000", expires=T + DAY)
    warnings = due_warnings([late, soon], NOW)
    assert warnings == (
        TokenWarning("50000000", 3, T + DAY, DAY, None),
        TokenWarning("1a7e0000", 14, T + 12 * DAY, 12 * DAY, T - 3600),
    )


def test_time_left_and_the_subject() -> None:
    left = (10 * DAY - 1, 13 * DAY + 3600, 2 * DAY - 1, 47 * 3600, 36 * 3600, 2 * 3600 - 1, 90 * 60, 20, 0)
    assert [format_left(s) for s in left] == [
        "10 days",
        "13 days",
        "2 days",
        "47 hours",
        "36 hours",
        "2 hours",
        "90 minutes",
        "1 minute",
        "1 minute",
    ]
    one = TokenWarning("0a1b2c3d", 14, T + 13 * DAY, 13 * DAY)
    assert subject_phrase([one]) == "Secret Token expires in 13 days"
    two = [one, TokenWarning("11111111", 3, T + 2 * DAY, 2 * DAY)]
    assert subject_phrase(two) == "2 Secret Tokens expire, the first in 2 days"


# ---- the section of the digest --------------------------------------------------------------------


def _digest(warnings: list[TokenWarning], failures: tuple[Failure, ...] = ()):  # type: ignore[no-untyped-def]
    return build_digest(
        "acme",
        failures,
        len(failures),
        window_start="2026-12-01T11:50:00.000Z",
        window_end="2026-12-01T12:00:00.000Z",
        tenant_url="https://scim.example/scim/acme",
        token_warnings=warnings,
    )


def test_a_digest_of_only_an_expiry_warning_says_which_token_when_and_how_to_rotate() -> None:
    warning = TokenWarning("0a1b2c3d", 14, T + 13 * DAY, 13 * DAY, T - 7200)
    digest = _digest([warning])
    assert digest.subject == "SCIM tenant acme: Secret Token expires in 13 days"
    assert digest.failures == 0 and digest.token_warnings == 1 and not digest.alert
    text = digest.text
    assert "Secret Token expiring" in text
    assert "Token 0a1b2c3d expires 2026-12-14T12:00:00Z (in 13 days); last used 2026-12-01T10:00:00Z" in text
    assert "python -m scim.admin token rotate acme --overlap 24h" in text
    assert "Test Connection" in text and "python -m scim.admin token regenerate acme" in text
    assert "Window:" not in text and "What to do" not in text and "Failures:" not in text, text
    assert "<h3>Secret Token expiring</h3>" in digest.html and "0a1b2c3d" in digest.html
    assert "<code>python -m scim.admin token rotate acme --overlap 24h</code>" in digest.html


def test_an_expiry_warning_rides_along_with_failures_and_is_escaped() -> None:
    failure = Failure("2026-12-01T11:55:00.000Z", "POST /Users", 409, "c0ffee01", scim_type="uniqueness")
    warning = TokenWarning("<b>id</b>", 3, T + 2 * DAY, 2 * DAY)
    digest = _digest([warning], (failure,))
    assert digest.subject == "SCIM provisioning: 1 failure for tenant acme; Secret Token expires in 2 days"
    assert "Failures:" in digest.text and "What to do" in digest.text and "Secret Token expiring" in digest.text
    assert "<b>id</b>" not in digest.html and "&lt;b&gt;id&lt;/b&gt;" in digest.html
    assert "last used never" in digest.text


# ---- end to end: the notifier, a real SMTP server, memory and Azurite -----------------------------


@pytest.fixture(scope="module")
def smtp() -> Iterator[tuple[Mailbox, int]]:
    with smtp_server() as server:
        yield server


@pytest.fixture
def mailbox(smtp: tuple[Mailbox, int]) -> Mailbox:
    box, _ = smtp
    box.messages.clear()
    box.refuse = 0
    return box


def notifier(runtime: Runtime, sender: EmailSender) -> Notifier:
    return Notifier(runtime.settings, runtime.tenants, runtime.log, runtime.states, sender, lag=timedelta(0))


def smtp_sender(smtp: tuple[Mailbox, int]) -> SmtpSender:
    return SmtpSender("127.0.0.1", smtp[1], timeout=10)


def subject_of(message: Message) -> str:
    """The subject unfolded (a long header is folded onto several lines)."""
    return str(message["Subject"]).replace("\r", "").replace("\n", "")


def text_of(message: Message) -> str:
    part = next(p for p in message.walk() if p.get_content_type() == "text/plain")
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()


async def expiring_tenant(runtime: Runtime, days: float = 10, *, enabled: bool = True) -> tuple[str, str]:
    """A tenant whose only token expires in ``days`` days, with digests to a fresh address."""
    name = "x" + uuid.uuid4().hex[:12]
    address = f"ops-{name}@a.example"
    await runtime.tenants.create(name, expires=int(days * DAY))
    await runtime.tenants.set_notifications(name, [address], enabled)
    return name, address


async def run(runtime: Runtime, sender: EmailSender, name: str, at: datetime) -> RunResult:
    return await notifier(runtime, sender).run_tenant(await runtime.tenants.info(name), at)


async def only_token(runtime: Runtime, name: str) -> SecretToken:
    [active] = await runtime.tenants.list_tokens(name)
    return active


async def test_a_token_expiring_in_10_days_is_warned_at_14_then_at_3_days_once_each(runtime, smtp, mailbox):
    name, address = await expiring_tenant(runtime, 10)
    issued = await only_token(runtime, name)
    sender = smtp_sender(smtp)
    now = datetime.now(UTC)

    first = await run(runtime, sender, name, now)
    [email] = mailbox.to(address)
    assert first.outcome == "sent" and first.token_warnings == 1 and first.failures == 0
    assert issued.id in first.reason and "14-day warning" in first.reason, first.reason
    assert subject_of(email) == f"SCIM tenant {name}: Secret Token expires in 10 days"
    text = text_of(email)
    assert f"Token {issued.id} expires" in text and "(in 10 days); last used never" in text, text
    assert f"python -m scim.admin token rotate {name} --overlap 24h" in text
    assert f"python -m scim.admin token regenerate {name}" in text
    assert (await only_token(runtime, name)).warned == 14

    again = await run(runtime, sender, name, now + timedelta(minutes=10))
    assert again.outcome == "nothing" and len(mailbox.to(address)) == 1

    later = await run(runtime, sender, name, now + timedelta(days=8))
    assert later.outcome == "sent" and "3-day warning" in later.reason, later
    assert [subject_of(m) for m in mailbox.to(address)][1] == f"SCIM tenant {name}: Secret Token expires in 2 days"
    assert (await only_token(runtime, name)).warned == 3

    for at in (now + timedelta(days=8, minutes=10), now + timedelta(days=9, hours=12)):
        assert (await run(runtime, sender, name, at)).outcome == "nothing"
    assert len(mailbox.to(address)) == 2


async def test_a_token_created_expiring_in_2_days_gets_the_3_day_warning_only(runtime, smtp, mailbox):
    name, address = await expiring_tenant(runtime, 2)
    sender = smtp_sender(smtp)
    now = datetime.now(UTC)
    result = await run(runtime, sender, name, now)
    assert result.outcome == "sent" and "3-day warning" in result.reason and "14-day" not in result.reason
    assert (await only_token(runtime, name)).warned == 3
    assert (await run(runtime, sender, name, now + timedelta(hours=1))).outcome == "nothing"
    assert len(mailbox.to(address)) == 1


async def test_a_token_in_a_rotation_overlap_gets_no_email_until_its_replacement_is_revoked(runtime, smtp, mailbox):
    name, address = await expiring_tenant(runtime, 10)
    old = await only_token(runtime, name)
    _, new = await runtime.tenants.rotate_token(name, overlap=DAY, expires=None)
    sender = smtp_sender(smtp)
    now = datetime.now(UTC)
    assert (await run(runtime, sender, name, now)).outcome == "nothing"
    assert mailbox.to(address) == []
    # The replacement revoked: the old token stops working when its overlap ends, and nothing
    # replaces it. Now it is the one that matters.
    await runtime.tenants.revoke_token(name, new.id)
    result = await run(runtime, sender, name, now + timedelta(minutes=1))
    [email] = mailbox.to(address)
    assert result.outcome == "sent" and old.id in result.reason and "stops working" in result.reason
    assert "Secret Token stops working in" in subject_of(email)
    assert "no newer token replaces it" in text_of(email)


async def test_digests_disabled_send_nothing_and_mark_nothing(runtime, smtp, mailbox):
    name, _ = await expiring_tenant(runtime, 10, enabled=False)
    result = await run(runtime, smtp_sender(smtp), name, datetime.now(UTC))
    assert result.outcome == "skipped" and result.token_warnings == 0
    assert mailbox.messages == [] and (await only_token(runtime, name)).warned is None


async def test_a_refused_send_marks_nothing_and_the_next_run_sends_the_warning(runtime, smtp, mailbox):
    name, address = await expiring_tenant(runtime, 10)
    sender = smtp_sender(smtp)
    now = datetime.now(UTC)
    mailbox.refuse = 1
    refused = await run(runtime, sender, name, now)
    assert refused.outcome == "failed" and "451" in refused.reason and refused.token_warnings == 1
    assert mailbox.to(address) == [] and (await only_token(runtime, name)).warned is None
    sent = await run(runtime, sender, name, now + timedelta(minutes=10))
    assert sent.outcome == "sent" and len(mailbox.to(address)) == 1
    assert (await only_token(runtime, name)).warned == 14


async def test_an_unreachable_smtp_server_marks_nothing_and_the_next_run_sends_the_warning(runtime, smtp, mailbox):
    name, address = await expiring_tenant(runtime, 10)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    now = datetime.now(UTC)
    failed = await run(runtime, SmtpSender("127.0.0.1", closed, timeout=5), name, now)
    assert failed.outcome == "failed" and "SMTP send via 127.0.0.1" in failed.reason
    assert (await only_token(runtime, name)).warned is None
    sent = await run(runtime, smtp_sender(smtp), name, now + timedelta(minutes=10))
    assert sent.outcome == "sent" and len(mailbox.to(address)) == 1
    assert (await only_token(runtime, name)).warned == 14


async def test_a_warning_due_is_sent_by_a_run_with_an_empty_window(runtime, smtp, mailbox):
    """A run right after another has no window of failures; a warning due is not tied to one."""
    name, address = await expiring_tenant(runtime, 90)
    sender = smtp_sender(smtp)
    now = datetime.now(UTC)
    assert (await run(runtime, sender, name, now)).outcome == "nothing"
    await runtime.tenants.set_token(name, expires=10 * DAY)
    result = await run(runtime, sender, name, now)  # the same moment: since == until
    assert result.outcome == "sent" and len(mailbox.to(address)) == 1


async def test_failures_and_the_warning_go_in_one_digest(runtime, smtp, mailbox):
    name, address = await expiring_tenant(runtime, 10)
    now = datetime.now(UTC)
    entry = LogEntry(format_time(now), "POST /Users", 409, "c0ffee01", 2.0)
    await runtime.log.record(name, entry)
    result = await run(runtime, smtp_sender(smtp), name, now + timedelta(seconds=1))
    [email] = mailbox.to(address)
    assert result.outcome == "sent" and result.failures == 1 and result.token_warnings == 1
    assert subject_of(email) == f"SCIM provisioning: 1 failure for tenant {name}; Secret Token expires in 10 days"
    assert "c0ffee01" in text_of(email) and "Secret Token expiring" in text_of(email)


async def test_overlapping_runs_and_the_next_one_send_the_warning_once(runtime, smtp, mailbox):
    """Runs of several notifiers (instances) at once: one holds the lease, and records the warning
    before it lets the lease go, so a run after it does not send the warning again."""
    name, address = await expiring_tenant(runtime, 10)
    now = datetime.now(UTC)
    info = await runtime.tenants.info(name)
    results = await asyncio.gather(*(notifier(runtime, smtp_sender(smtp)).run_tenant(info, now) for _ in range(3)))
    assert sorted(r.outcome for r in results) == ["sent", "skipped", "skipped"]
    after = await run(runtime, smtp_sender(smtp), name, now + timedelta(seconds=1))  # another owner
    assert after.outcome == "nothing" and len(mailbox.to(address)) == 1


async def test_a_warning_not_recorded_after_the_send_is_sent_again_and_the_run_says_so(
    runtime, smtp, mailbox, monkeypatch
):
    name, address = await expiring_tenant(runtime, 10)
    sender = smtp_sender(smtp)
    now = datetime.now(UTC)
    real = runtime.tenants.mark_warned

    async def down(*args: object) -> None:
        raise StoreUnavailable("storage is down")

    monkeypatch.setattr(runtime.tenants, "mark_warned", down)
    first = await run(runtime, sender, name, now)
    assert first.outcome == "sent" and "not recorded (StoreUnavailable)" in first.reason, first.reason
    monkeypatch.setattr(runtime.tenants, "mark_warned", real)
    assert (await run(runtime, sender, name, now + timedelta(minutes=10))).outcome == "sent"
    assert (await run(runtime, sender, name, now + timedelta(minutes=20))).outcome == "nothing"
    assert len(mailbox.to(address)) == 2
