"""The Table service client, the time bounds of every storage call, and table creation.

- :func:`service_client`: the process's ``TableServiceClient`` (managed identity with
  ``SCIM_TABLE_ENDPOINT``, else a connection string: Azurite by default), with bounded timeouts
  and retries (:data:`CLIENT_OPTIONS`) and the environment's proxy only when one is set;
- the time budget: :func:`_budgeted` gives a store operation one deadline
  (:data:`STORAGE_BUDGET`), :func:`_io` runs each storage call within it, with Azure errors
  mapped to store errors (:mod:`scim.store.azure_errors`);
- :func:`resend_if_lost` and :func:`create_table`: a lost POST sent again, a table created once
  (or taken as provisioned: in Azure ``infra/`` creates every table, ``docs/table-layout.md``
  "Tables");
- :class:`_TableOwner`: one table on a shared service client, the base of the directory
  (:mod:`scim.store.tables`) and the tenant registry (:mod:`scim.store.tenant_registry`).

Timeouts and retries are azure-core's (learn.microsoft.com: "Azure Core client library for
Python", "Configurations"); the bounds below explain the numbers.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Self, TypeVar

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ServiceRequestError, ServiceResponseError
from azure.data.tables.aio import TableClient, TableServiceClient

from scim.store.azure_errors import _mapped
from scim.store.base import StoreUnavailable
from scim.store.operations import _OpFailed
from scim.store.roundtrips import client_kwargs
from scim.telemetry import instruments
from scim.telemetry.storage import unavailable_reason

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.core.pipeline.policies import SansIOHTTPPolicy

    from scim.settings import Settings

__all__ = [
    "CLIENT_OPTIONS",
    "READ_TIMEOUT",
    "STORAGE_BUDGET",
    "create_table",
    "proxy_configured",
    "resend_if_lost",
    "service_client",
]

# azure-core logs every storage request (URL and headers) at INFO, and our RowKeys carry
# userNames and emails: whatever process makes storage calls (the app, make run, the admin
# CLI), those lines stay below the level anyone logs at.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)

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
    # No x-ms-client-request-id per request: azure-core makes it with uuid1 (a lock and a clock
    # read), 2 % of the service's event loop in the Entra replay (docs/performance.md), and this
    # app never correlates storage requests by it (storage's own x-ms-request-id remains).
    "auto_request_id": False,
}
"""azure-core options of the Table client (:func:`service_client`); callers' keywords win."""
SUBMIT_ATTEMPTS = 2  # a transaction is sent at most this often when its request or response is lost
_FILTER_PARTITION = "PartitionKey eq @pk"

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
    the budget runs out: the call is cancelled, and its connection closed).

    Every storage failure leaves through here, and is counted once in the
    ``scim.storage.unavailable`` metric with its reason (:func:`_count_unavailable`)."""
    remaining = _remaining()
    if remaining <= 0:
        instruments.storage_unavailable("timeout")
        raise StoreUnavailable("storage did not answer in time")
    try:
        async with asyncio.timeout(remaining):
            with _mapped():
                return await call()
    except TimeoutError as exc:
        instruments.storage_unavailable("timeout")
        raise StoreUnavailable(f"storage did not answer within {STORAGE_BUDGET:g} s") from exc
    except (StoreUnavailable, _OpFailed) as exc:
        _count_unavailable(exc)
        raise


def _count_unavailable(exc: StoreUnavailable | _OpFailed) -> None:
    """Count a failed storage call in ``scim.storage.unavailable`` (a failed operation of a
    transaction only when it failed for storage's sake, a contention such as "kept changing"
    never: those are raised by the stores, not by a call), once per exception."""
    error = exc.error if isinstance(exc, _OpFailed) else exc
    if not isinstance(error, StoreUnavailable) or getattr(exc, "_scim_counted", False):
        return
    setattr(exc, "_scim_counted", True)  # noqa: B010 - an attribute of our own on a caught exception
    instruments.storage_unavailable(unavailable_reason(exc))


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
    otherwise the connection string (Settings requires one of the two). Returns the client and
    the credential it owns (to close), if any.

    Timeouts and retries are bounded (:data:`CLIENT_OPTIONS`, overridable by ``kwargs``), so a
    storage that refuses or hangs fails a call in seconds, not in azure-core's default minutes.
    """
    kwargs = {**CLIENT_OPTIONS, "use_env_settings": proxy_configured(), **kwargs}
    kwargs.update(client_kwargs(per_call_policies))
    if settings.table_endpoint:
        from azure.identity.aio import DefaultAzureCredential  # slow import, only when used

        credential = DefaultAzureCredential()
        return TableServiceClient(settings.table_endpoint, credential=credential, **kwargs), credential
    if settings.table_connection_string is None:  # Settings refuses this; a model_construct() one may not
        raise ValueError("no table storage: neither SCIM_TABLE_ENDPOINT nor SCIM_TABLE_CONNECTION_STRING is set")
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


class _TenantsTableOwner(_TableOwner):
    """A record kind of the ``{prefix}tenants`` table (tenants, application keys, webhook
    endpoints: ``docs/table-layout.md``, "Tables"), on a shared service client or its own."""

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
    ) -> Self:
        """One on its own service client (the admin CLI; the app shares its runtime's client)."""
        service, credential = service_client(settings, per_call_policies=per_call_policies)
        return cls(service, settings.table_prefix, owns_client=True, credential=credential)
