"""The :class:`DirectoryStore` on Azure Table Storage (or Azurite), per ``docs/table-layout.md``.

One partition per tenant holds its users (``u|{id}``), groups (``g|{id}``), memberships
(``m|{group}|{member}``) and index rows (``U|``/``G|`` unique, ``X|`` non-unique). Every
multi-entity change is one entity-group transaction, so it happens entirely or not at all
(rule 4 of :mod:`scim.store.base`):

- create: the resource + its index rows (+ memberships) in one transaction; a taken unique
  key fails the insert of its index row, hence the whole transaction (RFC 7644 §3.3, 409);
- replace/delete: a point read, then one ETag-guarded transaction (RFC 7644 §3.5.1, §3.6;
  §3.14 versions); the version of a resource is its entity's ETag;
- member PATCH (RFC 7644 §3.5.2, how Entra adds and removes group members one at a time):
  ⌈k/49⌉ transactions that never read the member list: a merge on the group (existence
  check, new version), then per member an upsert/delete of the membership row and a merge of
  the ``m_{group}`` flag onto the member entity, which fails if the member does not exist.

Azure errors become store errors in one place, :func:`store_error`.

Faults (storage down, hanging, throttling, answers lost):

- every storage call is bounded in time (see "time bounds" below): a dead storage makes a
  call fail with :class:`StoreUnavailable` (the service answers 503 + Retry-After) within
  about 12 s when it hangs and under 1 s when it refuses, resets or answers 5xx; transient
  failures are retried with back-off inside that bound;
- a transaction whose answer was lost is sent again, and an earlier commit of it recognised
  (:meth:`TableStore._submit`), so the client gets the success it caused;
- operations that take several transactions (a group created with more members than one
  holds, member PATCHes of more than 49, deletes whose cleanup spans transactions) order them
  so that every prefix is a consistent directory (each transaction keeps memberships, member
  flags and index rows in step): a failure between two leaves no orphan and nothing visible
  that a deleted resource names, and repeating the request, as Entra does after a 503,
  completes it (``tests/test_faults.py`` fails each transaction in turn to check this).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import os
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from scim.store import MAX_GROUPS_PER_RESOURCE, check_members_allowed, dedupe_members, keys, new_id, utc_now
from scim.store.base import (
    DirectoryStore,
    EntityTooLarge,
    IndexTerms,
    Member,
    Page,
    ResourceKind,
    ResourceNotFound,
    StoredResource,
    StoreError,
    StoreUnavailable,
    TooManyGroups,
    UniquenessViolation,
    UnknownMembers,
    VersionMismatch,
)
from scim.store.roundtrips import client_kwargs
from scim.store.transactions import submit_transaction
from scim.tenants import (
    ACTIVE,
    DELETING,
    TenantDeleting,
    TenantExists,
    TenantInfo,
    TenantNotFound,
    TenantRegistry,
    TokenConflict,
    hash_token,
    new_token,
    validate_recipients,
    validate_tenant_name,
)

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.core.pipeline.policies import SansIOHTTPPolicy

    from scim.settings import Settings

__all__ = [
    "CLIENT_OPTIONS",
    "DEFAULT_UNIQUE_ATTRIBUTES",
    "STORAGE_BUDGET",
    "TableStore",
    "TableTenantRegistry",
    "create_table",
    "resend_if_lost",
    "service_client",
    "store_error",
]

DEFAULT_UNIQUE_ATTRIBUTES: Mapping[str, frozenset[str]] = {
    "User": frozenset({"userName"}),
    "Group": frozenset({"displayName"}),
}
"""Attributes indexed as unique (``U|``/``G|`` rows), per :class:`~scim.store.base.IndexTerms`."""

# azure-core logs every storage request (URL and headers) at INFO, and our RowKeys carry
# userNames and emails: whatever process makes storage calls (the app, make run, the admin
# CLI), those lines stay below the level anyone logs at.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)

# Azure Table Storage limits (learn.microsoft.com: "Understanding the Table service data model").
MAX_TRANSACTION_OPS = 100
MAX_ENTITY_BYTES = 1024 * 1024
MAX_PROPERTIES = 252
CHUNK_UNITS = 32_000  # UTF-16 code units per string property (64 KiB limit)
MAX_PAGE = 1000  # largest $top
MEMBERS_PER_TRANSACTION = (MAX_TRANSACTION_OPS - 1) // 2  # 49: 1 group merge + 2 ops per member
FINAL_INDEX_OPS = 60
"""Index rows a delete removes in its final transaction; a resource with more (the core bounds
indexed values, but older rows may exceed it) sheds the rest first (:meth:`TableStore._shed`)."""
MAX_ATTEMPTS = 10  # ETag-guarded writes retried after a concurrent membership change
RECENT_ENTITIES = 1024  # entities remembered per process for read-modify-write (about 1-4 KiB each)

# ---- time bounds ----
# A storage that refuses connections, hangs or keeps failing must not hold a request for long
# (Entra gives up after 60 s): the service answers StoreUnavailable with 503 + Retry-After.
# - Each attempt of a call made for a SCIM request (the store's, and the tenant lookup) is
#   bounded: 3 s to connect, READ_TIMEOUT (6 s) without a byte of the answer. Azure Tables
#   answers an entity operation in milliseconds (its SLA allows 2 s); 6 s of silence leaves
#   room for a 100-operation transaction on a busy emulator. Other users of the shared client
#   (provisioning log, digests, admin bulk work) get CLIENT_OPTIONS' 30 s.
# - Attempts are bounded: azure-core retries reads, connection failures and 408/429/5xx answers
#   (3 attempts, back-off 0 then 0.5 s; one retry after a read timeout); _submit sends a
#   transaction once more after a lost request or answer (SUBMIT_ATTEMPTS). So a dead storage
#   fails a call in under 1 s when it refuses or resets connections or answers 5xx, and in
#   about 12 s when it accepts and hangs (2 x 6 s).
# - Backstop: one store operation (a DirectoryStore call with every storage request, retry,
#   back-off and compensation it makes) gives up after STORAGE_BUDGET seconds whatever happens
#   (answers trickling in, a long Retry-After, waiting for a pooled connection under a burst).
STORAGE_BUDGET = 20.0
READ_TIMEOUT = 6
_TIMEOUT: Mapping[str, Any] = {"read_timeout": READ_TIMEOUT}  # per call, for the store's own calls
CLIENT_OPTIONS: Mapping[str, Any] = {
    "connection_timeout": 3,  # seconds to open a TCP connection (per attempt)
    "read_timeout": 30,  # seconds without a byte of the answer (per attempt; the store uses READ_TIMEOUT)
    "retry_total": 2,
    "retry_connect": 2,
    "retry_read": 1,
    "retry_status": 2,
    "retry_backoff_factor": 0.25,  # sleeps 0, then 0.5 s between attempts
    "retry_backoff_max": 2,
}
"""azure-core options of the Table client (:func:`service_client`); callers' keywords win."""
SUBMIT_ATTEMPTS = 2  # a transaction is sent at most this often when its request or response is lost

_FILTER_RANGE = "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi"
_FILTER_AFTER = "PartitionKey eq @pk and RowKey gt @lo and RowKey lt @hi"
_FILTER_SPAN = "PartitionKey eq @pk and RowKey ge @lo and RowKey le @hi"
POINT_READS = 8
"""Candidates of a lookup read by concurrent point reads (one storage call each); more are read
by pages of resource rows (:meth:`TableStore._resources`), so that a lookup costs O(pages)."""
SPARSE_PAGE_HITS = 8
"""A page of resource rows holding fewer wanted candidates than this ends the paging: the rest
(scattered over a large tenant) are point-read instead."""
CONVERT_SLICE = 0.001
"""Seconds of converting rows into resources (about 30 µs a row of 20 emails) before handing the
event loop back, so that a page of 1,000 does not hold up every other tenant's requests."""
_FILTER_PARTITION = "PartitionKey eq @pk"
_FLAG_BYTES = 8 + 2 * len("m_" + "0" * 32) + 1  # one m_{hex} bool property
_TOO_LARGE_CODES = frozenset({"EntityTooLarge", "PropertyValueTooLarge", "RequestBodyTooLarge", "TooManyProperties"})
_RETRIABLE_STATUS = frozenset({408, 429})
_TENANT_PARTITION = "tenant"
_NO_TERMS = IndexTerms()

# ---- errors: the one mapping ----------------------------------------------------------------


@dataclass(frozen=True)
class _Op:
    """One operation of a transaction, with what its failure means.

    ``role``: ``resource`` (insert of the resource), ``guard`` (ETag-guarded write of the
    resource), ``target`` (merge on the group of a member PATCH), ``unique`` / ``index``
    (index rows), ``membership`` (an ``m|`` row), ``member`` (the flag merge on a member),
    ``parent`` (merge on a group the deleted resource was in). ``subject``: the attribute of a
    unique row, the member id of a membership/member op, the group id of a parent op.
    """

    kind: str
    entity: dict[str, Any]
    options: Mapping[str, Any] = field(default_factory=dict)
    role: str = "index"
    subject: str = ""

    def as_tuple(self) -> tuple[Any, ...]:
        return (self.kind, self.entity, dict(self.options))


class _OpFailed(Exception):
    """A transaction failed at ``op``; ``error`` is the store error it maps to."""

    def __init__(self, op: _Op | None, error: StoreError, status: int | None = None) -> None:
        super().__init__(str(error))
        self.op = op
        self.error = error
        self.status = status
        self.committed = False  # an earlier transaction of the same operation committed
        self.retried = False  # this transaction was sent again after a lost request or response


def store_error(exc: BaseException, op: _Op | None = None) -> StoreError:
    """Map an Azure SDK error (of ``op`` in a transaction, when known) to a store error.

    The single translation point (rule 9 of :mod:`scim.store.base`):

    - 409 on a unique index row -> :class:`UniquenessViolation` (RFC 7644 §3.3, 409 uniqueness);
    - 404 on a member's flag merge -> :class:`UnknownMembers`; any other 404 -> :class:`ResourceNotFound`;
    - 412 (``ResourceModifiedError``) -> :class:`VersionMismatch` (RFC 7644 §3.14);
    - size/property-count limits -> :class:`EntityTooLarge`;
    - transport errors, timeouts, throttling (408/429) and 5xx -> :class:`StoreUnavailable`.
    """
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, (ServiceRequestError, ServiceResponseError, TimeoutError, OSError)):
        return StoreUnavailable(str(exc))
    if not isinstance(exc, HttpResponseError):
        return StoreUnavailable(str(exc)) if isinstance(exc, AzureError) else StoreError(repr(exc))
    status = exc.status_code
    code = str(getattr(exc, "error_code", None) or "")
    role = op.role if op is not None else ""
    if code in _TOO_LARGE_CODES or status == 413:
        return EntityTooLarge(code or "request too large")
    if status == 409 and role == "unique" and op is not None:
        return UniquenessViolation(op.subject)
    if status == 404 and role == "member" and op is not None:
        return UnknownMembers([op.subject])
    if status == 404:
        return ResourceNotFound(code)
    if status == 412 or isinstance(exc, ResourceModifiedError):
        return VersionMismatch(code)
    if status is None or status >= 500 or status in _RETRIABLE_STATUS:
        return StoreUnavailable(f"storage answered {status} {code}")
    return StoreError(f"storage answered {status} {code}")


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    """Run a single storage call, raising store errors only."""
    try:
        yield
    except StoreError:
        raise
    except (AzureError, OSError) as exc:
        raise store_error(exc) from exc


# ---- time budget ------------------------------------------------------------------------------

T = TypeVar("T")
_DEADLINE: ContextVar[float | None] = ContextVar("scim_store_deadline", default=None)


def _budgeted(method: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., Coroutine[Any, Any, T]]:
    """Give a store operation one deadline, :data:`STORAGE_BUDGET` from now, shared by every
    storage call it makes (nested operations and concurrent reads inherit it)."""

    @functools.wraps(method)
    async def bounded(*args: Any, **kwargs: Any) -> T:
        if _DEADLINE.get() is not None:
            return await method(*args, **kwargs)
        token = _DEADLINE.set(asyncio.get_running_loop().time() + STORAGE_BUDGET)
        try:
            return await method(*args, **kwargs)
        finally:
            _DEADLINE.reset(token)

    return bounded


def _remaining() -> float:
    """Seconds left of the current operation's budget (a whole budget outside of one)."""
    deadline = _DEADLINE.get()
    return STORAGE_BUDGET if deadline is None else deadline - asyncio.get_running_loop().time()


async def _io(call: Callable[[], Awaitable[T]]) -> T:
    """Run one storage call within the budget, raising store errors only (StoreUnavailable when
    the budget runs out: the call is cancelled, and its connection closed)."""
    remaining = _remaining()
    if remaining <= 0:
        raise StoreUnavailable("storage did not answer in time")
    try:
        async with asyncio.timeout(remaining):
            with _mapped():
                return await call()
    except TimeoutError as exc:
        raise StoreUnavailable(f"storage did not answer within {STORAGE_BUDGET:g} s") from exc


# ---- clients and tables -----------------------------------------------------------------------

_READY_TABLES: set[tuple[str, str]] = set()


async def _ensure_table(service: TableServiceClient, name: str) -> None:
    """Create ``name`` if missing, once per process (``create_table`` tolerant of an existing table)."""
    key = (service.url, name)
    if key in _READY_TABLES:
        return
    await _io(lambda: _create_table(service, name))
    _READY_TABLES.add(key)


LOST_REQUEST_ATTEMPTS = 3
"""How often :func:`resend_if_lost` sends a call (a pooled connection the server had closed,
then a reset: the third attempt is on a fresh connection)."""


async def resend_if_lost(call: Callable[[], Awaitable[T]]) -> T:
    """Run ``call``, sending it again when its request or answer was lost (connection reset or
    closed: ``ServiceRequestError``/``ServiceResponseError``), which azure-core does not do for
    a POST; at most :data:`LOST_REQUEST_ATTEMPTS` times, 0.2 s then 0.4 s apart. Only for calls
    that are safe to repeat (upserts, table creation) or whose caller recognises its own earlier
    success (an insert's 409)."""
    for attempt in range(1, LOST_REQUEST_ATTEMPTS + 1):
        try:
            return await call()
        except (ServiceRequestError, ServiceResponseError):
            if attempt == LOST_REQUEST_ATTEMPTS:
                raise
            await asyncio.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


async def create_table(service: TableServiceClient, name: str, **options: Any) -> None:
    """Create the table unless it exists, resending a lost POST (:func:`resend_if_lost`); a
    table that exists by then, ours or not, is what was wanted.

    A 403 is taken as "exists" too: in Azure, ``infra/`` creates every table and grants the app
    its data role on each table, not on the account, and creating a table may need the
    account-level permission (a missing data permission still fails the first entity call).
    """
    try:
        await resend_if_lost(lambda: service.create_table(name, **options))
    except ResourceExistsError:
        pass
    except HttpResponseError as exc:
        if exc.status_code != 403:
            raise
        if name not in _CREATE_REFUSED:
            _CREATE_REFUSED.add(name)
            logging.getLogger("scim.store").info("not allowed to create table %s here; using it as provisioned", name)


_CREATE_REFUSED: set[str] = set()


async def _create_table(service: TableServiceClient, name: str) -> None:
    await create_table(service, name, **_TIMEOUT)


def service_client(
    settings: Settings,
    *,
    per_call_policies: Sequence[SansIOHTTPPolicy[Any, Any]] | None = None,
    **kwargs: Any,
) -> tuple[TableServiceClient, AsyncTokenCredential | None]:
    """The process's Table service client, from :class:`~scim.settings.Settings`.

    ``SCIM_TABLE_ENDPOINT`` wins, with ``DefaultAzureCredential`` (managed identity in Azure);
    otherwise the connection string (Azurite by default). Returns the client and the
    credential it owns (to close), if any.

    Timeouts and retries are bounded (:data:`CLIENT_OPTIONS`, overridable by ``kwargs``), so a
    storage that refuses or hangs fails a call in seconds, not in azure-core's default minutes.
    """
    kwargs = {**CLIENT_OPTIONS, "use_env_settings": proxy_configured(), **kwargs}
    kwargs.update(client_kwargs(per_call_policies))
    if settings.table_endpoint:
        from azure.identity.aio import DefaultAzureCredential  # slow import, only when used

        credential = DefaultAzureCredential()
        return TableServiceClient(settings.table_endpoint, credential=credential, **kwargs), credential
    connection_string = settings.table_connection_string.get_secret_value()
    return TableServiceClient.from_connection_string(connection_string, **kwargs), None


_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def proxy_configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether a proxy is configured in the environment (``HTTP_PROXY`` and the like).

    Only then does the Table client honour the environment (azure-core's ``use_env_settings``):
    with it on, aiohttp looks the proxy up in the environment on every request, which cost 7 %
    of the service's CPU in the Entra replay (docs/performance.md) for no proxy at all.
    """
    env = os.environ if environ is None else environ
    return any(env.get(name) or env.get(name.lower()) for name in _PROXY_VARIABLES)


class _TableOwner:
    """A table client on a shared service client; closes the service client only if it owns it."""

    def __init__(
        self,
        service: TableServiceClient,
        table_name: str,
        *,
        owns_client: bool = False,
        credential: AsyncTokenCredential | None = None,
    ) -> None:
        self._service = service
        self._table_name = table_name
        self._table: TableClient = service.get_table_client(table_name)
        self._owns_client = owns_client
        self._credential = credential

    async def _ready(self) -> None:
        await _ensure_table(self._service, self._table_name)

    async def close(self) -> None:
        """Close the service client (and its credential) if this object created them."""
        if self._owns_client:
            await self._service.close()
            if self._credential is not None:
                await self._credential.close()


# ---- entity encoding --------------------------------------------------------------------------


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _chunks_utf16(text: str, units: int) -> list[str]:
    """``text`` cut into pieces of at most ``units`` UTF-16 code units, never inside a character."""
    if _utf16_len(text) == len(text):
        return [text[i : i + units] for i in range(0, len(text), units)] or [""]
    pieces: list[str] = []
    start, size = 0, 0
    for i, ch in enumerate(text):
        width = 2 if ord(ch) > 0xFFFF else 1
        if size + width > units:
            pieces.append(text[start:i])
            start, size = i, 0
        size += width
    pieces.append(text[start:])
    return pieces


def _dump_doc(doc: Mapping[str, Any]) -> str:
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: keep them as JSON escapes
        text = json.dumps(doc, separators=(",", ":"))
    return text


def _doc_properties(doc: Mapping[str, Any]) -> dict[str, str]:
    """``doc0..docN``: the JSON document in chunks that fit one string property."""
    return {f"doc{i}": chunk for i, chunk in enumerate(_chunks_utf16(_dump_doc(doc), CHUNK_UNITS))}


def _doc_from(entity: Mapping[str, Any]) -> dict[str, Any]:
    parts = sorted(
        (int(name[3:]), value) for name, value in entity.items() if name.startswith("doc") and name[3:].isdigit()
    )
    doc: dict[str, Any] = json.loads("".join(value for _, value in parts))
    return doc


def _terms_json(index: IndexTerms) -> str:
    return json.dumps({"u": dict(index.unique), "m": sorted(index.multi)}, ensure_ascii=False, separators=(",", ":"))


def _terms_from(entity: Mapping[str, Any]) -> IndexTerms:
    raw = json.loads(entity.get("idx") or "{}")
    return IndexTerms(unique=raw.get("u", {}), multi=frozenset((a, k) for a, k in raw.get("m", [])))


def _live_flags(entity: Mapping[str, Any]) -> dict[str, bool]:
    """The ``m_{hex}`` properties that are ``true`` (tombstones dropped)."""
    return {name: True for name, value in entity.items() if value is True and keys.flag_group_id(name)}


def _groups(entity: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(sorted(keys.flag_group_id(name) or "" for name in _live_flags(entity)))


def _value_bytes(value: Any) -> int:
    if isinstance(value, bool):
        return 1
    if isinstance(value, (int, float)):
        return 8
    return 4 + 2 * _utf16_len(str(value))


def _entity_bytes(entity: Mapping[str, Any]) -> int:
    """The documented size of an entity: 4 + 2·len(keys) + Σ(8 + 2·len(name) + value)."""
    size = 4 + 2 * (len(entity["PartitionKey"]) + len(entity["RowKey"]))
    for name, value in entity.items():
        if name not in ("PartitionKey", "RowKey"):
            size += 8 + 2 * len(name) + _value_bytes(value)
    return size


def _check_fits(entity: Mapping[str, Any]) -> None:
    """EntityTooLarge unless the entity fits Table limits with room for 200 group flags."""
    room = MAX_GROUPS_PER_RESOURCE - sum(1 for name in entity if keys.flag_group_id(name))
    if len(entity) - 2 + room > MAX_PROPERTIES or _entity_bytes(entity) + room * _FLAG_BYTES > MAX_ENTITY_BYTES:
        raise EntityTooLarge(f"{entity['RowKey']}: the resource is too large to store")


def _resource_entity(
    pk: str,
    resource_type: ResourceKind,
    id: str,
    doc: Mapping[str, Any],
    index: IndexTerms,
    created: str,
    last_modified: str,
    flags: Mapping[str, bool],
) -> dict[str, Any]:
    """The ``u|{id}``/``g|{id}`` entity: document chunks, times, index terms and group flags."""
    entity: dict[str, Any] = {"PartitionKey": pk, "RowKey": keys.resource_key(resource_type, id)}
    entity.update(_doc_properties(doc))
    entity.update(created=created, lastModified=last_modified, idx=_terms_json(index))
    entity.update(flags)
    _check_fits(entity)
    return entity


def _stored(
    resource_type: ResourceKind,
    entity: Mapping[str, Any],
    version: str,
    members: tuple[Member, ...] | None = None,
) -> StoredResource:
    return StoredResource(
        resource_type=resource_type,
        id=keys.id_from_key(entity["RowKey"], keys.resource_prefix(resource_type)),
        doc=_doc_from(entity),
        created=entity["created"],
        last_modified=entity["lastModified"],
        version=_version(version),
        groups=_groups(entity),
        members=members,
    )


def _etag(entity: Any) -> str:
    return str(entity.metadata["etag"])


def _version(etag: str) -> str:
    """The SCIM ``meta.version`` of a Table ETag (RFC 7644 §3.14): a weak ETag that hides storage details."""
    return f'W/"{hashlib.sha256(etag.encode()).hexdigest()[:20]}"'


# ---- operation builders ---------------------------------------------------------------------


def _row(pk: str, rk: str, **properties: Any) -> dict[str, Any]:
    return {"PartitionKey": pk, "RowKey": rk, **properties}


def _guarded(etag: str) -> dict[str, Any]:
    return {"etag": etag, "match_condition": MatchConditions.IfNotModified}


def _merge(entity: dict[str, Any], role: str, subject: str = "", etag: str | None = None) -> _Op:
    options: dict[str, Any] = {"mode": UpdateMode.MERGE}
    if etag is not None:
        options.update(_guarded(etag))
    return _Op("update", entity, options, role, subject)


def _delete(pk: str, rk: str, role: str = "index", subject: str = "", etag: str | None = None) -> _Op:
    return _Op("delete", _row(pk, rk), _guarded(etag) if etag else {}, role, subject)


def _index_ops(
    pk: str, resource_type: ResourceKind, id: str, new: IndexTerms, old: IndexTerms = _NO_TERMS
) -> list[_Op]:
    """Index rows to insert (unique: must not exist) and delete to go from ``old`` to ``new``."""
    ops: list[_Op] = []
    for attribute, key in new.unique.items():
        if old.unique.get(attribute) != key:
            rk = keys.unique_key(resource_type, attribute, key)
            ops.append(_Op("create", _row(pk, rk, id=id), role="unique", subject=attribute))
    for attribute, key in old.unique.items():
        if new.unique.get(attribute) != key:
            ops.append(_delete(pk, keys.unique_key(resource_type, attribute, key)))
    for attribute, key in sorted(new.multi - old.multi):
        ops.append(
            _Op("upsert", _row(pk, keys.multi_key(resource_type, attribute, key, id)), {"mode": UpdateMode.REPLACE})
        )
    for attribute, key in sorted(old.multi - new.multi):
        ops.append(_delete(pk, keys.multi_key(resource_type, attribute, key, id)))
    return ops


def _link_ops(pk: str, group_id: str, flag: str, member: Member, now: str) -> list[_Op]:
    """Add one membership: upsert ``m|{g}|{m}``, merge ``m_{g}=true`` onto the member."""
    extra = {"display": member.display} if member.display else {}
    row = _row(pk, keys.membership_key(group_id, member.value), type=member.type, **extra)
    flag_row = _row(pk, keys.resource_key(member.type, member.value), lastModified=now, **{flag: True})
    return [
        _Op("upsert", row, {"mode": UpdateMode.REPLACE}, "membership", member.value),
        _merge(flag_row, "member", member.value),
    ]


def _unlink_ops(pk: str, group_id: str, flag: str, member: Member, now: str) -> list[_Op]:
    """Remove one membership: delete ``m|{g}|{m}``, merge ``m_{g}=false`` (tombstone) onto the member."""
    flag_row = _row(pk, keys.resource_key(member.type, member.value), lastModified=now, **{flag: False})
    return [
        _delete(pk, keys.membership_key(group_id, member.value), "membership", member.value),
        _merge(flag_row, "member", member.value),
    ]


def _parent_ops(pk: str, group_id: str, member_id: str, now: str) -> list[_Op]:
    """Drop the deleted resource from a group it was in: delete the row, bump the group's version."""
    return [
        _delete(pk, keys.membership_key(group_id, member_id), "membership", group_id),
        _merge(_row(pk, keys.resource_key("Group", group_id), lastModified=now), "parent", group_id),
    ]


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


PARALLEL_PARTS = 4
"""Transactions of one member PATCH sent at once (a 100-member PATCH is 3: one round trip of latency)."""


async def _in_parallel(parts: Sequence[Coroutine[Any, Any, None]]) -> list[BaseException | None]:
    """Run the transactions of one operation, at most :data:`PARALLEL_PARTS` at a time; each
    part's outcome (None or its exception). The parts of a member PATCH are independent and
    commute (membership upserts/deletes, flag merges, an unconditional merge on the group), and
    each is idempotent, so Entra's retry after a partial failure converges (docs/ENTRA.md §5)."""
    if len(parts) == 1:
        try:
            await parts[0]
            return [None]
        except Exception as exc:  # noqa: BLE001 - reported to the caller
            return [exc]
    gate = asyncio.Semaphore(PARALLEL_PARTS)

    async def run(part: Coroutine[Any, Any, None]) -> None:
        async with gate:
            await part

    results = await asyncio.gather(*(run(p) for p in parts), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, Exception):
            raise result  # cancellation and the like
    return [r if isinstance(r, BaseException) else None for r in results]


def _raise_first(outcomes: Sequence[BaseException | None]) -> None:
    """Raise the first part's failure, as a store error."""
    failure = next((o for o in outcomes if o is not None), None)
    if isinstance(failure, _OpFailed):
        raise failure.error from None
    if failure is not None:
        raise failure


# ---- the store --------------------------------------------------------------------------------


class TableStore(_TableOwner, DirectoryStore):
    """Users, groups and memberships in the ``{prefix}directory`` table (``docs/table-layout.md``).

    Versions are derived from the entities' ETags, which every write, including a membership
    merge, changes. Create one per process (:meth:`from_settings`) and share it: it holds one
    HTTP connection pool, and remembers the entities it last read (:data:`RECENT_ENTITIES`) so
    that a read-modify-write (PATCH) whose ``if_version`` matches needs no second read: the
    write is ETag-guarded, so a stale memory only costs a retry, never a lost update.
    """

    def __init__(
        self,
        service: TableServiceClient,
        prefix: str = "scim",
        *,
        owns_client: bool = False,
        credential: AsyncTokenCredential | None = None,
        unique_attributes: Mapping[str, frozenset[str]] = DEFAULT_UNIQUE_ATTRIBUTES,
    ) -> None:
        super().__init__(service, f"{prefix}directory", owns_client=owns_client, credential=credential)
        self._recent: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._prefix = prefix
        self._unique = unique_attributes

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        per_call_policies: Sequence[SansIOHTTPPolicy[Any, Any]] | None = None,
        **client_options: Any,
    ) -> TableStore:
        """A store on a new service client built from ``settings`` (see :func:`service_client`)."""
        service, credential = service_client(settings, per_call_policies=per_call_policies, **client_options)
        return cls(service, settings.table_prefix, owns_client=True, credential=credential)

    @property
    def service_client(self) -> TableServiceClient:
        """The shared service client (one connection pool per process), for the app's other tables."""
        return self._service

    def tenant_registry(self) -> TableTenantRegistry:
        """A :class:`TableTenantRegistry` sharing this store's client (closing it is this store's job)."""
        return TableTenantRegistry(self._service, self._prefix)

    def _remember(self, pk: str, rk: str, entity: Any) -> None:
        """Keep the last entities read (bounded LRU), for :meth:`replace` to skip its read."""
        self._recent[(pk, rk)] = entity
        self._recent.move_to_end((pk, rk))
        while len(self._recent) > RECENT_ENTITIES:
            self._recent.popitem(last=False)

    # ---- reads ----

    async def _read(self, pk: str, rk: str, select: list[str] | None = None) -> Any:
        return await _io(lambda: self._table.get_entity(pk, rk, select=select, **_TIMEOUT))

    async def _read_or_none(self, pk: str, rk: str, select: list[str] | None = None) -> Any:
        try:
            return await self._read(pk, rk, select)
        except ResourceNotFound:
            return None

    async def _range(self, pk: str, prefix: str, select: list[str] | None = None) -> list[Any]:
        """Every row whose RowKey starts with ``prefix`` (one query; pages of up to 1,000)."""
        lo, hi = keys.prefix_range(prefix)

        async def query() -> list[Any]:
            pager = self._table.query_entities(
                _FILTER_RANGE, parameters={"pk": pk, "lo": lo, "hi": hi}, select=select, **_TIMEOUT
            )
            return [row async for row in pager]

        return await _io(query)

    async def _members(self, pk: str, group_id: str) -> tuple[Member, ...]:
        prefix = keys.membership_prefix(group_id)
        rows = await self._range(pk, prefix, select=["RowKey", "type", "display"])
        return tuple(
            Member(keys.id_from_key(row["RowKey"], prefix), row.get("type") or "User", row.get("display") or None)
            for row in rows
        )

    # ---- writes ----

    async def _submit(self, ops: Sequence[_Op]) -> Sequence[Mapping[str, Any]]:
        """One entity-group transaction; a failed one raises :class:`_OpFailed` naming the operation.

        A transaction whose request or response was lost (connection refused or reset, read
        timeout: azure-core does not retry a POST for those) is sent again, at most
        :data:`SUBMIT_ATTEMPTS` times with back-off, inside the operation's budget. Sending one
        twice is safe: every transaction of this store either is idempotent (membership upserts,
        flag merges) or fails on its first operation if the earlier attempt committed, and the
        caller recognises that (``_OpFailed.retried``): the insert of a fresh resource id (409,
        see :meth:`create`), an ETag-guarded write of the resource (412/404: read again).
        """
        retried = False
        for attempt in range(1, SUBMIT_ATTEMPTS + 1):
            try:
                return await _io(lambda: self._send(ops))
            except _OpFailed as failed:
                failed.retried = retried
                raise
            except StoreUnavailable as exc:
                delay = 0.2 * 2 ** (attempt - 1) * random.uniform(0.5, 1.0)
                lost = isinstance(exc.__cause__, (ServiceRequestError, ServiceResponseError))
                if not lost or attempt == SUBMIT_ATTEMPTS or _remaining() <= delay:
                    raise
                retried = True
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _send(self, ops: Sequence[_Op]) -> Sequence[Mapping[str, Any]]:
        if len(ops) == 1 and ops[0].kind == "update":
            # One update (a PATCH that moves no index row: Entra's disable): the same atomic,
            # guarded write without a $batch envelope, whose multipart encoding costs the most CPU.
            try:
                return [dict(await self._table.update_entity(ops[0].entity, **ops[0].options, **_TIMEOUT))]
            except HttpResponseError as exc:
                raise _OpFailed(ops[0], store_error(exc, ops[0]), exc.status_code) from exc
        try:
            return await submit_transaction(self._table, [op.as_tuple() for op in ops], **_TIMEOUT)
        except TableTransactionError as exc:
            op = ops[exc.index] if 0 <= exc.index < len(ops) else None
            raise _OpFailed(op, store_error(exc, op), exc.status_code) from exc

    def _check_terms(self, resource_type: ResourceKind, index: IndexTerms) -> None:
        """Unique terms must be of the attributes :meth:`lookup` reads from the unique index."""
        extra = set(index.unique) - self._unique.get(resource_type, frozenset())
        if extra:
            raise ValueError(f"{resource_type} attributes {sorted(extra)} are not configured as unique")

    async def _unknown(self, pk: str, members: Sequence[Member], failed: _Op | None) -> UnknownMembers:
        """Which of ``members`` do not exist (error path only: one concurrent point read each)."""
        found = await asyncio.gather(
            *(self._read_or_none(pk, keys.resource_key(m.type, m.value), ["RowKey"]) for m in members)
        )
        ids = [m.value for m, entity in zip(members, found, strict=True) if entity is None]
        if not ids and failed is not None:
            ids = [failed.subject]
        return UnknownMembers(ids)

    # ---- DirectoryStore ----

    @_budgeted
    async def create(
        self,
        tenant: str,
        resource_type: ResourceKind,
        doc: dict[str, Any],
        index: IndexTerms,
        members: Sequence[Member] = (),
    ) -> StoredResource:
        """RFC 7644 §3.3: one transaction with the resource, its index rows and the members that fit.

        A taken unique key fails the transaction (UniquenessViolation); so does an unknown member
        (UnknownMembers, listing every unknown id). Members beyond the transaction's 100
        operations are added with :meth:`add_members`; if that fails the new group is deleted
        again, so the create still happens entirely or not at all (when storage fails so that
        the delete fails too, the group stays, complete with its index rows and consistent
        memberships of the members added so far: the client's retry gets 409 and, like after a
        lost response, finds it by ``displayName`` and PATCHes its members).

        The transaction's first operation inserts a fresh id: if it fails with 409, an earlier
        attempt of this same transaction (sent again after a lost response, by :meth:`_submit`
        or azure-core) committed, and the create succeeded.
        """
        check_members_allowed(resource_type, members)
        self._check_terms(resource_type, index)
        await self._ready()
        pk = keys.partition_key(tenant)
        wanted = dedupe_members(members)
        id, now = new_id(), utc_now()
        entity = _resource_entity(pk, resource_type, id, doc, index, now, now, {})
        ops = [_Op("create", entity, role="resource"), *_index_ops(pk, resource_type, id, index)]
        room = max(0, (MAX_TRANSACTION_OPS - len(ops)) // 2)
        flag = keys.group_flag(id) or ""
        ops += [op for m in wanted[:room] for op in _link_ops(pk, id, flag, m, now)]
        try:
            version = (await self._submit(ops))[0]["etag"]
        except _OpFailed as failed:
            if isinstance(failed.error, UnknownMembers):
                raise await self._unknown(pk, wanted, failed.op) from None
            if not (failed.op is ops[0] and failed.status == 409):
                raise failed.error from None
            version = await self._created_before(pk, entity, failed.error)
        if wanted[room:]:
            version = await self._add_rest(tenant, pk, id, wanted[room:])
        group_members = tuple(sorted(wanted, key=lambda m: m.value)) if resource_type == "Group" else None
        return _stored(resource_type, entity, version, group_members)

    async def _created_before(self, pk: str, entity: Mapping[str, Any], error: StoreError) -> str:
        """The version of ``entity`` if an earlier attempt of its create committed it, else ``error``."""
        stored = await self._read_or_none(pk, entity["RowKey"])
        if stored is None or stored.get("created") != entity["created"] or _doc_from(stored) != _doc_from(entity):
            raise error
        return _etag(stored)

    async def _add_rest(self, tenant: str, pk: str, group_id: str, rest: Sequence[Member]) -> str:
        """Add the members that did not fit the create transaction; undo the create on failure."""
        try:
            await self.add_members(tenant, group_id, rest)
        except Exception:
            with contextlib.suppress(StoreError):
                await self.delete(tenant, "Group", group_id)
            raise
        return _etag(await self._read(pk, keys.resource_key("Group", group_id), ["RowKey"]))

    @_budgeted
    async def get(self, tenant: str, resource_type: ResourceKind, id: str, *, members: bool = False) -> StoredResource:
        """RFC 7644 §3.4.1: one point read (``groups`` come from the ``m_*`` flags), plus a
        range query of ``m|{id}|`` for a group's members, run concurrently."""
        await self._ready()
        pk = keys.partition_key(tenant)
        rk = keys.resource_key(resource_type, id)
        if not (members and resource_type == "Group"):
            entity = await self._read(pk, rk)
            self._remember(pk, rk, entity)
            return _stored(resource_type, entity, _etag(entity))
        entity, group_members = await asyncio.gather(self._read(pk, rk), self._members(pk, id), return_exceptions=True)
        if isinstance(entity, BaseException):
            raise entity
        if isinstance(group_members, BaseException):
            raise group_members
        return _stored(resource_type, entity, _etag(entity), group_members)

    @_budgeted
    async def replace(
        self,
        tenant: str,
        resource_type: ResourceKind,
        id: str,
        doc: dict[str, Any],
        index: IndexTerms,
        *,
        if_version: str | None = None,
    ) -> StoredResource:
        """RFC 7644 §3.5.1: point read + one ETag-guarded transaction (entity REPLACE, index rows moved).

        The REPLACE drops tombstoned group flags. Without ``if_version``, a concurrent change
        (typically a membership merge) makes it read and try again.
        """
        self._check_terms(resource_type, index)
        await self._ready()
        pk = keys.partition_key(tenant)
        rk = keys.resource_key(resource_type, id)
        remembered = self._recent.pop((pk, rk), None) if if_version is not None else None
        for _ in range(MAX_ATTEMPTS):
            if remembered is not None and _version(_etag(remembered)) == if_version:
                current, remembered = remembered, None
            else:
                current = await self._read(pk, rk)
            etag = _etag(current)
            if if_version is not None and if_version != _version(etag):
                raise VersionMismatch(id)
            old_terms = _terms_from(current)
            if (
                len(_index_ops(pk, resource_type, id, index, old_terms)) >= MAX_TRANSACTION_OPS
                and old_terms.multi - index.multi
            ):
                # More index rows change than one transaction holds: shed old rows first (guarded), then retry.
                try:
                    etag, _ = await self._shed(pk, resource_type, id, etag, old_terms, index)
                except _OpFailed as failed:
                    if isinstance(failed.error, VersionMismatch) and if_version is None:
                        continue
                    raise failed.error from None
                if if_version is not None:
                    if_version = _version(etag)  # our own change
                continue
            entity = _resource_entity(
                pk, resource_type, id, doc, index, current["created"], utc_now(), _live_flags(current)
            )
            guard = _Op("update", entity, {"mode": UpdateMode.REPLACE, **_guarded(etag)}, "guard")
            try:
                results = await self._submit([guard, *_index_ops(pk, resource_type, id, index, _terms_from(current))])
            except _OpFailed as failed:
                if not (isinstance(failed.error, VersionMismatch) and failed.op is guard):
                    raise failed.error from None
                if failed.retried:  # resent after a lost answer: did the first one commit?
                    now = await self._read(pk, rk)
                    if _doc_from(now) == doc and _terms_from(now) == index:
                        return _stored(resource_type, now, _etag(now))
                if if_version is not None:
                    raise failed.error from None
                continue
            return _stored(resource_type, entity, results[0]["etag"])
        raise StoreUnavailable(f"{resource_type} {id} kept changing; try again")

    @_budgeted
    async def delete(self, tenant: str, resource_type: ResourceKind, id: str, *, if_version: str | None = None) -> None:
        """RFC 7644 §3.6 and rule 8: the resource, its index rows and every membership naming it.

        A user in a few groups: point read + one transaction guarded by the user's ETag (which
        every membership merge changes, so a concurrent add makes the delete retry and clean
        it up too). A group also range-queries its members. Memberships that do not fit the
        final transaction go first, in transactions that also merge the resource (guarded).
        """
        await self._ready()
        pk = keys.partition_key(tenant)
        rk = keys.resource_key(resource_type, id)
        expected = if_version
        for _ in range(MAX_ATTEMPTS):
            current = await self._read(pk, rk)
            if expected is not None and expected != _version(_etag(current)):
                raise VersionMismatch(id)
            try:
                await self._delete_once(pk, resource_type, id, current)
                return
            except _OpFailed as failed:
                if failed.committed or failed.retried:
                    expected = None  # our own partial cleanup (or a lost-then-resent write) changed the version
                if (
                    failed.retried
                    and failed.op is not None
                    and failed.op.role == "guard"
                    and failed.op.kind == "delete"
                    and isinstance(failed.error, ResourceNotFound)
                ):
                    return  # the final transaction was resent after a lost response: it had committed
                if isinstance(failed.error, VersionMismatch) and failed.op is not None and failed.op.role == "guard":
                    if expected is not None:
                        raise failed.error from None
                    continue
                if isinstance(failed.error, (ResourceNotFound, UnknownMembers, VersionMismatch)):
                    continue  # a membership or member vanished concurrently: read again
                raise failed.error from None
        raise StoreUnavailable(f"{resource_type} {id} kept changing; try again")

    async def _delete_once(self, pk: str, resource_type: ResourceKind, id: str, current: Any) -> None:
        rk = keys.resource_key(resource_type, id)
        now = utc_now()
        units: list[tuple[str | None, list[_Op]]] = [
            (keys.group_flag(group_id), _parent_ops(pk, group_id, id, now)) for group_id in _groups(current)
        ]
        if resource_type == "Group":
            flag = keys.group_flag(id) or ""
            units += [(None, _unlink_ops(pk, id, flag, m, now)) for m in await self._members(pk, id)]
        terms = _terms_from(current)
        etag, committed = _etag(current), False
        try:
            while len(_index_ops(pk, resource_type, id, _NO_TERMS, terms)) > FINAL_INDEX_OPS and terms.multi:
                etag, terms = await self._shed(pk, resource_type, id, etag, terms, _NO_TERMS)
                committed = True
            index_ops = _index_ops(pk, resource_type, id, _NO_TERMS, terms)
            fit = max(0, (MAX_TRANSACTION_OPS - 1 - len(index_ops)) // 2)
            split = max(0, len(units) - fit)
            for batch in _batches(units[:split], MEMBERS_PER_TRANSACTION):
                own_flags = {flag: False for flag, _ in batch if flag}
                guard = _merge(_row(pk, rk, lastModified=now, **own_flags), "guard", etag=etag)
                results = await self._submit([guard, *(op for _, ops in batch for op in ops)])
                etag, committed = results[0]["etag"], True
            final = _delete(pk, rk, "guard", etag=etag)
            await self._submit([final, *index_ops, *(op for _, ops in units[split:] for op in ops)])
        except _OpFailed as failed:
            failed.committed = committed
            raise

    async def _shed(
        self, pk: str, resource_type: ResourceKind, id: str, etag: str, terms: IndexTerms, keep: IndexTerms
    ) -> tuple[str, IndexTerms]:
        """One transaction guarded by the resource's ETag: delete up to 99 of its non-unique index
        rows that ``keep`` does not hold, and record the terms left on the resource, so that its
        recorded terms always name exactly its rows (a failure after it leaves a consistent
        resource, findable by fewer values until it is written again). Returns the new ETag and
        the terms left."""
        doomed = frozenset(sorted(terms.multi - keep.multi)[: MAX_TRANSACTION_OPS - 1])
        left = IndexTerms(unique=dict(terms.unique), multi=terms.multi - doomed)
        guard = _merge(_row(pk, keys.resource_key(resource_type, id), idx=_terms_json(left)), "guard", etag=etag)
        results = await self._submit([guard, *_index_ops(pk, resource_type, id, left, terms)])
        return str(results[0]["etag"]), left

    @_budgeted
    async def lookup(self, tenant: str, resource_type: ResourceKind, attribute: str, key: str) -> list[StoredResource]:
        """RFC 7644 §3.4.2.2 ``eq`` on an indexed attribute (Entra's ``userName eq``, ``externalId eq``).

        Unique attribute: point read of ``U|{attr}|{key}`` then of the resource (2 round trips).
        Otherwise: range query on ``X|U|{attr}|{key}|`` then the candidates (:meth:`_resources`).
        """
        await self._ready()
        pk = keys.partition_key(tenant)
        wanted = await self._candidate_ids(pk, resource_type, (), ((attribute, key),), (), None)
        return await self._resources(pk, resource_type, wanted)

    @_budgeted
    async def lookup_prefix(
        self, tenant: str, resource_type: ResourceKind, attribute: str, prefix: str, *, limit: int
    ) -> list[StoredResource]:
        """RFC 7644 §3.4.2.2 ``sw`` on an indexed attribute: range queries on the index rows
        (verbatim keys, and hashed long keys for the caller to re-check), then the candidates
        (:meth:`_resources`)."""
        await self._ready()
        pk = keys.partition_key(tenant)
        wanted = await self._candidate_ids(pk, resource_type, (), (), ((attribute, prefix),), limit)
        return await self._resources(pk, resource_type, wanted)

    @_budgeted
    async def find(
        self,
        tenant: str,
        resource_type: ResourceKind,
        *,
        ids: Iterable[str] = (),
        terms: Iterable[tuple[str, str]] = (),
        prefixes: Iterable[tuple[str, str]] = (),
        limit: int,
    ) -> list[StoredResource]:
        """A filter's index plan as one operation, within one :data:`STORAGE_BUDGET`: the index
        queries of every term and prefix run concurrently, then the candidates are read
        (:meth:`_resources`). ``userName eq``: 2 storage calls; ``userName sw ""`` on 300
        users: 2 index range queries + 1 page of user rows."""
        await self._ready()
        pk = keys.partition_key(tenant)
        wanted = await self._candidate_ids(pk, resource_type, tuple(ids), tuple(terms), tuple(prefixes), limit)
        return await self._resources(pk, resource_type, wanted)

    async def _candidate_ids(
        self,
        pk: str,
        resource_type: ResourceKind,
        ids: Sequence[str],
        terms: Sequence[tuple[str, str]],
        prefixes: Sequence[tuple[str, str]],
        limit: int | None,
    ) -> list[str]:
        """The ids the index rows of ``terms`` and ``prefixes`` name, after ``ids``: each unique
        term one point read, each other term or prefix one range query per 1,000 rows; at most
        ``limit + 1`` ids (all of them when ``limit`` is None)."""
        unique = self._unique.get(resource_type, frozenset())
        cap = None if limit is None else limit + 1

        async def by_term(attribute: str, key: str) -> list[str]:
            if attribute in unique:
                row = await self._read_or_none(pk, keys.unique_key(resource_type, attribute, key), ["id"])
                return [row["id"]] if row is not None else []
            prefix = keys.multi_prefix(resource_type, attribute, key)
            return [keys.id_from_key(r["RowKey"], prefix) for r in await self._index_rows(pk, prefix, ["RowKey"], cap)]

        async def by_prefix(row_prefix: str, is_unique: bool) -> list[str]:
            rows = await self._index_rows(pk, row_prefix, ["RowKey", "id"] if is_unique else ["RowKey"], cap)
            if is_unique:
                return [row["id"] for row in rows]
            return [keys.decode_value(row["RowKey"].rsplit(keys.SEPARATOR, 1)[1]) for row in rows]

        queries = [by_term(attribute, key) for attribute, key in terms]
        for attribute, prefix in prefixes:
            is_unique = attribute in unique
            verbatim, hashed = keys.index_prefixes(resource_type, attribute, prefix, is_unique)
            queries.append(by_prefix(verbatim, is_unique))
            if not hashed.startswith(verbatim):  # sw "": the verbatim range holds the hashed rows too
                queries.append(by_prefix(hashed, is_unique))
        found: dict[str, None] = dict.fromkeys(ids)
        for result in await _gather(queries):
            found.update(dict.fromkeys(result))
        wanted = list(found)
        return wanted if cap is None else wanted[:cap]

    async def _index_rows(self, pk: str, prefix: str, select: list[str], cap: int | None) -> list[Any]:
        """Rows whose RowKey starts with ``prefix``, at most ``cap`` (one storage call per 1,000)."""
        lo, hi = keys.prefix_range(prefix)

        async def query() -> list[Any]:
            rows: list[Any] = []
            pager = self._table.query_entities(
                _FILTER_RANGE,
                parameters={"pk": pk, "lo": lo, "hi": hi},
                select=select,
                results_per_page=MAX_PAGE,
                **_TIMEOUT,
            )
            async for row in pager:
                rows.append(row)
                if cap is not None and len(rows) >= cap:
                    break
            return rows

        return await _io(query)

    async def _resources(self, pk: str, resource_type: ResourceKind, ids: Sequence[str]) -> list[StoredResource]:
        """The resources of ``ids`` that exist, in storage calls O(pages), not O(ids).

        Up to :data:`POINT_READS` ids: concurrent point reads (Entra's lookups: one). More:
        pages of the ``u|``/``g|`` rows from the lowest wanted RowKey to the highest, keeping
        the wanted ones, until all are found; when a page holds fewer than
        :data:`SPARSE_PAGE_HITS` of them (a few matches scattered over a large tenant), the
        rest are point-read instead.
        """
        wanted = sorted({keys.resource_key(resource_type, i) for i in ids})
        if len(wanted) <= POINT_READS:
            return await self._point_reads(pk, resource_type, wanted)
        remaining = set(wanted)
        found: list[Any] = []
        pager: Any = self._table.query_entities(
            _FILTER_SPAN,
            parameters={"pk": pk, "lo": wanted[0], "hi": wanted[-1]},
            results_per_page=MAX_PAGE,
            **_TIMEOUT,
        ).by_page()
        while remaining:
            rows = await _io(lambda: _next_page(pager))
            if rows is None:
                break
            hits = [row for row in rows if row["RowKey"] in remaining]
            found += hits
            remaining.difference_update(row["RowKey"] for row in hits)
            if pager.continuation_token is None:
                break
            if rows and len(hits) < SPARSE_PAGE_HITS and remaining:
                rest = await self._point_reads(pk, resource_type, sorted(remaining))
                return await _converted(resource_type, found) + rest
        return await _converted(resource_type, found)

    async def _point_reads(self, pk: str, resource_type: ResourceKind, row_keys: Sequence[str]) -> list[StoredResource]:
        found = await _gather([self._read_or_none(pk, rk) for rk in row_keys])
        return [_stored(resource_type, e, _etag(e)) for e in found if e is not None]

    @_budgeted
    async def scan(
        self, tenant: str, resource_type: ResourceKind, *, cursor: str | None = None, limit: int = 100
    ) -> Page:
        """One page of ``u|``/``g|`` rows in RowKey order (RFC 7644 §3.4.2.4); ``cursor`` is the last RowKey's id part."""
        if limit < 1:
            raise ValueError("limit must be positive")
        await self._ready()
        prefix = keys.resource_prefix(resource_type)
        lo, hi = keys.prefix_range(prefix)
        params = {"pk": keys.partition_key(tenant), "lo": prefix + cursor if cursor else lo, "hi": hi}
        pager: Any = self._table.query_entities(
            _FILTER_AFTER, parameters=params, results_per_page=min(limit, MAX_PAGE), **_TIMEOUT
        ).by_page()
        rows = await _io(lambda: _first_rows(pager))
        more = bool(rows) and pager.continuation_token is not None
        next_cursor = rows[-1]["RowKey"][len(prefix) :] if more else None
        return Page(await _converted(resource_type, rows), next_cursor)

    @_budgeted
    async def add_members(self, tenant: str, group_id: str, members: Sequence[Member]) -> None:
        """RFC 7644 §3.5.2.1: ⌈k/49⌉ transactions, whatever the size of the group (rule 7)."""
        await self._ready()
        pk = keys.partition_key(tenant)
        flag = await self._group_flag(pk, group_id, members)
        wanted = dedupe_members(members)
        if any(m.value == group_id for m in wanted):  # not its own member (error path: check it exists)
            await self._read(pk, keys.resource_key("Group", group_id), ["RowKey"])
            raise UnknownMembers([group_id])
        batches = list(_batches(wanted, MEMBERS_PER_TRANSACTION))
        outcomes = await _in_parallel([self._add_batch(pk, group_id, flag, batch) for batch in batches])
        unknown = [
            (batch, outcome)
            for batch, outcome in zip(batches, outcomes, strict=True)
            if isinstance(outcome, _OpFailed) and isinstance(outcome.error, UnknownMembers)
        ]
        if unknown:
            raise await self._unknown(pk, [m for batch, _ in unknown for m in batch], unknown[0][1].op) from None
        _raise_first(outcomes)

    async def _group_flag(self, pk: str, group_id: str, members: Sequence[Any]) -> str:
        """The group's flag name; ResourceNotFound if the id cannot name a group (or, with no
        members to change, if the group does not exist)."""
        flag = keys.group_flag(group_id)
        if flag is None:
            raise ResourceNotFound(f"Group {group_id}")
        if not members:
            await self._read(pk, keys.resource_key("Group", group_id), ["RowKey"])
        return flag

    async def _add_batch(self, pk: str, group_id: str, flag: str, batch: Sequence[Member]) -> None:
        """One transaction: merge on the group + per member an upsert and a flag merge."""
        for _ in range(MAX_ATTEMPTS):
            now = utc_now()
            target = _merge(_row(pk, keys.resource_key("Group", group_id), lastModified=now), "target", group_id)
            try:
                await self._submit([target, *(op for m in batch for op in _link_ops(pk, group_id, flag, m, now))])
                return
            except _OpFailed as failed:
                if not (
                    isinstance(failed.error, EntityTooLarge) and failed.op is not None and failed.op.role == "member"
                ):
                    raise
                member = next(m for m in batch if m.value == failed.op.subject)
                await self._compact(pk, member, flag)
        raise StoreUnavailable(f"Group {group_id}: members kept changing; try again")

    async def _compact(self, pk: str, member: Member, flag: str) -> None:
        """The member hit the 252-property limit: drop its tombstones, or TooManyGroups at 200 live groups."""
        try:
            entity = await self._read(pk, keys.resource_key(member.type, member.value))
        except ResourceNotFound:
            raise UnknownMembers([member.value]) from None
        live = _live_flags(entity)
        if flag not in live and len(live) >= MAX_GROUPS_PER_RESOURCE:
            raise TooManyGroups(member.value)
        kept = {name: value for name, value in entity.items() if not keys.flag_group_id(name) or value is True}
        with contextlib.suppress(VersionMismatch):
            await _io(
                lambda: self._table.update_entity(kept, mode=UpdateMode.REPLACE, **_guarded(_etag(entity)), **_TIMEOUT)
            )

    @_budgeted
    async def remove_members(self, tenant: str, group_id: str, member_ids: Sequence[str]) -> None:
        """RFC 7644 §3.5.2.2: ⌈k/49⌉ transactions; non-members and deleted members are skipped.

        A member is first assumed to be a user; if its membership row exists but no user entity
        does, it is retried as a group.
        """
        await self._ready()
        pk = keys.partition_key(tenant)
        flag = await self._group_flag(pk, group_id, member_ids)
        pending = [Member(i) for i in dict.fromkeys(member_ids)]
        _raise_first(
            await _in_parallel(
                [self._remove_batch(pk, group_id, flag, list(b)) for b in _batches(pending, MEMBERS_PER_TRANSACTION)]
            )
        )

    async def _remove_batch(self, pk: str, group_id: str, flag: str, batch: list[Member]) -> None:
        """One transaction removing ``batch``; members that are not (or no longer) in the group
        make it fail, and are dropped before it is sent again.

        The first such failure in a batch of more than two reads the batch's membership rows
        (concurrently: one round trip of latency) and keeps only those that exist, with the
        member type they record. Without it, a batch of 49 members that a previous, interrupted
        attempt of the same PATCH had already removed (Entra retrying after a 503) would need 49
        transactions, one per absent member, and might never finish within the budget.
        """
        checked = len(batch) <= 2
        while batch:
            now = utc_now()
            target = _merge(_row(pk, keys.resource_key("Group", group_id), lastModified=now), "target", group_id)
            try:
                await self._submit([target, *(op for m in batch for op in _unlink_ops(pk, group_id, flag, m, now))])
                return
            except _OpFailed as failed:
                absent = isinstance(failed.error, (ResourceNotFound, UnknownMembers))
                if not checked and absent and failed.op is not None and failed.op.role in ("membership", "member"):
                    checked = True
                    batch = await self._memberships(pk, group_id, batch)
                    continue
                batch = _without_failed(batch, failed)

    async def _memberships(self, pk: str, group_id: str, batch: Sequence[Member]) -> list[Member]:
        """The members of ``batch`` that have a membership row in the group, typed as the row says."""
        rows = await asyncio.gather(
            *(self._read_or_none(pk, keys.membership_key(group_id, m.value), ["RowKey", "type"]) for m in batch)
        )
        return [
            Member(m.value, row.get("type") or "User") for m, row in zip(batch, rows, strict=True) if row is not None
        ]

    async def delete_tenant(self, tenant: str) -> None:
        """Delete every entity of the tenant's partition: pages of 1,000 RowKeys, each deleted by
        concurrent transactions of 100 deletes, until a query finds nothing.

        Resumable: a failure (raised once every transaction of the page has ended, none left in
        flight) leaves a partition that lacks some rows, and calling this again deletes the rest.
        """
        await self._ready()
        pk = keys.partition_key(tenant)
        stalls = 0
        while stalls < MAX_ATTEMPTS:
            pager: Any = self._table.query_entities(
                _FILTER_PARTITION, parameters={"pk": pk}, select=["RowKey"], results_per_page=MAX_PAGE, **_TIMEOUT
            ).by_page()
            rows = [row["RowKey"] for row in await _io(functools.partial(_first_rows, pager))]
            if not rows:
                return
            outcomes = await asyncio.gather(
                *(self._delete_rows(pk, b) for b in _batches(rows, MAX_TRANSACTION_OPS)), return_exceptions=True
            )
            failure = next((o for o in outcomes if isinstance(o, BaseException)), None)
            if failure is not None:
                raise failure
            stalls = 0 if any(outcomes) else stalls + 1
        raise StoreUnavailable(f"tenant {tenant} kept changing while being deleted")

    async def _delete_rows(self, pk: str, row_keys: Sequence[str]) -> bool:
        """One transaction of deletes; False if a row had gone already (the next query sees the rest)."""
        try:
            await self._submit([_delete(pk, rk) for rk in row_keys])
        except _OpFailed:
            return False
        return True


def _without_failed(batch: list[Member], failed: _OpFailed) -> list[Member]:
    """The batch of a member removal after the failure of one operation (see ``remove_members``).

    No membership row: not a member, dropped. No user entity: retried as a group, then dropped.
    The group itself missing: ResourceNotFound.
    """
    op = failed.op
    if op is None or op.role == "target" or not isinstance(failed.error, (ResourceNotFound, UnknownMembers)):
        raise failed.error
    rest = [m for m in batch if m.value != op.subject]
    if op.role == "member":
        failed_member = next(m for m in batch if m.value == op.subject)
        if failed_member.type == "User":
            rest.append(Member(failed_member.value, "Group"))
    return rest


async def _converted(resource_type: ResourceKind, rows: Sequence[Any]) -> list[StoredResource]:
    """``rows`` as resources, handing the event loop back every :data:`CONVERT_SLICE` seconds."""
    resources: list[StoredResource] = []
    started = time.perf_counter()
    for row in rows:
        resources.append(_stored(resource_type, row, _etag(row)))
        if time.perf_counter() - started >= CONVERT_SLICE:
            await asyncio.sleep(0)
            started = time.perf_counter()
    return resources


async def _next_page(pager: AsyncIterator[Any]) -> list[Any] | None:
    """The rows of the next page (one storage call), or None after the last one."""
    try:
        page = await pager.__anext__()
    except StopAsyncIteration:
        return None
    return [row async for row in page]


async def _gather(calls: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Run storage calls concurrently (each task inherits the operation's deadline); the first
    failure is raised once all have ended, so none is left running past the operation."""
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    results: list[T] = []
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
        results.append(outcome)
    return results


async def _first_rows(pager: AsyncIterator[Any]) -> list[Any]:
    """The rows of the first non-empty page (the service may return an empty page with a continuation)."""
    async for page in pager:
        rows = [row async for row in page]
        if rows or getattr(pager, "continuation_token", None) is None:
            return rows
    return []


# ---- tenants ----------------------------------------------------------------------------------


class TableTenantRegistry(_TableOwner, TenantRegistry):
    """Tenants in the ``{prefix}tenants`` table: PartitionKey ``tenant``, RowKey the name,
    properties ``tokenHash`` (SHA-256 hex), ``created``, ``notifyTo``/``notifyEnabled`` and,
    once ``tenant delete`` has begun, ``state`` = ``deleting`` (and no ``tokenHash``; a row
    without ``state`` is active). Every change after the insert is an update guarded by the
    ETag of the row it read (If-Match; 412 when the row changed in between)."""

    def __init__(
        self,
        service: TableServiceClient,
        prefix: str = "scim",
        *,
        owns_client: bool = False,
        credential: AsyncTokenCredential | None = None,
    ) -> None:
        super().__init__(service, f"{prefix}tenants", owns_client=owns_client, credential=credential)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        per_call_policies: Sequence[SansIOHTTPPolicy[Any, Any]] | None = None,
    ) -> TableTenantRegistry:
        """A registry on its own service client (prefer :meth:`TableStore.tenant_registry` to share one)."""
        service, credential = service_client(settings, per_call_policies=per_call_policies)
        return cls(service, settings.table_prefix, owns_client=True, credential=credential)

    async def create(self, name: str, token: str | None = None) -> str:
        """Insert the tenant row (atomic: an existing row makes the insert fail -> TenantExists)."""
        validate_tenant_name(name)
        await self._ready()
        token = token or new_token()
        entity = _row(_TENANT_PARTITION, name, tokenHash=hash_token(token), created=utc_now())

        sent = 0

        async def insert() -> None:
            nonlocal sent
            sent += 1
            try:
                await self._table.create_entity(entity, **_TIMEOUT)
            except ResourceExistsError:
                # After a resend, the row may be our own earlier insert: its token hash says so.
                if sent > 1:
                    stored = await self._table.get_entity(_TENANT_PARTITION, name, select=["tokenHash"], **_TIMEOUT)
                    if stored.get("tokenHash") == entity["tokenHash"]:
                        return
                raise TenantExists(name) from None

        await _io(lambda: resend_if_lost(insert))
        return token

    async def _read_row(self, name: str, select: list[str] | None = None) -> Any:
        """The tenant row (with its ETag in ``metadata``), or None."""
        try:
            return await _io(lambda: self._table.get_entity(_TENANT_PARTITION, name, select=select, **_TIMEOUT))
        except ResourceNotFound:
            return None

    async def _update_guarded(self, row: dict[str, Any], etag: str, mode: UpdateMode = UpdateMode.MERGE) -> None:
        """Update the row only if its ETag is still ``etag``: VersionMismatch (412) if it changed,
        ResourceNotFound if it is gone."""
        await _io(lambda: self._table.update_entity(row, mode=mode, **_guarded(etag), **_TIMEOUT))

    async def set_token(self, name: str, token: str | None = None) -> str:
        """Read the row, then merge the new ``tokenHash`` guarded by the ETag read.

        A 412 means another writer changed the row in between (a concurrent ``token regenerate``,
        a delete beginning): TokenConflict, unless the stored hash is already ours (our own write,
        resent by azure-core after a lost answer, had gone through). So the token returned is the
        one that works.
        """
        if not _is_tenant_name(name):
            raise TenantNotFound(name)
        await self._ready()
        current = await self._read_row(name, ["state"])
        if current is None:
            raise TenantNotFound(name)
        if (current.get("state") or ACTIVE) == DELETING:
            raise TenantDeleting(name)
        token = token or new_token()
        row = _row(_TENANT_PARTITION, name, tokenHash=hash_token(token))
        try:
            await self._update_guarded(row, _etag(current))
        except ResourceNotFound:
            raise TenantNotFound(name) from None
        except VersionMismatch:
            if await self.token_hash(name) == row["tokenHash"]:
                return token
            raise TokenConflict(name) from None
        return token

    async def token_hash(self, name: str) -> str | None:
        """One point read; None for an unknown (or impossible) name, or a tenant being deleted."""
        if not _is_tenant_name(name):
            return None
        await self._ready()
        entity = await self._read_row(name, ["tokenHash", "state"])
        if entity is None or (entity.get("state") or ACTIVE) == DELETING:
            return None
        return entity.get("tokenHash") or None

    async def state(self, name: str) -> str | None:
        """``active``, ``deleting`` or None (one point read)."""
        if not _is_tenant_name(name):
            return None
        await self._ready()
        entity = await self._read_row(name, ["state"])
        return None if entity is None else entity.get("state") or ACTIVE

    async def begin_delete(self, name: str) -> None:
        """Replace the row by one with ``state`` = ``deleting``, no ``tokenHash`` and digests off,
        guarded by the ETag read (read again and retried if the row changed in between)."""
        if not _is_tenant_name(name):
            raise TenantNotFound(name)
        await self._ready()
        for _ in range(MAX_ATTEMPTS):
            current = await self._read_row(name)
            if current is None:
                raise TenantNotFound(name)
            if (current.get("state") or ACTIVE) == DELETING:
                return
            row = _row(
                _TENANT_PARTITION,
                name,
                state=DELETING,
                deletingSince=utc_now(),
                created=current.get("created") or "",
                notifyTo=current.get("notifyTo") or "[]",
                notifyEnabled=False,
            )
            try:
                await self._update_guarded(row, _etag(current), UpdateMode.REPLACE)
                return
            except (VersionMismatch, ResourceNotFound):
                continue
        raise StoreUnavailable(f"tenant {name} kept changing while its delete began")

    async def delete(self, name: str) -> None:
        """Delete the row; a one-operation transaction, because a plain delete ignores a 404."""
        if not _is_tenant_name(name):
            raise TenantNotFound(name)
        await self._ready()
        try:
            await _io(
                lambda: submit_transaction(self._table, [("delete", _row(_TENANT_PARTITION, name), {})], **_TIMEOUT)
            )
        except ResourceNotFound:
            raise TenantNotFound(name) from None

    async def list(self) -> list[TenantInfo]:
        """Every tenant, in RowKey (= name) order."""
        await self._ready()

        async def query() -> list[TenantInfo]:
            pager = self._table.query_entities(
                _FILTER_PARTITION,
                parameters={"pk": _TENANT_PARTITION},
                select=["RowKey", "created", "notifyTo", "notifyEnabled", "state"],
                **_TIMEOUT,
            )
            return [
                TenantInfo(
                    row["RowKey"],
                    row.get("created", ""),
                    tuple(json.loads(row.get("notifyTo") or "[]")),
                    bool(row.get("notifyEnabled")),
                    row.get("state") or ACTIVE,
                )
                async for row in pager
            ]

        return await _io(query)

    async def set_notifications(self, name: str, recipients: Sequence[str], enabled: bool) -> None:
        """Merge ``notifyTo`` (JSON array) and ``notifyEnabled`` onto the tenant row, guarded by
        the ETag read (retried if the row changed in between); TenantDeleting once a delete began."""
        cleaned = validate_recipients(recipients)
        if not _is_tenant_name(name):
            raise TenantNotFound(name)
        await self._ready()
        row = _row(_TENANT_PARTITION, name, notifyTo=json.dumps(list(cleaned)), notifyEnabled=enabled)
        for _ in range(MAX_ATTEMPTS):
            current = await self._read_row(name, ["state"])
            if current is None:
                raise TenantNotFound(name)
            if (current.get("state") or ACTIVE) == DELETING:
                raise TenantDeleting(name)
            try:
                await self._update_guarded(row, _etag(current))
                return
            except ResourceNotFound:
                raise TenantNotFound(name) from None
            except VersionMismatch:
                continue
        raise StoreUnavailable(f"tenant {name} kept changing")


def _is_tenant_name(name: str) -> bool:
    try:
        validate_tenant_name(name)
    except ValueError:
        return False
    return True
