"""Change events under storage faults, on Azurite (issue 12: "the change and its event commit
together or not at all", "no skip": an event commits within the feed's horizon of its stamp).

1. **The connection cut at each step** of a create, patch and delete of users and groups, by the
   TCP proxy in front of Azurite (``tests/tcp_proxy.py``): the transaction's request lost (mode
   ``cut``: storage never sees it) or its answer lost (``drop``: storage committed it), once or
   every time; member PATCHes (one member added, one removed) included. Afterwards the change and its event are both there or both absent, never two
   events for one change, and a request the service answered with success has its one event.
2. **The send deadline**: a transaction held back before it is sent, longer than
   :data:`~scim.store.event_timing.MAX_SEND_DELAY` after its stamp (held before the pipeline,
   by azure-core's retry of a 503, or by a lost request resent after a read timeout), is not
   sent with its old stamp: it is built again with a fresh one, and the event that commits was
   sent within MAX_SEND_DELAY of its stamp. The pipeline policy itself, and the server timeout
   it adds to the URL, are checked without storage.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from azure.core.pipeline import PipelineContext, PipelineRequest
from azure.core.rest import HttpRequest

from devtools.local_defaults import azurite_connection_string
from scim.core import events
from scim.core.schema import GROUP, USER
from scim.functions.runtime import Runtime, build_runtime, use_runtime
from scim.store import directory_commits, event_timing, keys
from scim.store.base import IndexTerms
from scim.store.event_policy import TICKET_OPTION, EventSendPolicy
from scim.store.event_timing import SendTicket, StaleStamp
from scim.store.tables import TableStore
from tests.event_checks import event_violations, membership_violations, raw_events, subject
from tests.functions_client import FunctionsClient, Response
from tests.helpers import GROUP_URN, PATCH_URN, USER_URN, raw_directory, violations
from tests.payloads import payload
from tests.scim_fixtures import azurite_settings
from tests.tcp_proxy import TcpProxy


def directory_batch(prefix: str) -> Callable[[bytes], bool]:
    """Matches a transaction ($batch) on the directory table (not the log's, not a read)."""
    marker = f"/{prefix}directory".encode()

    def match(request: bytes) -> bool:
        return request.startswith(b"POST ") and b"$batch" in request.split(b"\r\n", 1)[0] and marker in request

    return match


@pytest.fixture
async def proxied(azurite: str, table_prefix: str) -> AsyncIterator[tuple[TcpProxy, FunctionsClient, Runtime]]:
    """The app's runtime with its storage behind a :class:`TcpProxy`, and a client of a fresh tenant."""
    port = int(azurite.split("TableEndpoint=http://127.0.0.1:")[1].split("/")[0])
    proxy = TcpProxy(port).start()
    runtime = build_runtime(azurite_settings(azurite_connection_string("127.0.0.1", proxy.port), table_prefix))
    use_runtime(runtime)
    try:
        name = "e" + uuid.uuid4().hex[:12]
        yield proxy, FunctionsClient(name, await runtime.tenants.create(name)), runtime
    finally:
        proxy.set_mode("pass")
        use_runtime(None)
        await runtime.close()
        proxy.stop()


def _patch(path: str, value: Any) -> dict[str, Any]:
    return {"schemas": [PATCH_URN], "Operations": [{"op": "Replace", "path": path, "value": value}]}


def _user() -> dict[str, Any]:
    return {"schemas": [USER_URN], "userName": f"u-{uuid.uuid4().hex[:10]}@contoso.com", "active": True}


def _group() -> dict[str, Any]:
    return {"schemas": [GROUP_URN], "displayName": f"g-{uuid.uuid4().hex[:10]}"}


Step = tuple[str, str, Callable[[FunctionsClient, dict[str, Any]], Awaitable[Response]], int, str]
"""(name, what to prepare: user/group/none, the request on the prepared resource, its status, its event)."""

STEPS: list[Step] = [
    ("POST /Users", "none", lambda c, r: c.post("/Users", r["body"]), 201, "user.created"),
    ("PATCH userName", "user", lambda c, r: c.patch(f"/Users/{r['id']}", _patch("userName", r["new"])), 200, "user.updated"),
    ("PATCH active", "user", lambda c, r: c.patch(f"/Users/{r['id']}", _patch("active", "False")), 200, "user.deactivated"),
    ("PUT /Users", "user", lambda c, r: c.put(f"/Users/{r['id']}", {**r["body"], "title": "t"}), 200, "user.updated"),
    ("DELETE /Users", "user", lambda c, r: c.delete(f"/Users/{r['id']}"), 204, "user.deleted"),
    ("POST /Groups", "none", lambda c, r: c.post("/Groups", r["group"]), 201, "group.created"),
    ("PATCH displayName", "group", lambda c, r: c.patch(f"/Groups/{r['id']}", _patch("displayName", r["new"])), 204, "group.updated"),
    ("DELETE /Groups", "group", lambda c, r: c.delete(f"/Groups/{r['id']}"), 204, "group.deleted"),
    ("PATCH add member", "membership", lambda c, r: c.patch(f"/Groups/{r['id']}", _member("add", r["user"])), 204, "group.member_added"),
    ("PATCH remove member", "member", lambda c, r: c.patch(f"/Groups/{r['id']}", _member("remove", r["user"])), 204, "group.member_removed"),
]  # fmt: skip


def _member(op: str, user_id: str) -> dict[str, Any]:
    return payload(f"entra-patch-{op}-member-default.json", USER_ID=user_id)


async def _prepare(client: FunctionsClient, kind: str) -> dict[str, Any]:
    state: dict[str, Any] = {"body": _user(), "group": _group(), "new": f"n-{uuid.uuid4().hex[:10]}@contoso.com"}
    if kind in ("membership", "member"):  # a group and a user (a member of it already, or not)
        user = await client.post("/Users", state["body"])
        assert user.status == 201, user.body
        state["user"] = user.json["id"]
        kind, add = "group", kind == "member"
    else:
        add = False
    if kind != "none":
        created = await client.post(
            "/Users" if kind == "user" else "/Groups", state["body" if kind == "user" else "group"]
        )
        assert created.status == 201, created.body
        state["id"] = created.json["id"]
    if add:
        assert (await client.patch(f"/Groups/{state['id']}", _member("add", state["user"]))).status == 204
    return state


def _resource_id(state: dict[str, Any], response: Response, events: list[Any], kind: str) -> str | None:
    """The id of the resource the step changed (a create's: from its answer, or its events)."""
    if "id" in state:
        return str(state["id"])
    if response.status == 201:
        return str(response.json["id"])
    field = "userName" if kind.startswith("user") else "displayName"
    wanted = state["body"]["userName"] if field == "userName" else state["group"]["displayName"]
    named = [subject(e.event) for e in events if e.event["data"]["object"].get(field) == wanted]
    return named[0] if named else None


@pytest.mark.parametrize("mode", ["cut", "drop"])
@pytest.mark.parametrize("times", [1, None], ids=["once", "always"])
async def test_a_lost_request_or_answer_never_splits_a_change_from_its_event(
    proxied: tuple[TcpProxy, FunctionsClient, Runtime], azurite: str, table_prefix: str, mode: str, times: int | None
) -> None:
    """``cut``: the transaction's request never reaches storage; ``drop``: storage commits it and
    the answer is lost. Once: the store sends it again and the request succeeds with its one
    event. Always: 503, and the change and its event are both there (drop) or both absent (cut)."""
    proxy, client, _ = proxied
    problems: list[str] = []
    for name, kind, request, status, event in STEPS:
        state = await _prepare(client, kind)
        before = {e.event["id"] for e in await raw_events(azurite, table_prefix, client.tenant)}
        proxy.set_mode(mode, drops=times, drop_match=directory_batch(table_prefix))
        response = await asyncio.wait_for(request(client, state), 30)
        hits = proxy.dropped
        proxy.set_mode("pass")
        directory = await raw_directory(azurite, table_prefix, client.tenant)
        events = await raw_events(azurite, table_prefix, client.tenant)
        problems += [
            f"{name}: {p}"
            for p in violations(directory)
            + event_violations(directory, events, client.tenant)
            + membership_violations(directory, events)
        ]
        new = [e for e in events if e.event["id"] not in before]
        resource = _resource_id(state, response, new, event)
        mine = [e.event["type"] for e in new if subject(e.event) == resource]
        if hits < 1:
            problems.append(f"{name}: the fault was not reached")
        if response.status == status:
            if mine != [event]:
                problems.append(f"{name}: answered {status}, events {mine}")
        elif response.status == 503 and times is None:
            if mine != ([event] if mode == "drop" else []):
                problems.append(f"{name}: 503 after {mode} of every answer, events {mine}")
        else:
            problems.append(f"{name}: answered {response.status} {response.body[:200]!r}")
        if len(new) != len(mine):
            problems.append(f"{name}: events of other resources {[e.event['type'] for e in new]}")
    assert problems == [], "\n".join(problems)


# ---- the send deadline -------------------------------------------------------------------------


def _request(url: str = "http://127.0.0.1:10002/devstoreaccount1/$batch", **options: Any) -> PipelineRequest[Any]:
    return PipelineRequest(HttpRequest("POST", url), PipelineContext(None, **options))


def test_the_send_policy_adds_the_server_timeout_and_refuses_a_late_attempt() -> None:
    now = [1_000_000_000]
    ticket = SendTicket(now[0], wall=lambda: now[0])
    request = _request(**{TICKET_OPTION: ticket, "read_timeout": 6})
    policy = EventSendPolicy()
    policy.on_request(request)  # the first attempt: admitted, the option taken off
    assert TICKET_OPTION not in request.context.options and request.context.options == {"read_timeout": 6}
    assert request.http_request.url.endswith(f"/$batch?timeout={event_timing.SERVER_TIMEOUT}")
    now[0] += int(event_timing.MAX_SEND_DELAY * 1_000_000)
    policy.on_request(request)  # azure-core's retry, just in time: admitted, the URL unchanged
    assert request.http_request.url.count("timeout=") == 1 and ticket.attempts == 2
    now[0] += 1
    with pytest.raises(StaleStamp) as refused:
        policy.on_request(request)
    assert refused.value.sent and ticket.attempts == 2
    late = SendTicket(0, wall=lambda: 10_000_000)
    with pytest.raises(StaleStamp) as first:
        policy.on_request(_request(**{TICKET_OPTION: late}))
    assert not first.value.sent
    plain = _request("http://h/t()?$top=5")
    policy.on_request(plain)  # no ticket: not a transaction of the directory; left alone
    assert plain.http_request.url == "http://h/t()?$top=5"
    unstamped = _request("http://h/$batch", **{TICKET_OPTION: SendTicket(None)})
    policy.on_request(unstamped)  # a transaction without an event: the timeout only
    assert unstamped.http_request.url == f"http://h/$batch?timeout={event_timing.SERVER_TIMEOUT}"


@pytest.fixture
def admitted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int | None, int, bool]]:
    """Every attempt the policy judged: (stamp, wall time, admitted), with MAX_SEND_DELAY 0.25 s."""
    monkeypatch.setattr(event_timing, "MAX_SEND_DELAY", 0.25)
    seen: list[tuple[int | None, int, bool]] = []
    admit = SendTicket.admit

    def judged(ticket: SendTicket) -> None:
        try:
            admit(ticket)
        except StaleStamp:
            seen.append((ticket.stamp, ticket.wall(), False))
            raise
        seen.append((ticket.stamp, ticket.wall(), True))

    monkeypatch.setattr(SendTicket, "admit", judged)
    return seen


def _check_sent_in_time(events: list[Any], seen: list[tuple[int | None, int, bool]]) -> None:
    """One event, stamped with the stamp of the attempt that was admitted, within MAX_SEND_DELAY of it."""
    assert len(events) == 1, events
    stamp = int(events[0].position.split("|")[0])
    sent = [wall for s, wall, ok in seen if ok and s == stamp]
    assert sent and all(0 <= wall - stamp <= event_timing.MAX_SEND_DELAY * 1_000_000 for wall in sent), (stamp, seen)
    assert any(not ok for _, _, ok in seen), ("no attempt was refused", seen)
    assert all(s != stamp for s, _, ok in seen if not ok), "the refused stamp committed"


async def test_a_transaction_held_before_sending_is_rebuilt_with_a_fresh_stamp(
    azurite: str, table_prefix: str, admitted: list[tuple[int | None, int, bool]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held 0.4 s before the pipeline (a busy event loop, a slow operation before it): refused,
    rebuilt with a fresh stamp, sent, committed once."""
    real = directory_commits.submit_transaction
    held = [0]

    async def slow_first(*args: Any, **kwargs: Any) -> Any:
        if held[0] == 0:
            held[0] += 1
            await asyncio.sleep(0.4)
        return await real(*args, **kwargs)

    monkeypatch.setattr(directory_commits, "submit_transaction", slow_first)
    store = TableStore.from_settings(azurite_settings(azurite, table_prefix))
    tenant = "h" + uuid.uuid4().hex[:12]
    try:
        doc = {"userName": "held@example.com"}
        created = await store.create(
            tenant, "User", doc, _terms("held@example.com"), event=events.created(USER, "http://x")
        )
        found = await raw_events(azurite, table_prefix, tenant)
        _check_sent_in_time(found, admitted)
        assert found[0].event["time"] == created.last_modified == created.created
        assert (await store.get(tenant, "User", created.id)).doc == doc
    finally:
        await store.close()


def _terms(user_name: str) -> IndexTerms:
    return IndexTerms(unique={"userName": user_name})


async def test_azure_core_s_late_retry_of_a_503_is_refused_and_the_write_rebuilt(
    azurite: str, table_prefix: str, admitted: list[tuple[int | None, int, bool]]
) -> None:
    """Storage answers the transaction 503 (busy); azure-core retries it, but only after 0.3 s
    (a policy sleeping on the retry stands for a long back-off): that attempt is refused, the
    transaction rebuilt with a fresh stamp and sent; one event, stamped with the fresh stamp."""
    port = int(azurite.split("TableEndpoint=http://127.0.0.1:")[1].split("/")[0])

    class SlowRetry:
        """Sleeps before every retry of a transaction (the pipeline context lives across retries)."""

        def on_request(self, request: PipelineRequest[Any]) -> None:
            if "$batch" in request.http_request.url:
                if request.context.get("slow-retry-seen"):
                    time.sleep(0.3)
                request.context["slow-retry-seen"] = True

    with TcpProxy(port) as proxy:
        settings = azurite_settings(azurite_connection_string("127.0.0.1", proxy.port), table_prefix)
        store = TableStore.from_settings(settings, per_call_policies=[SlowRetry()])  # type: ignore[list-item]
        tenant = "r" + uuid.uuid4().hex[:12]
        try:
            await store.lookup(tenant, "Group", "displayName", "warm")  # the table exists, connections open
            proxy.set_mode("busy", count=1)
            await asyncio.sleep(0.2)
            group = await store.create(
                tenant,
                "Group",
                {"displayName": "busy"},
                IndexTerms(unique={"displayName": "busy"}),
                event=events.created(GROUP, "http://x"),
            )
            assert proxy.faulted == 1
        finally:
            proxy.set_mode("pass")
            await store.close()
    found = await raw_events(azurite, table_prefix, tenant)
    _check_sent_in_time(found, admitted)
    assert found[0].event["data"]["object"]["id"] == group.id


async def test_a_lost_request_resent_too_late_is_rebuilt_and_commits_once(
    azurite: str, table_prefix: str, admitted: list[tuple[int | None, int, bool]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transaction's connection hangs (storage never answers): after the read timeout the
    store sends it again, now too late for its stamp: refused, rebuilt, committed once."""
    monkeypatch.setattr(directory_commits, "_TIMEOUT", {"read_timeout": 1})
    port = int(azurite.split("TableEndpoint=http://127.0.0.1:")[1].split("/")[0])
    with TcpProxy(port) as proxy:
        settings = azurite_settings(azurite_connection_string("127.0.0.1", proxy.port), table_prefix)
        store = TableStore.from_settings(settings)
        tenant = "l" + uuid.uuid4().hex[:12]
        try:
            await store.lookup(tenant, "User", "userName", "warm")
            proxy.set_mode("hang", count=1)
            await asyncio.sleep(0.2)  # the client sees its pooled connections closed: the write opens a new one
            user = await store.create(
                tenant, "User", {"userName": "hung"}, _terms("hung"), event=events.created(USER, "http://x")
            )
        finally:
            proxy.set_mode("pass")
            await store.close()
    found = await raw_events(azurite, table_prefix, tenant)
    _check_sent_in_time(found, admitted)
    assert found[0].event["data"]["object"]["id"] == user.id
    assert keys.event_stamp("e|" + found[0].position) == int(found[0].position[:16])
