"""The provisioning log and digest state contracts (``tests/log_contract.py``) on the memory
doubles, :class:`~scim.provisioning_log.memory.MemoryProvisioningLog` and
:class:`~scim.notify.state_memory.MemoryNotifyStateStore`; and the memory runtime
(``tests/helpers.py`` :func:`memory_runtime`) logging requests and sending a digest with them.
No Azurite, no Node.js."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from scim.functions.runtime import use_runtime
from scim.notify.mail import EmailSender
from scim.notify.notifier import Notifier
from scim.notify.state_memory import MemoryNotifyStateStore
from scim.provisioning_log import LogEntry, MemoryProvisioningLog, format_time
from tests.functions_client import FunctionsClient
from tests.helpers import memory_runtime, new_user
from tests.log_contract import NotifyStateContract, ProvisioningLogContract


@pytest.fixture
def tenant() -> str:
    return "t" + secrets.token_hex(6)


class TestMemoryProvisioningLog(ProvisioningLogContract):
    @pytest.fixture
    def log(self) -> MemoryProvisioningLog:
        return MemoryProvisioningLog()


class TestMemoryNotifyStateStore(NotifyStateContract):
    @pytest.fixture
    def states(self) -> MemoryNotifyStateStore:
        return MemoryNotifyStateStore()


class Outbox(EmailSender):
    """A sender that keeps the subjects it is given."""

    def __init__(self) -> None:
        self.subjects: list[tuple[tuple[str, ...], str]] = []

    async def send(self, *, sender: str, to: Sequence[str], subject: str, text: str, html: str) -> None:
        self.subjects.append((tuple(to), subject))


async def test_the_memory_runtime_logs_requests_and_sends_their_digest() -> None:
    runtime = memory_runtime()
    use_runtime(runtime)
    try:
        name = "t" + uuid.uuid4().hex[:12]
        client = FunctionsClient(name, await runtime.tenants.create(name))
        await runtime.tenants.set_notifications(name, ["ops@contoso.example"], True)
        created = await client.post("/Users", new_user())
        missing = await client.get(f"/Users/{uuid.uuid4()}")
        await client.get("/Users", token="a-wrong-token")
        await runtime.log_writer.drain()
        page = await runtime.log.page(name)  # newest first; the two may share a millisecond
        assert {e.correlation_id for e in page.entries} == {
            missing.headers["x-correlation-id"],
            created.headers["x-correlation-id"],
        }
        assert len(page.entries) == 2, "the refused request is counted, not logged"
        assert [e.status for e in (await runtime.log.page(name, failures_only=True)).entries] == [404]

        outbox = Outbox()
        notifier = Notifier(runtime.settings, runtime.tenants, runtime.log, runtime.states, outbox, lag=timedelta(0))
        now = datetime.now(UTC) + 2 * timedelta(milliseconds=1)  # every request's millisecond is over
        [sent] = await notifier.run_all(now)
        assert sent.outcome == "sent" and sent.failures == 1
        assert outbox.subjects == [(("ops@contoso.example",), f"SCIM provisioning: 1 failure for tenant {name}")]
        [again] = await notifier.run_all(now + timedelta(seconds=1))
        assert again.outcome == "nothing" and len(outbox.subjects) == 1, "the watermark moved past the failure"
        assert await runtime.states.exists(name)
    finally:
        use_runtime(None)
        await runtime.close()


async def test_a_failure_in_the_last_millisecond_of_a_digest_window_is_sent_once() -> None:
    """Entry times and the stored watermark are milliseconds, a run's clock is not: a window
    ending within a failure's millisecond leaves that failure to the next window, which reads
    it once (a window ending at the clock would read it, and the next window again)."""
    runtime = memory_runtime()
    try:
        name = "t" + uuid.uuid4().hex[:12]
        await runtime.tenants.create(name)
        await runtime.tenants.set_notifications(name, ["ops@contoso.example"], True)
        at = (datetime.now(UTC) + timedelta(seconds=1)).replace(microsecond=500_000)
        await runtime.log.record(name, LogEntry(format_time(at), "GET /Users/{id}", 404, "c1", 1.0))
        outbox = Outbox()
        notifier = Notifier(runtime.settings, runtime.tenants, runtime.log, runtime.states, outbox, lag=timedelta(0))
        runs = [at + timedelta(microseconds=400), at + timedelta(seconds=1), at + timedelta(seconds=2)]
        outcomes = [(await notifier.run_all(now))[0].outcome for now in runs]
        assert outcomes == ["nothing", "sent", "nothing"] and len(outbox.subjects) == 1
    finally:
        await runtime.close()
