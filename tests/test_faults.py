"""Storage faults (issue #6, "Faults"), on Azurite.

1. **Network faults**, played by a TCP proxy in front of Azurite (``tests/tcp_proxy.py``), and a
   real Azurite stopped and started again: every request, through the registered Functions
   entry point, answers 503 with ``Retry-After`` and a SCIM error body within :data:`BOUND`
   seconds (never a hang, never a 500), and once storage is back the same requests succeed
   with the same app (no restart). A storage answer that is really lost (the proxy drops it
   after Azurite did the work) is resent safely, or leaves a state Entra recovers from.
2. **Fault injection at each write step** of every multi-transaction path (group create with
   more members than one transaction holds, member add/remove of more than one transaction's
   worth, PUT of a group, user and group deletes whose cleanup spans transactions) and of the
   single-transaction ones: a :class:`FaultyStore` fails its Nth transaction, N = 1..k, before
   it is sent, after it committed (answer lost) or rejected by storage, with storage then
   staying down or coming back at once. After each fault the tenant, read raw from the table,
   satisfies every invariant of :func:`violations`; repeating the request as Entra would
   converges to the intended state, and the invariants still hold. The change events (issue
   12) are checked with them: after each fault a change and its event are both there or both
   absent (:func:`~tests.event_checks.event_violations`), and after the retry each resource has
   exactly the events of the changes that happened, never two for one change. To keep this fast on
   Azurite (about 3 ms per operation of a transaction), the store's transaction capacity is
   lowered from 100 operations (49 members) to :data:`SMALL_TRANSACTION` (4 members): the code
   paths are the same, with 3 transactions each instead of 2 or 3.

:func:`~tests.helpers.read_directory` and :func:`~tests.helpers.violations` are in ``tests/helpers.py``,
shared with ``tests/test_races.py``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devtools.azurite import AzuriteProcess, free_port
from devtools.local_defaults import azurite_connection_string
from scim.core.errors import ScimError
from scim.core.service import ScimRequest, ScimResponse, ScimService
from scim.functions.http_adapter import error_response
from scim.functions.runtime import Runtime, build_runtime, use_runtime
from scim.store import azure_client, directory_members, tables
from scim.store.azure_client import service_client
from scim.store.base import IndexTerms, StoredEvent, StoreUnavailable
from scim.store.operations import _OpFailed
from scim.store.tables import TableStore
from scim.tenants import TenantExists
from tests.event_checks import event_violations, raw_events
from tests.event_checks import subject as event_subject
from tests.functions_client import FunctionsClient, Response
from tests.helpers import GROUP_URN, PATCH_URN, USER_URN, Directory, raw_directory, violations
from tests.localhost_server import record_summary
from tests.scim_fixtures import azurite_settings
from tests.tcp_proxy import TcpProxy

BOUND = 15.0
"""Seconds within which a request must answer when storage refuses, resets or hangs."""

ERROR_URN = "urn:ietf:params:scim:api:messages:2.0:Error"


def assert_503(response: ScimResponse | Response) -> None:
    """503, Retry-After, a SCIM error body, no traceback."""
    status = response.status
    headers = {k.lower(): v for k, v in response.headers.items()}
    body = response.body if isinstance(response, ScimResponse) else response.json
    assert status == 503, (status, body)
    assert int(headers["retry-after"]) > 0
    assert body["schemas"] == [ERROR_URN] and body["status"] == "503" and body["detail"]
    assert "Traceback" not in json.dumps(body)


# ---- network faults through the proxy -----------------------------------------------------------


@pytest.fixture
async def proxied(azurite: str, table_prefix: str) -> AsyncIterator[tuple[TcpProxy, FunctionsClient, Runtime]]:
    """The app's runtime with its storage behind a :class:`TcpProxy`, and a client of a fresh tenant."""
    port = int(azurite.split("TableEndpoint=http://127.0.0.1:")[1].split("/")[0])
    proxy = TcpProxy(port).start()
    runtime = build_runtime(azurite_settings(azurite_connection_string("127.0.0.1", proxy.port), table_prefix))
    use_runtime(runtime)
    try:
        name = "f" + uuid.uuid4().hex[:12]
        client = FunctionsClient(name, await runtime.tenants.create(name))
        yield proxy, client, runtime
    finally:
        proxy.set_mode("pass")
        use_runtime(None)
        await runtime.close()
        proxy.stop()


def user_body(name: str | None = None) -> dict[str, Any]:
    return {"schemas": [USER_URN], "userName": name or f"u-{uuid.uuid4().hex[:10]}@contoso.com", "active": True}


def members_patch(op: str, ids: Iterable[str]) -> dict[str, Any]:
    return {"schemas": [PATCH_URN], "Operations": [{"op": op, "path": "members", "value": [{"value": i} for i in ids]}]}


def disable_patch() -> dict[str, Any]:
    return {"schemas": [PATCH_URN], "Operations": [{"op": "Replace", "path": "active", "value": "False"}]}


async def created(response: Awaitable[Response]) -> dict[str, Any]:
    answer = await response
    assert answer.status == 201, answer.body
    return answer.json  # type: ignore[no-any-return]


def entra_requests(
    client: FunctionsClient, user: dict[str, Any], group: dict[str, Any]
) -> list[tuple[str, Callable[[], Awaitable[Response]]]]:
    """One of each request Entra sends, on existing resources (repeatable)."""
    return [
        ("GET /Users/{id}", lambda: client.get(f"/Users/{user['id']}")),
        ("GET /Users?filter", lambda: client.get("/Users", params={"filter": f'userName eq "{user["userName"]}"'})),
        (
            "GET /Groups?filter",
            lambda: client.get(
                "/Groups",
                params={"filter": f'displayName eq "{group["displayName"]}"', "excludedAttributes": "members"},
            ),
        ),
        ("POST /Users", lambda: client.post("/Users", user_body())),
        ("PATCH /Users/{id}", lambda: client.patch(f"/Users/{user['id']}", disable_patch())),
        ("PATCH /Groups/{id} add", lambda: client.patch(f"/Groups/{group['id']}", members_patch("Add", [user["id"]]))),
        (
            "PATCH /Groups/{id} remove",
            lambda: client.patch(f"/Groups/{group['id']}", members_patch("Remove", [user["id"]])),
        ),
        ("DELETE /Users/{id} (absent)", lambda: client.delete(f"/Users/{uuid.uuid4()}")),
    ]


async def timed(call: Callable[[], Awaitable[Response]]) -> tuple[float, Response]:
    started = time.perf_counter()
    response = await call()
    return time.perf_counter() - started, response


async def all_503_within_bound(requests: list[tuple[str, Callable[[], Awaitable[Response]]]]) -> float:
    """Run the requests concurrently; each must answer 503 within BOUND. Returns the slowest time."""
    results = await asyncio.wait_for(asyncio.gather(*(timed(call) for _, call in requests)), BOUND + 10)
    for (name, _), (elapsed, response) in zip(requests, results, strict=True):
        assert response.status == 503, (name, response.status, response.body)
        assert_503(response)
        assert elapsed <= BOUND, (name, elapsed)
    return max(elapsed for elapsed, _ in results)


async def all_succeed(requests: list[tuple[str, Callable[[], Awaitable[Response]]]]) -> None:
    for name, call in requests:
        response = await asyncio.wait_for(call(), BOUND)
        assert response.status in (200, 201, 204, 404), (name, response.status, response.body)
        assert response.status != 404 or "absent" in name, (name, response.body)


MEASURED: dict[str, float] = {}


@pytest.mark.parametrize("mode", ["refuse", "reset", "hang"])
async def test_unreachable_storage_answers_503_in_bounded_time_then_recovers(proxied, mode):
    proxy, client, _ = proxied
    user = await created(client.post("/Users", user_body()))
    group = await created(client.post("/Groups", {"schemas": [GROUP_URN], "displayName": f"g-{uuid.uuid4().hex[:8]}"}))
    requests = entra_requests(client, user, group)
    proxy.set_mode(mode)
    MEASURED[f"proxy {mode}"] = slowest = await all_503_within_bound(requests)
    if mode == "hang":  # each read timed out twice (READ_TIMEOUT per attempt): retried, then given up
        assert slowest >= 2 * azure_client.READ_TIMEOUT - 0.5, slowest
    proxy.set_mode("pass")
    await all_succeed(requests)  # the same requests, the same app: no restart


async def test_transient_storage_errors_are_retried_with_back_off(proxied):
    """503 Server Busy (throttling) is retried with back-off, for reads and transactions; a
    storage that stays busy gets 503 to the client, fast. (Read timeouts are retried too: see
    the hang case of the test above, whose 503 comes after two attempts.)"""
    proxy, client, runtime = proxied
    user = await created(client.post("/Users", user_body()))
    group = await created(client.post("/Groups", {"schemas": [GROUP_URN], "displayName": f"g-{uuid.uuid4().hex[:8]}"}))
    await runtime.log_writer.drain()  # no background write may take the faults

    proxy.set_mode("busy", count=2)  # the next 2 storage requests answer 503, then storage is fine
    elapsed, response = await timed(lambda: client.get(f"/Users/{user['id']}"))
    assert response.status == 200 and proxy.faulted == 2, response.body
    assert elapsed >= 0.5, elapsed  # back-off: 0, then 0.5 s
    MEASURED["proxy busy twice, then GET succeeds"] = elapsed

    await runtime.log_writer.drain()
    proxy.set_mode("busy", count=2)  # a transaction (the store's first request here) too
    name = f"busy-{uuid.uuid4().hex[:8]}@contoso.com"
    stored = await runtime.store.create(
        client.tenant, "User", {"userName": name}, IndexTerms(unique={"userName": name})
    )
    assert proxy.faulted == 2 and (await client.get(f"/Users/{stored.id}")).status == 200

    proxy.set_mode("busy")  # busy for good
    MEASURED["proxy busy (503 from storage)"] = await all_503_within_bound(entra_requests(client, user, group))
    proxy.set_mode("pass")
    await all_succeed(entra_requests(client, user, group))


async def test_slow_storage_still_answers(proxied):
    proxy, client, _ = proxied
    user = await created(client.post("/Users", user_body()))
    group = await created(client.post("/Groups", {"schemas": [GROUP_URN], "displayName": f"g-{uuid.uuid4().hex[:8]}"}))
    proxy.set_mode("pass", delay=0.1)  # every storage answer 0.1 s late: slow, not dead
    started = time.perf_counter()
    await all_succeed(entra_requests(client, user, group))
    MEASURED["proxy delay 0.1 s: 8 requests in sequence"] = time.perf_counter() - started


def directory_write(prefix: str) -> Callable[[bytes], bool]:
    """Matches a write to the directory table: a transaction ($batch) or an entity update (not
    the provisioning log's, not a read)."""
    marker = f"/{prefix}directory".encode()

    def match(request: bytes) -> bool:
        line = request.split(b"\r\n", 1)[0]
        if request.startswith(b"POST ") and b"$batch" in line:
            return marker in request
        return request.startswith((b"PUT ", b"PATCH ", b"MERGE ", b"DELETE ")) and marker in line

    return match


async def test_a_lost_storage_answer_is_resent_safely(proxied, azurite, table_prefix):
    """Azurite does the write, its answer is lost: the store sends it again, and recognises
    its own earlier commit (create: its fresh id exists; replace: the stored document is the
    one it wrote; delete: the resource is gone), so the client gets success, not an error, and
    the change's event is there once (it commits in the same transaction, which the resend
    cannot commit again)."""
    proxy, client, _ = proxied
    body = user_body()
    renamed = f"renamed-{uuid.uuid4().hex[:8]}@contoso.com"
    group = await created(client.post("/Groups", {"schemas": [GROUP_URN], "displayName": f"g-{uuid.uuid4().hex[:8]}"}))
    steps: list[tuple[str, Callable[[str], Awaitable[Response]], int, list[str]]] = [
        ("POST /Users", lambda _: client.post("/Users", body), 201, ["user.created"]),
        (
            "PATCH userName (transaction)",
            lambda u: client.patch(
                f"/Users/{u}",
                {"schemas": [PATCH_URN], "Operations": [{"op": "Replace", "path": "userName", "value": renamed}]},
            ),
            200,
            ["user.updated"],
        ),
        (
            "PATCH active (with its event)",
            lambda u: client.patch(f"/Users/{u}", disable_patch()),
            200,
            ["user.deactivated"],
        ),
        ("PATCH /Groups add", lambda u: client.patch(f"/Groups/{group['id']}", members_patch("Add", [u])), 204, []),
        ("DELETE /Users", lambda u: client.delete(f"/Users/{u}"), 204, ["user.deleted"]),
    ]
    user_id, expected = "", []
    for name, step, status, kinds in steps:
        proxy.set_mode("drop", drops=1, drop_match=directory_write(table_prefix))
        response = await step(user_id)
        assert proxy.dropped == 1, name
        assert response.status == status, (name, response.status, response.body)
        user_id = user_id or response.json["id"]
        proxy.set_mode("pass")
        directory = await raw_directory(azurite, table_prefix, client.tenant)
        events = await raw_events(azurite, table_prefix, client.tenant)
        assert violations(directory) + event_violations(directory, events, client.tenant) == [], name
        expected += kinds
        assert [e.event["type"] for e in events if event_subject(e.event) == user_id] == expected, name
    directory = await raw_directory(azurite, table_prefix, client.tenant)
    assert directory.ids("User") == set() and directory.memberships == {}


@pytest.mark.parametrize("requests", [1, 6])
async def test_a_provisioning_log_write_whose_connection_is_reset_is_sent_again(proxied, requests):
    """The log's write (one upsert, or one transaction for the batch of requests) meets a reset
    connection (azure-core does not retry a POST for that): the writer sends it again, so every
    entry, failures included, is there once."""
    proxy, client, runtime = proxied
    await client.get("/Users", params={"filter": 'userName eq "warm-up"'})
    await runtime.log_writer.drain()
    missing = [f"/Users/{uuid.uuid4()}" for _ in range(requests)]
    answers = await asyncio.gather(*(client.get(path) for path in missing))
    assert {a.status for a in answers} == {404}
    proxy.set_mode("reset", count=1)  # before the writer's window ends: its write meets it
    await runtime.log_writer.drain()
    assert proxy.faulted == 1
    proxy.set_mode("pass")
    ids = {a.headers["x-correlation-id"] for a in answers}
    logged = await runtime.log.page(client.tenant, limit=50)
    failures = await runtime.log.page(client.tenant, failures_only=True, limit=50)
    assert ids <= {e.correlation_id for e in logged.entries}
    assert sorted(e.correlation_id for e in failures.entries) == sorted(ids)


@pytest.mark.parametrize("mode", ["reset", "drop"])
async def test_a_tenant_create_whose_request_or_answer_is_lost_succeeds_once(proxied, table_prefix, mode):
    """Creating a tenant is a POST, which azure-core does not resend: reset before it reaches
    storage, or its answer lost after it committed, the registry sends it again and, on 409,
    recognises its own row by the token hash; a name taken by someone else stays TenantExists."""
    proxy, _, runtime = proxied
    name = "t" + uuid.uuid4().hex[:12]
    marker = f"/{table_prefix}tenants".encode()
    if mode == "reset":
        proxy.set_mode("reset", count=1)
    else:
        proxy.set_mode(
            "drop",
            drops=1,
            drop_match=lambda request: request.startswith(b"POST ") and marker in request.split(b"\r\n", 1)[0],
        )
    token = await runtime.tenants.create(name)
    assert (proxy.faulted if mode == "reset" else proxy.dropped) == 1
    proxy.set_mode("pass")
    client = FunctionsClient(name, token)
    assert (await client.get("/Users", params={"filter": 'userName eq "x"'})).status == 200
    with pytest.raises(TenantExists):
        await runtime.tenants.create(name)


async def test_creating_the_tables_survives_a_reset_connection(azurite, table_prefix):
    """A fresh process creates its tables with POSTs, which azure-core does not resend: the
    first one meets a reset connection and is sent again."""
    port = int(azurite.split("TableEndpoint=http://127.0.0.1:")[1].split("/")[0])
    with TcpProxy(port) as proxy:
        proxy.set_mode("reset", count=1)
        runtime = build_runtime(
            azurite_settings(azurite_connection_string("127.0.0.1", proxy.port), table_prefix + "fresh")
        )
        try:
            name = "t" + uuid.uuid4().hex[:12]
            client = FunctionsClient(name, await runtime.tenants.create(name))  # creates {prefix}tenants first
            assert proxy.faulted == 1
            use_runtime(runtime)
            assert (await client.post("/Users", user_body())).status == 201  # and {prefix}directory
            await runtime.log_writer.drain()  # and {prefix}log
            assert len((await runtime.log.page(name, limit=5)).entries) == 1
        finally:
            use_runtime(None)
            await runtime.close()


async def test_entra_recovers_from_a_post_whose_storage_answers_are_all_lost(proxied, azurite, table_prefix):
    """Every answer of the directory's transactions is lost while Entra POSTs: 503. Entra's
    retry gets 409, its filter finds the user, and its PATCH succeeds (docs/ENTRA.md: lost POST)."""
    proxy, client, _ = proxied
    body = user_body()
    proxy.set_mode("drop", drop_match=directory_write(table_prefix))
    first = await client.post("/Users", body)
    assert proxy.dropped >= 1
    assert_503(first)
    proxy.set_mode("pass")
    retry = await client.post("/Users", body)
    assert retry.status == 409 and retry.json["scimType"] == "uniqueness", retry.body
    found = await client.get("/Users", params={"filter": f'userName eq "{body["userName"]}"'})
    assert found.status == 200 and found.json["totalResults"] == 1
    user_id = found.json["Resources"][0]["id"]
    patched = await client.patch(f"/Users/{user_id}", disable_patch())
    assert patched.status == 200 and patched.json["active"] is False
    assert violations(await raw_directory(azurite, table_prefix, client.tenant)) == []


@pytest.mark.azurite(reason="starts and stops an Azurite of its own")
async def test_azurite_stopped_mid_run_then_started_again(tmp_path: Path, table_prefix: str):
    """A real Azurite (data on disk) stopped under the app: 503s, fast (connection refused);
    started again on the same port: the same requests succeed, the same app, the data intact."""
    port = free_port()
    azurite = AzuriteProcess(port, in_memory=False, location=tmp_path / "azurite")
    azurite.start()
    runtime = build_runtime(azurite_settings(azurite.connection_string, table_prefix))
    use_runtime(runtime)
    try:
        name = "s" + uuid.uuid4().hex[:12]
        client = FunctionsClient(name, await runtime.tenants.create(name))
        user = await created(client.post("/Users", user_body()))
        group = await created(
            client.post("/Groups", {"schemas": [GROUP_URN], "displayName": f"g-{uuid.uuid4().hex[:8]}"})
        )
        requests = entra_requests(client, user, group)
        await runtime.log_writer.drain()
        azurite.stop()
        MEASURED["Azurite stopped"] = await all_503_within_bound(requests)
        azurite.start()
        await all_succeed(requests)
        assert (await client.get(f"/Users/{user['id']}")).json["userName"] == user["userName"]
    finally:
        use_runtime(None)
        await runtime.close()
        azurite.stop()


@pytest.fixture(scope="module", autouse=True)
def _report_bounds() -> Iterable[None]:
    """Print the measured times at the end of the run."""
    yield
    if MEASURED:
        lines = [f"{name:<44} {seconds:6.2f} s" for name, seconds in sorted(MEASURED.items())]
        record_summary(f"storage faults: slowest answer (bound {BOUND:g} s)", "\n".join(lines))


# ---- fault injection at each write step ---------------------------------------------------------


class FaultyStore(TableStore):
    """A TableStore whose ``fail_at``-th transaction fails.

    ``when``: ``before`` (never sent), ``after`` (committed, then the answer is lost) or
    ``rejected`` (storage answered 503 on its first operation). ``stays_down``: every storage
    call after the fault fails too, until :meth:`storage_back`.
    """

    def __init__(
        self, service: Any, prefix: str, *, fail_at: int = 0, when: str = "before", stays_down: bool = False
    ) -> None:
        super().__init__(service, prefix)
        self.fail_at, self.when, self.stays_down = fail_at, when, stays_down
        self.submits = 0
        self.down = False
        self.fired = False

    def storage_back(self) -> None:
        self.down, self.fail_at = False, 0

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("injected: storage is down")

    async def _submit(self, ops):  # type: ignore[no-untyped-def]
        self._check()
        self.submits += 1
        if self.submits != self.fail_at:
            return await super()._submit(ops)
        self.fired = True
        self.down = self.stays_down
        if self.when == "rejected":
            raise _OpFailed(ops[0], StoreUnavailable("injected: 503 ServerBusy"), 503)
        if self.when == "after":
            await super()._submit(ops)
        raise StoreUnavailable(f"injected: transaction {self.fail_at} failed ({self.when})")

    async def _read(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self._check()
        return await super()._read(*args, **kwargs)

    async def _range(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self._check()
        return await super()._range(*args, **kwargs)


MODES = [("after", False), ("rejected", False)]
"""(when the Nth transaction fails, whether storage stays down until the check).

A failed transaction ends the request (503) on every path but one, so whether storage stays
down after it changes nothing there: a fault after the commit and one before it (rejected by
storage) are the two states to check. The exception is the create of a group too big for one
transaction, which deletes the new group again when adding the rest of its members fails:
:data:`COMPENSATED_MODES` also checks that this compensation fails safely."""
COMPENSATED_MODES = [("before", True), ("before", False), ("after", True), ("after", False), ("rejected", False)]

SMALL_TRANSACTION = 9
"""Operations per transaction in the fault-injection test: 4 members (1 group merge + 2 each)."""
MEMBERS = 9  # members of the big groups: 3 transactions (create: 3 + 4 + 2; add/remove: 4 + 4 + 1)
USERS = 9


@dataclass
class Tenant:
    """A tenant of the fault tests: its name, users, and how to call the service on it."""

    name: str
    service: ScimService
    users: list[str]

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, str] | None = None,
        service: ScimService | None = None,
    ) -> ScimResponse:
        request = ScimRequest(
            method=method,
            tenant=self.name,
            path=path,
            base_url=f"http://127.0.0.1/scim/{self.name}",
            query=query or {},
            headers={},
            body=json.dumps(body).encode() if body is not None else b"",
        )
        try:
            return await (service or self.service).handle(request)
        except ScimError as error:  # rendered as the HTTP adapter renders it (the one choke point)
            return error_response(error)

    async def ok(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None) -> dict[str, Any]:
        response = await self.call(method, path, body, query)
        assert response.status < 300, (method, path, response.status, response.body)
        return response.body or {}

    async def new_group(self, members: Iterable[str] = ()) -> str:
        body = {
            "schemas": [GROUP_URN],
            "displayName": f"g-{uuid.uuid4().hex[:10]}",
            "members": [{"value": m} for m in members],
        }
        return str((await self.ok("POST", "/Groups", body))["id"])

    async def group_id(self, display_name: str) -> str | None:
        found = await self.ok(
            "GET", "/Groups", query={"filter": f'displayName eq "{display_name}"', "excludedAttributes": "members"}
        )
        return found["Resources"][0]["id"] if found["Resources"] else None


@dataclass
class WritePath:
    """One write path: prepare the state, the request, Entra's retry, the intended end state."""

    name: str
    prepare: Callable[[Tenant], Awaitable[dict[str, Any]]]
    request: Callable[[Tenant, dict[str, Any], ScimService], Awaitable[ScimResponse]]
    retry: Callable[[Tenant, dict[str, Any]], Awaitable[None]]
    expect: Callable[[Directory, dict[str, Any]], list[str]]
    users: int = USERS
    modes: list[tuple[str, bool]] = field(default_factory=lambda: MODES)
    events: list[str] = field(default_factory=list)
    """The types of the events of the resource ``state[subject]`` names, in order, after the retry."""
    subject: str = "group"
    member_events: bool = True
    """Whether ``events`` lists the membership events too (else any, each member at most once)."""


def _types(events: list[StoredEvent], resource_id: str) -> list[str]:
    """The types of the resource's events (a group's membership events included), in feed order;
    a membership event of one member twice is reported."""
    mine = [e.event for e in events if event_subject(e.event) == resource_id]
    pairs = [(e["type"], e["data"]["member"]["id"]) for e in mine if "member" in e["data"]]
    twice = [f"twice: {kind} {member}" for kind, member in set(pairs) if pairs.count((kind, member)) > 1]
    return [e["type"] for e in mine] + twice


def _events_are(path: WritePath, events: list[StoredEvent], state: dict[str, Any]) -> list[str]:
    if not path.events:
        return []
    subject = str(state.get(path.subject))
    if path.subject == "body":  # a created user: found by its userName
        name = state["body"]["userName"]
        named = {event_subject(e.event) for e in events if e.event["data"].get("object", {}).get("userName") == name}
        subject = named.pop() if len(named) == 1 else f"{len(named)} users named {name}"
    types = _types(events, subject)
    if not path.member_events:
        types = [t for t in types if not t.startswith("group.member_")]
    return [] if types == path.events else [f"events of {path.subject} {subject}: {types}, expected {path.events}"]


def _members_are(directory: Directory, group: str | None, wanted: Iterable[str]) -> list[str]:
    if group is None or ("Group", group) not in directory.resources:
        return [f"group {group} is missing"]
    got, want = directory.members(group), set(wanted)
    return (
        []
        if got == want
        else [f"group has {len(got)} members, {len(got - want)} unexpected, {len(want - got)} missing"]
    )


# A. POST /Groups with 9 members: the create transaction holds 3, add_members the other 6.
async def _a_prepare(t: Tenant) -> dict[str, Any]:
    return {"name": f"big-{uuid.uuid4().hex[:10]}", "members": t.users[:MEMBERS]}


def _a_body(s: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [GROUP_URN], "displayName": s["name"], "members": [{"value": m} for m in s["members"]]}


async def _a_request(t: Tenant, s: dict[str, Any], service: ScimService) -> ScimResponse:
    return await t.call("POST", "/Groups", _a_body(s), service=service)


async def _a_retry(t: Tenant, s: dict[str, Any]) -> None:
    again = await t.call("POST", "/Groups", _a_body(s))
    if again.status == 409:  # Entra: the group exists (lost POST): match it, then PATCH its members
        group = await t.group_id(s["name"])
        assert group is not None
        await t.ok("PATCH", f"/Groups/{group}", members_patch("Add", s["members"]))
    else:
        assert again.status == 201, again.body
    s["group"] = await t.group_id(s["name"])


def _a_expect(d: Directory, s: dict[str, Any]) -> list[str]:
    named = [i for i in d.ids("Group") if d.doc("Group", i)["displayName"] == s["name"]]
    return [f"{len(named)} groups named {s['name']}"] if len(named) != 1 else _members_are(d, s["group"], s["members"])


# B. PATCH add 9 members to an empty group: 3 transactions.
async def _b_prepare(t: Tenant) -> dict[str, Any]:
    return {"group": await t.new_group(), "members": t.users[:MEMBERS]}


async def _b_request(t: Tenant, s: dict[str, Any], service: ScimService) -> ScimResponse:
    return await t.call("PATCH", f"/Groups/{s['group']}", members_patch("Add", s["members"]), service=service)


async def _b_retry(t: Tenant, s: dict[str, Any]) -> None:
    await t.ok("PATCH", f"/Groups/{s['group']}", members_patch("Add", s["members"]))


def _b_expect(d: Directory, s: dict[str, Any]) -> list[str]:
    return _members_are(d, s["group"], s["members"])


# C. PATCH remove 9 members: 3 transactions.
async def _c_prepare(t: Tenant) -> dict[str, Any]:
    return {"group": await t.new_group(t.users[:MEMBERS]), "members": t.users[:MEMBERS]}


async def _c_request(t: Tenant, s: dict[str, Any], service: ScimService) -> ScimResponse:
    return await t.call("PATCH", f"/Groups/{s['group']}", members_patch("Remove", s["members"]), service=service)


async def _c_retry(t: Tenant, s: dict[str, Any]) -> None:
    await t.ok("PATCH", f"/Groups/{s['group']}", members_patch("Remove", s["members"]))


def _c_expect(d: Directory, s: dict[str, Any]) -> list[str]:
    return _members_are(d, s["group"], ())


# D. DELETE a group of 9 members: 2 guarded transactions of 4 and 2 unlinks, then the final one.
async def _d_request(t: Tenant, s: dict[str, Any], service: ScimService) -> ScimResponse:
    return await t.call("DELETE", f"/Groups/{s['group']}", service=service)


async def _d_retry(t: Tenant, s: dict[str, Any]) -> None:
    again = await t.call("DELETE", f"/Groups/{s['group']}")
    assert again.status in (204, 404), again.body


def _d_expect(d: Directory, s: dict[str, Any]) -> list[str]:
    return [f"group {s['group']} still exists"] if ("Group", s["group"]) in d.resources else []


# E. DELETE a user who is in 9 groups: 2 guarded transactions for 4 and 2 groups, then the final one.
async def _e_prepare(t: Tenant) -> dict[str, Any]:
    user = str((await t.ok("POST", "/Users", user_body()))["id"])
    await asyncio.gather(*(t.ok("PATCH", f"/Groups/{g}", members_patch("Add", [user])) for g in t.users[:MEMBERS]))
    return {"user": user}


async def _e_request(t: Tenant, s: dict[str, Any], service: ScimService) -> ScimResponse:
    return await t.call("DELETE", f"/Users/{s['user']}", service=service)


async def _e_retry(t: Tenant, s: dict[str, Any]) -> None:
    again = await t.call("DELETE", f"/Users/{s['user']}")
    assert again.status in (204, 404), again.body


def _e_expect(d: Directory, s: dict[str, Any]) -> list[str]:
    return [f"user {s['user']} still exists"] if ("User", s["user"]) in d.resources else []


# F. PUT a group: replace (1 transaction), then remove 3 members (1) and add 3 (1).
async def _f_prepare(t: Tenant) -> dict[str, Any]:
    name = f"put-{uuid.uuid4().hex[:10]}"
    body = {"schemas": [GROUP_URN], "displayName": name, "members": [{"value": m} for m in t.users[:6]]}
    group = str((await t.ok("POST", "/Groups", body))["id"])
    return {"group": group, "name": name, "members": t.users[3:9]}


def _f_body(s: dict[str, Any]) -> dict[str, Any]:
    return {
        "schemas": [GROUP_URN],
        "displayName": s["name"] + "-renamed",
        "members": [{"value": m} for m in s["members"]],
    }


async def _f_request(t: Tenant, s: dict[str, Any], service: ScimService) -> ScimResponse:
    return await t.call("PUT", f"/Groups/{s['group']}", _f_body(s), service=service)


async def _f_retry(t: Tenant, s: dict[str, Any]) -> None:
    await t.ok("PUT", f"/Groups/{s['group']}", _f_body(s))


def _f_expect(d: Directory, s: dict[str, Any]) -> list[str]:
    problems = _members_are(d, s["group"], s["members"])
    if not problems and d.doc("Group", s["group"])["displayName"] != s["name"] + "-renamed":
        problems.append("displayName not replaced")
    return problems


# G1. POST a user (1 transaction).
async def _g1_prepare(t: Tenant) -> dict[str, Any]:
    return {"body": user_body()}


async def _g1_request(t: Tenant, s: dict[str, Any], service: ScimService) -> ScimResponse:
    return await t.call("POST", "/Users", s["body"], service=service)


async def _g1_retry(t: Tenant, s: dict[str, Any]) -> None:
    again = await t.call("POST", "/Users", s["body"])
    assert again.status in (201, 409), again.body
    found = await t.ok("GET", "/Users", query={"filter": f'userName eq "{s["body"]["userName"]}"'})
    assert found["totalResults"] == 1
    await t.ok("PATCH", f"/Users/{found['Resources'][0]['id']}", disable_patch())


def _g1_expect(d: Directory, s: dict[str, Any]) -> list[str]:
    named = [i for i in d.ids("User") if d.doc("User", i)["userName"] == s["body"]["userName"]]
    return [] if len(named) == 1 and d.doc("User", named[0])["active"] is False else [f"users named: {named}"]


# G2. PATCH a user's userName (1 guarded transaction moving its index row).
async def _g2_prepare(t: Tenant) -> dict[str, Any]:
    old = user_body()
    return {
        "user": (await t.ok("POST", "/Users", old))["id"],
        "old": old["userName"],
        "new": f"renamed-{uuid.uuid4().hex[:10]}@contoso.com",
    }


def _g2_body(s: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_URN], "Operations": [{"op": "Replace", "path": "userName", "value": s["new"]}]}


async def _g2_request(t: Tenant, s: dict[str, Any], service: ScimService) -> ScimResponse:
    return await t.call("PATCH", f"/Users/{s['user']}", _g2_body(s), service=service)


async def _g2_retry(t: Tenant, s: dict[str, Any]) -> None:
    assert (await t.ok("PATCH", f"/Users/{s['user']}", _g2_body(s)))["userName"] == s["new"]
    await t.ok("POST", "/Users", user_body(s["old"]))  # the old name is free again: no orphan index row


def _g2_expect(d: Directory, s: dict[str, Any]) -> list[str]:
    return [] if d.doc("User", s["user"])["userName"] == s["new"] else ["userName not changed"]


# G3. DELETE a user in 2 groups (1 guarded transaction).
async def _g3_prepare(t: Tenant) -> dict[str, Any]:
    user = str((await t.ok("POST", "/Users", user_body()))["id"])
    for group in t.users[:2]:
        await t.ok("PATCH", f"/Groups/{group}", members_patch("Add", [user]))
    return {"user": user}


_ADDED, _REMOVED = ["group.member_added"], ["group.member_removed"]  # one per member (a POST's members too)
_CREATED = ["group.created"]
_CREATED_9 = _CREATED + _ADDED * MEMBERS  # a group POSTed with 9 members
_DELETED = [*_CREATED_9, "group.deleted"]
PATHS = [
    WritePath(
        "POST /Groups, 9 members",
        _a_prepare,
        _a_request,
        _a_retry,
        _a_expect,
        modes=COMPENSATED_MODES,
        events=_CREATED,
        member_events=False,  # a retry after a create that stayed adds the missing members by PATCH
    ),
    WritePath("PATCH /Groups add 9", _b_prepare, _b_request, _b_retry, _b_expect, events=_CREATED + _ADDED * 9),
    WritePath("PATCH /Groups remove 9", _c_prepare, _c_request, _c_retry, _c_expect, events=_CREATED_9 + _REMOVED * 9),
    WritePath("DELETE /Groups, 9 members", _c_prepare, _d_request, _d_retry, _d_expect, events=_DELETED),
    WritePath(
        "DELETE /Users, in 9 groups",
        _e_prepare,
        _e_request,
        _e_retry,
        _e_expect,
        users=MEMBERS,
        events=["user.created", "user.deleted"],
        subject="user",
    ),
    WritePath(
        "PUT /Groups, 3 out 3 in",
        _f_prepare,
        _f_request,
        _f_retry,
        _f_expect,
        events=["group.created", *_ADDED * 6, "group.updated", *_REMOVED * 3, *_ADDED * 3],
    ),
    WritePath(
        "POST /Users",
        _g1_prepare,
        _g1_request,
        _g1_retry,
        _g1_expect,
        users=0,
        events=["user.created", "user.deactivated"],
        subject="body",
    ),
    WritePath(
        "PATCH /Users userName",
        _g2_prepare,
        _g2_request,
        _g2_retry,
        _g2_expect,
        users=0,
        events=["user.created", "user.updated"],
        subject="user",
    ),
    WritePath(
        "DELETE /Users, in 2 groups",
        _g3_prepare,
        _e_request,
        _e_retry,
        _e_expect,
        users=2,
        events=["user.created", "user.deleted"],
        subject="user",
    ),
]


async def _tenant(path: WritePath, store: TableStore, registry: Any) -> Tenant:
    """A fresh tenant: 9 users, or (paths that delete users) groups the scenarios' users join."""
    name = "j" + uuid.uuid4().hex[:12]
    await registry.create(name)
    tenant = Tenant(name, ScimService(store), [])
    if path.name.startswith("DELETE /Users"):
        tenant.users = [await tenant.new_group() for _ in range(path.users)]
    else:
        created = await asyncio.gather(*(tenant.ok("POST", "/Users", user_body()) for _ in range(path.users)))
        tenant.users = [str(c["id"]) for c in created]
    return tenant


async def _run_path(path: WritePath, service: Any, prefix: str, connection_string: str, report: list[str]) -> list[str]:
    """Every (N, mode) scenario of one path, in sequence on its own tenant; returns the failures."""
    healthy = TableStore(service, prefix)
    tenant = await _tenant(path, healthy, healthy.tenant_registry())
    dry = FaultyStore(service, prefix)
    state = await path.prepare(tenant)
    assert (await path.request(tenant, state, ScimService(dry))).status < 300
    steps = dry.submits
    failures: list[str] = []
    outcomes: Counter[str] = Counter()
    for n in range(1, steps + 1):
        for when, stays_down in path.modes:
            label = f"{path.name}: transaction {n}/{steps} fails {when}{', storage stays down' if stays_down else ''}"
            try:
                state = await path.prepare(tenant)
                faulty = FaultyStore(service, prefix, fail_at=n, when=when, stays_down=stays_down)
                response = await path.request(tenant, state, ScimService(faulty))
                assert faulty.fired, "the fault was not reached"
                assert_503(response)
                faulty.storage_back()
                directory = await raw_directory(connection_string, prefix, tenant.name)
                events = await raw_events(connection_string, prefix, tenant.name)
                after_fault = violations(directory) + event_violations(directory, events, tenant.name)
                assert after_fault == [], f"after the fault: {after_fault[:5]}"
                await path.retry(tenant, state)
                directory = await raw_directory(connection_string, prefix, tenant.name)
                events = await raw_events(connection_string, prefix, tenant.name)
                problems = violations(directory) + event_violations(directory, events, tenant.name)
                assert problems == [], f"after the retry: {problems[:5]}"
                assert path.expect(directory, state) == [], f"after the retry: {path.expect(directory, state)}"
                assert _events_are(path, events, state) == [], f"after the retry: {_events_are(path, events, state)}"
                outcomes["ok"] += 1
            except AssertionError as exc:
                failures.append(f"{label}: {exc}")
    report.append(
        f"{path.name:<30} {steps} transaction(s) x {len(path.modes)} fault modes: {outcomes['ok']} consistent and converged"
    )
    return failures


async def test_fault_at_each_write_step_leaves_a_consistent_tenant_and_the_retry_converges(
    azurite, table_prefix, monkeypatch
):
    monkeypatch.setattr(tables, "MAX_TRANSACTION_OPS", SMALL_TRANSACTION)
    monkeypatch.setattr(tables, "MEMBERS_PER_TRANSACTION", (SMALL_TRANSACTION - 1) // 2)
    monkeypatch.setattr(directory_members, "MEMBERS_PER_TRANSACTION", (SMALL_TRANSACTION - 1) // 2)
    settings = azurite_settings(azurite, table_prefix)
    service, _ = service_client(settings)
    report: list[str] = []
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(_run_path(p, service, table_prefix, azurite, report) for p in PATHS)), 120
        )
    finally:
        await service.close()
    record_summary("storage faults: injected at each write step", "\n".join(sorted(report)))
    failures = [f for r in results for f in r]
    assert failures == [], "\n".join(failures)
