"""What the admin CLI does, as async functions (also used by ``make run`` and the tests).

Settings are the app's own (:class:`scim.settings.Settings`): in Azure, the Table endpoint
with DefaultAzureCredential; locally, the ``local.settings.json`` that ``make run`` writes (or a
copy of ``local.settings.sample.json``). Without table storage it stops with a SettingsError.

Deleting a tenant (:func:`delete_tenant`) is resumable: its token is revoked first (the record
is marked ``deleting``), then its directory partition, provisioning log and digest state are
purged, and its record is removed last. Interrupted anywhere, running it again finishes the
job, also for data left without a record (by an interrupted delete of an older version).
Until then, :func:`create_tenant` refuses the name, so a new tenant never adopts old data.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.data.tables import TableTransactionError

from scim.credentials import DEFAULT, Expiry, SecretToken, format_epoch
from scim.functions.runtime import Runtime, build_runtime
from scim.notify.notifier import RunResult
from scim.portal.audit import AuditEntry, AuditTrail
from scim.provisioning_log import LogPage
from scim.settings import Settings
from scim.store import keys
from scim.store.base import StoreError, StoreUnavailable
from scim.store.transactions import submit_transaction
from scim.tenants import (
    ACTIVE,
    DELETING,
    TenantDeleting,
    TenantExists,
    TenantInfo,
    TenantNotFound,
    check_token_strength,
    validate_recipients,
    validate_tenant_name,
)

__all__ = [
    "Credentials",
    "DeleteInterrupted",
    "create_tenant",
    "create_tenant_on",
    "delete_tenant",
    "delete_tenant_on",
    "ensure_tenant",
    "list_tenants",
    "load_settings",
    "notify_now",
    "read_log",
    "record_cli_audit",
    "regenerate_token",
    "set_token_lifetime",
    "update_notifications",
]

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Credentials:
    """What an admin pastes into Entra's provisioning tab, and which token it is."""

    tenant: str
    url: str
    token: str
    token_id: str | None = None
    expires: str | None = None
    """When the token stops working (RFC 3339), or None: never."""

    @classmethod
    def issued(cls, tenant: str, url: str, token: str, record: SecretToken | None) -> Credentials:
        return cls(tenant, url, token, record.id if record else None, format_epoch(record.ends) if record else None)

    def lines(self) -> str:
        """The two lines, labelled as Entra's portal labels its fields."""
        return f"Tenant URL: {self.url}\nSecret Token: {self.token}"

    def details(self) -> str:
        """The token's id and expiry, for the operator (``token list`` shows them again)."""
        return f"Token id: {self.token_id or '?'}, expires: {self.expires or 'never'}"

    def to_json(self) -> str:
        """``tenant create``, ``token regenerate`` and ``token rotate`` print this with ``--json``."""
        return json.dumps(
            {
                "tenant": self.tenant,
                "url": self.url,
                "token": self.token,
                "token_id": self.token_id,
                "expires": self.expires,
            }
        )


CLI_ACTOR = "cli"
"""Who the audit trail names for what the admin CLI does."""


async def record_cli_audit(trail: AuditTrail | None, tenant: str, action: str, **detail: str) -> None:
    """Record what the admin CLI did to ``tenant`` in its audit trail (the portal shows it);
    ``trail`` None (a test's bare registry) records nothing. Never a secret in ``detail``."""
    if trail is not None:
        await trail.record(AuditEntry(tenant, CLI_ACTOR, action, detail))


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """The app's settings: the environment first, then ``local.settings.json`` Values if present
    (``make run`` writes it from ``local.settings.sample.json`` when missing). An empty variable
    counts as unset, as for the app, so it does not hide the file's value.

    Raises :class:`~scim.settings.SettingsError` (one line for the operator) when a value is not
    usable, when ``local.settings.json`` cannot be read, or when neither gives table storage.
    """
    from scim.settings import SettingsError

    merged: dict[str, str] = {}
    local = PROJECT_ROOT / "local.settings.json"
    if local.is_file():
        try:
            values = json.loads(local.read_text(encoding="utf-8-sig")).get("Values") or {}
            merged.update({k: str(v) for k, v in values.items() if v is not None})
        except (OSError, ValueError, AttributeError) as exc:
            raise SettingsError(f"{local} is not readable settings ({exc.__class__.__name__}: {exc})") from None
    merged.update({k: v for k, v in (os.environ if env is None else env).items() if v != ""})
    return Settings.from_env(merged)


class DeleteInterrupted(Exception):
    """``tenant delete`` stopped before the end (a storage error); the token is revoked already,
    and running the delete again finishes it. ``str()`` is the message for the operator."""

    def __init__(self, name: str, cause: BaseException) -> None:
        super().__init__(
            f"the delete of tenant {name!r} was interrupted ({cause.__class__.__name__}); its token is revoked, "
            f"but some of its data remains: run `python -m scim.admin tenant delete {name}` again to finish it"
        )
        self.name = name


async def _with_runtime(settings: Settings) -> Runtime:
    return build_runtime(settings)


async def _has_rows(table: Any, partition: str) -> bool:
    """Whether the partition holds a row (a query for one key; False if the table is missing)."""
    query = table.query_entities(
        "PartitionKey eq @pk", parameters={"pk": partition}, select=["RowKey"], results_per_page=1
    )
    try:
        async for _ in query:
            return True
    except ResourceNotFoundError:
        return False
    return False


def _directory_table(runtime: Runtime, settings: Settings) -> Any:
    return runtime.table_service.get_table_client(f"{settings.table_prefix}directory")


def _log_table(runtime: Runtime, settings: Settings) -> Any:
    return runtime.table_service.get_table_client(f"{settings.table_prefix}log")


_FAR_FUTURE = datetime(9000, 1, 1, tzinfo=UTC)


async def _has_directory_rows(runtime: Runtime, settings: Settings, name: str) -> bool:
    """Whether the tenant's directory partition holds a row (in memory: the store forgets a
    tenant's data at once, :meth:`~scim.store.base.DirectoryStore.delete_tenant`)."""
    if runtime.table_service is None:
        return False
    return await _has_rows(_directory_table(runtime, settings), keys.partition_key(name))


async def _has_log_rows(runtime: Runtime, settings: Settings, name: str) -> bool:
    if runtime.table_service is None:  # the memory runtime: through the log's contract
        return bool((await runtime.log.page(name, limit=1)).entries)
    return await _has_rows(_log_table(runtime, settings), name)


async def _purge_log(runtime: Runtime, settings: Settings, name: str) -> None:
    if runtime.table_service is None:
        await runtime.log.purge(name, _FAR_FUTURE)
    else:
        await _purge_partition(_log_table(runtime, settings), name)


async def _data_left(runtime: Runtime, settings: Settings, name: str) -> list[str]:
    """What data of a tenant named ``name`` is stored (six cheap reads, in parallel)."""
    directory, log, digest, deliveries, links, audit = await asyncio.gather(
        _has_directory_rows(runtime, settings, name),
        _has_log_rows(runtime, settings, name),
        runtime.states.exists(name),
        _has_deliveries(runtime, name),
        runtime.portal_links.list(name),
        runtime.audit.page(name, limit=1),
    )
    return [
        what
        for what, there in (
            ("users and groups", directory),
            ("provisioning log", log),
            ("digest state", digest),
            ("webhook delivery state", deliveries),
            ("portal setup links", bool(links)),
            ("audit trail", bool(audit.entries)),
        )
        if there
    ]


async def _has_deliveries(runtime: Runtime, name: str) -> bool:
    state = await runtime.deliveries.load(name)
    return bool(state.cursors or state.lanes or state.lease_owner)


async def _create_fresh(
    runtime: Runtime, settings: Settings, name: str, token: str | None, expires: int | None = None
) -> str:
    """Create the tenant unless a record or data of that name exists: TenantExists for an active
    tenant; TenantDeleting for one being deleted or data left by an unfinished delete."""
    state = await runtime.tenants.state(name)
    if state == DELETING:
        raise TenantDeleting(name)
    if state is not None:
        raise TenantExists(name)
    if await _data_left(runtime, settings, name):
        raise TenantDeleting(name)
    try:
        return await runtime.tenants.create(name, token, expires)
    except TenantExists:
        if await runtime.tenants.state(name) == DELETING:
            raise TenantDeleting(name) from None
        raise


async def create_tenant(
    settings: Settings,
    name: str,
    token: str | None = None,
    notify: Sequence[str] = (),
    expires: int | None = None,
    token_lifetime: int | None = None,
) -> Credentials:
    """Create a tenant (with failure digests to ``notify``, if given) and its first token, which
    expires after ``expires`` seconds (None: never); ``token_lifetime`` is the tenant's default
    lifetime of later tokens (None: they do not expire unless told).

    Raises TenantExists; TenantDeleting while a tenant of that name is being deleted or its data
    is still stored (``tenant delete NAME`` finishes the delete); WeakToken (a ValueError) for a
    supplied ``token`` under 128 bits (:func:`scim.tenants.check_token_strength`).
    """
    validate_tenant_name(name)
    if token is not None:
        check_token_strength(token)
    validate_recipients(notify)
    runtime = await _with_runtime(settings)
    try:
        created = await create_tenant_on(runtime, name, token, notify, expires, token_lifetime)
        await record_cli_audit(
            runtime.audit, name, "tenant.created", token=created.token_id or "?", expires=created.expires or "never"
        )
        return created
    finally:
        await runtime.close()


async def create_tenant_on(
    runtime: Runtime,
    name: str,
    token: str | None = None,
    notify: Sequence[str] = (),
    expires: int | None = None,
    token_lifetime: int | None = None,
) -> Credentials:
    """:func:`create_tenant` on the stores of ``runtime`` (left open: the portal's runtime, or
    the memory one), with its checks and errors."""
    validate_tenant_name(name)
    if token is not None:
        check_token_strength(token)
    recipients = validate_recipients(notify)
    settings = runtime.settings
    secret = await _create_fresh(runtime, settings, name, token, expires)
    if recipients:
        await runtime.tenants.set_notifications(name, recipients, True)
    if token_lifetime is not None:
        await runtime.tenants.set_token_lifetime(name, token_lifetime)
    record = next(iter(await runtime.tenants.list_tokens(name)), None)
    return Credentials.issued(name, settings.tenant_url(name), secret, record)


async def update_notifications(
    settings: Settings, name: str, notify: Sequence[str] | None, enabled: bool | None
) -> TenantInfo:
    """Change who receives the tenant's failure digests, or switch them on or off."""
    runtime = await _with_runtime(settings)
    try:
        current = await runtime.tenants.info(name)
        recipients = validate_recipients(notify) if notify is not None else current.notify
        if enabled is None:
            enabled = bool(recipients) if notify is not None else current.notify_enabled
        await runtime.tenants.set_notifications(name, recipients, enabled)
        await record_cli_audit(
            runtime.audit,
            name,
            "notify.updated",
            recipients=", ".join(recipients)[:256],
            enabled="yes" if enabled else "no",
        )
        return await runtime.tenants.info(name)
    finally:
        await runtime.close()


async def set_token_lifetime(settings: Settings, name: str, lifetime: int | None) -> None:
    """The tenant's default lifetime of new Secret Tokens (seconds; None: they do not expire)."""
    runtime = await _with_runtime(settings)
    try:
        await runtime.tenants.set_token_lifetime(name, lifetime)
        await record_cli_audit(
            runtime.audit, name, "token.lifetime_set", lifetime="never" if lifetime is None else str(lifetime)
        )
    finally:
        await runtime.close()


async def read_log(
    settings: Settings,
    name: str,
    *,
    failures_only: bool = False,
    since: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> LogPage:
    """One page of the tenant's provisioning log, newest first."""
    runtime = await _with_runtime(settings)
    try:
        await runtime.tenants.info(name)
        return await runtime.log.page(name, failures_only=failures_only, since=since, limit=limit, cursor=cursor)
    finally:
        await runtime.close()


NOTIFY_NOW_LAG = timedelta(seconds=5)
"""``notify run-now`` leaves failures younger than this for the next run (the timer: 2 minutes)."""


async def notify_now(settings: Settings, name: str) -> RunResult:
    """Send the tenant's failure digest now (what the timer does), with a short lag."""
    from scim.notify.notifier import notifier_for

    runtime = await _with_runtime(settings)
    notifier = notifier_for(
        runtime.settings,
        runtime.tenants,
        runtime.log,
        states=runtime.states,
        lag=NOTIFY_NOW_LAG,
        webhooks=runtime.webhooks,
    )
    try:
        now = datetime.now(UTC)
        result = await notifier.run_tenant(await runtime.tenants.info(name), now)
        if result.outcome == "nothing" and not result.reason:
            # Failures younger than the lag are left for the next run, so that entries still being
            # written land first: say how many wait, rather than a bare "nothing".
            waiting = await runtime.log.page(
                name, failures_only=True, since=now - NOTIFY_NOW_LAG, until=now, limit=1000
            )
            if waiting.entries:
                count = f"{len(waiting.entries)}{'+' if waiting.cursor else ''}"
                reason = (
                    f"{count} failure(s) of the last {NOTIFY_NOW_LAG.seconds} s wait for the next run, so that"
                    " requests still being logged land first: run it again in a few seconds"
                )
                result = dataclasses.replace(result, reason=reason)
        return result
    finally:
        if notifier.sender is not None:
            await notifier.sender.close()
        await runtime.close()


async def regenerate_token(
    settings: Settings, name: str, token: str | None = None, expires: Expiry = DEFAULT
) -> Credentials:
    """Replace every token of the tenant by a new one: the others fail on their next request
    (401). ``expires``: seconds (None: never; not given: the tenant's default lifetime).

    The write is guarded by the version of the record read: TokenConflict if another change came
    in between (nothing written; the token that works is the other one); TenantDeleting while the
    tenant is being deleted; WeakToken for a supplied ``token`` under 128 bits.
    """
    from scim.admin import tokens

    runtime = await _with_runtime(settings)
    try:
        secret, record = await tokens.regenerate(runtime.tenants, name, expires, token)
    finally:
        await runtime.close()
    return Credentials.issued(name, settings.tenant_url(name), secret, record)


async def ensure_tenant(settings: Settings, name: str, token: str) -> Credentials:
    """Make sure ``name`` exists and holds ``token`` (what ``make run`` does for the dev tenant).

    ``token`` (``SCIM_DEV_TOKEN``) must carry 128 bits (:func:`scim.tenants.check_token_strength`,
    else WeakToken, a ValueError); a tenant being deleted, or its left data, is not taken over
    (TenantDeleting).
    """
    validate_tenant_name(name)
    check_token_strength(token)
    runtime = await _with_runtime(settings)
    try:
        try:
            await _create_fresh(runtime, settings, name, token)
        except TenantExists:
            if not await runtime.tenants.authenticate(name, token):  # a second make run keeps the token's id
                await runtime.tenants.set_token(name, token, expires=None)
    finally:
        await runtime.close()
    return Credentials(name, settings.tenant_url(name), token)


async def list_tenants(settings: Settings) -> list[TenantInfo]:
    """Every tenant, by name."""
    runtime = await _with_runtime(settings)
    try:
        return await runtime.tenants.list()
    finally:
        await runtime.close()


_PURGE_PAGE = 1000
_PURGE_ROUNDS = 3


async def _purge_partition(table: Any, partition: str) -> None:
    """Delete every row of a partition: pages of 1,000 keys, deleted by concurrent transactions
    of 100, until a query finds nothing (a missing table holds nothing)."""
    stalls = 0
    while stalls < 10:
        try:
            pager = table.query_entities(
                "PartitionKey eq @pk", parameters={"pk": partition}, select=["RowKey"], results_per_page=_PURGE_PAGE
            )
            rows: list[str] = []
            async for row in pager:
                rows.append(row["RowKey"])
                if len(rows) == _PURGE_PAGE:
                    break
        except ResourceNotFoundError:
            return
        if not rows:
            return
        batches = [rows[i : i + 100] for i in range(0, len(rows), 100)]
        outcomes = await asyncio.gather(
            *(
                submit_transaction(table, [("delete", {"PartitionKey": partition, "RowKey": rk}, {}) for rk in b])
                for b in batches
            ),
            return_exceptions=True,
        )
        progress = False
        for outcome in outcomes:
            if isinstance(outcome, TableTransactionError):
                continue  # a row had gone already (retention purge); the next query sees the rest
            if isinstance(outcome, BaseException):
                raise outcome
            progress = True
        stalls = 0 if progress else stalls + 1
    raise StoreUnavailable(f"partition {partition} kept changing while being purged")


async def _purge(runtime: Runtime, settings: Settings, name: str) -> None:
    """The tenant's directory partition, provisioning log, digest state, webhook delivery
    state, portal setup links and audit trail, in that order."""
    await runtime.store.delete_tenant(name)
    await _purge_log(runtime, settings, name)
    await runtime.states.forget(name)
    await runtime.deliveries.forget(name)
    await runtime.portal_links.purge(name)
    await runtime.audit.purge(name)


async def delete_tenant(settings: Settings, name: str) -> bool:
    """Delete a tenant and everything it owns, resumably (see the module docstring).

    1. revoke: the record is marked ``deleting`` without a token hash (ETag-guarded), so the
       token fails at once and the tenant's requests are neither served nor logged;
    2. purge the directory partition, the provisioning log and the digest state, and check that
       nothing came back (a request in flight when the token was revoked), purging again if so;
    3. remove the record.

    Returns True if this finished an earlier, interrupted delete (the record was ``deleting``
    already, or only data was left). Raises TenantNotFound if there is neither a record nor data,
    and DeleteInterrupted if storage failed after step 1 (running it again finishes the job).
    """
    validate_tenant_name(name)
    runtime = await _with_runtime(settings)
    try:
        return await delete_tenant_on(runtime, name)
    finally:
        await runtime.close()


async def delete_tenant_on(runtime: Runtime, name: str) -> bool:
    """:func:`delete_tenant` on the stores of ``runtime`` (left open: the portal's Delete tenant
    on the app's runtime; on the memory runtime the log is purged through its contract), with
    the same steps, result and errors."""
    validate_tenant_name(name)
    settings = runtime.settings
    state = await runtime.tenants.state(name)
    if state is None and not await _data_left(runtime, settings, name):
        raise TenantNotFound(name)
    if state is not None:
        await runtime.tenants.begin_delete(name)
    # In the app (the portal's Delete tenant), this process may hold log entries of the tenant's
    # last requests, written in the background: written after the purge, they would be data left
    # behind that keeps the name from being used again. Nobody authenticates any more: write them now.
    await runtime.log_writer.drain()
    try:
        for _ in range(_PURGE_ROUNDS):
            await _purge(runtime, settings, name)
            left = await _data_left(runtime, settings, name)
            if not left:
                break
        else:
            raise StoreUnavailable(f"data of tenant {name} kept coming back: {', '.join(left)}")
        if state is not None:
            with contextlib.suppress(TenantNotFound):  # a concurrent delete finished first
                await runtime.tenants.delete(name)
    except (StoreError, AzureError, OSError) as exc:
        raise DeleteInterrupted(name, exc) from exc
    return state != ACTIVE
