"""The process-wide objects a Functions worker reuses across invocations.

One Table client (and so one connection pool) per process, created on first use:
creating clients per request would cost a TLS handshake and an AAD token each time.
Tests swap in their own runtime with :func:`use_runtime`.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scim.app_keys import AppKeyRegistry
from scim.core.service import Limits, ScimService
from scim.notify.state import NotifyStateStore
from scim.provisioning_log import LogWriter, ProvisioningLog
from scim.store.base import DirectoryStore
from scim.tenants import TenantRegistry
from scim.token_use import TokenUseRecorder

if TYPE_CHECKING:
    from scim.portal.audit import AuditTrail
    from scim.portal.links import SetupLinkRegistry
    from scim.portal.secrets_store import PortalSecrets
    from scim.settings import Settings  # pydantic-settings: imported on first use (get_runtime), not at cold start
    from scim.webhooks import WebhookRegistry
    from scim.webhooks.delivery import DeliveryEngine
    from scim.webhooks.delivery_state import DeliveryStateStore

__all__ = ["Runtime", "build_memory_runtime", "build_runtime", "get_runtime", "reset_runtime", "use_runtime"]


@dataclass
class Runtime:
    """What handling a request and the timers need: settings, the SCIM service (with its
    store), the tenants, the provisioning log (and its writer), the digest state, the
    application keys (the events feed's credential), the webhook endpoints and the state of
    their delivery (:meth:`delivery` is the process's delivery engine), and the portal's setup
    links, session key and audit trail (:mod:`scim.portal`)."""

    settings: Settings
    service: ScimService
    tenants: TenantRegistry
    log: ProvisioningLog
    log_writer: LogWriter
    states: NotifyStateStore
    app_keys: AppKeyRegistry
    webhooks: WebhookRegistry
    deliveries: DeliveryStateStore
    portal_links: SetupLinkRegistry
    portal_secrets: PortalSecrets
    audit: AuditTrail
    table_service: Any = None
    """The Table service client the runtime's tables share (None in memory): the admin CLI reads
    and purges tables' partitions with it."""

    _delivery: DeliveryEngine | None = None
    _token_use: TokenUseRecorder | None = None

    @property
    def store(self) -> DirectoryStore:
        return self.service.store

    def delivery(self) -> DeliveryEngine:
        """The process's webhook delivery engine (:mod:`scim.webhooks.delivery`), made on first use."""
        if self._delivery is None:
            from scim.notify.webhook_alerts import alert_disabled_endpoint
            from scim.webhooks.delivery import DeliveryEngine
            from scim.webhooks.sender import shared_sender

            sender = shared_sender(in_azure=self.settings.in_azure)

            async def on_disabled(endpoint: Any, tenant: str, reason: str) -> None:
                await alert_disabled_endpoint(self, endpoint, tenant, reason)

            self._delivery = DeliveryEngine(
                self.store,
                self.webhooks,
                self.deliveries,
                sender.send,
                settle_seconds=self.settings.events_settle_seconds,
                on_disabled=on_disabled,
            )
        return self._delivery

    def token_use(self) -> TokenUseRecorder:
        """The process's recorder of Secret Tokens' last use (:mod:`scim.token_use`)."""
        if self._token_use is None:
            self._token_use = TokenUseRecorder(self.tenants)
        return self._token_use

    async def close(self) -> None:
        if self._token_use is not None:
            await self._token_use.drain()
        if self._delivery is not None:
            from scim.webhooks.sender import close_shared_sender

            await self._delivery.close()
            await close_shared_sender()  # the process's webhook connections
        await self.log_writer.drain()
        await self.service.store.close()
        await self.tenants.close()
        await self.app_keys.close()
        await self.webhooks.close()
        await self.deliveries.close()
        await self.portal_links.close()
        await self.portal_secrets.close()
        await self.audit.close()
        signin = sys.modules.get("scim.portal.signin")  # the portal's sign-in, if it was used
        if signin is not None:
            await signin.close_http()  # the provider's HTTP session


_runtime: Runtime | None = None
_lock: asyncio.Lock | None = None


def build_runtime(settings: Settings, *, per_call_policies: Sequence[Any] | None = None) -> Runtime:
    """A runtime on Azure Table Storage (or Azurite) as the settings say; one client for every
    table (directory, tenants, provisioning log, digest state, application keys, webhooks and
    their delivery, the portal's links and secrets, the audit trail).

    ``per_call_policies`` are azure-core policies that see every storage request (tests count
    round trips with :class:`scim.store.roundtrips.RoundTripCounter`); the runtime adds
    :class:`scim.telemetry.storage.StorageCallCounter`, which counts each request's storage round
    trips (``scim.request.storage_calls``: one context-variable read per storage call).
    """
    from scim.notify.state_tables import TableNotifyStateStore
    from scim.provisioning_log.tables import TableProvisioningLog
    from scim.store.app_keys_tables import TableAppKeyRegistry
    from scim.store.audit_tables import TableAuditTrail
    from scim.store.delivery_state_tables import TableDeliveryStateStore
    from scim.store.portal_links_tables import TableSetupLinkRegistry
    from scim.store.portal_secrets_tables import TablePortalSecrets
    from scim.store.tables import TableStore
    from scim.store.webhooks_tables import TableWebhookRegistry
    from scim.telemetry.storage import StorageCallCounter

    policies = [*(per_call_policies or ()), StorageCallCounter()]
    store = TableStore.from_settings(settings, per_call_policies=policies)
    log = TableProvisioningLog(store.service_client, settings.table_prefix)
    states = TableNotifyStateStore(store.service_client, settings.table_prefix)
    app_keys = TableAppKeyRegistry(store.service_client, settings.table_prefix)
    service = ScimService(store, Limits(max_body_bytes=settings.max_body_bytes))
    return Runtime(
        settings,
        service,
        store.tenant_registry(),
        log,
        LogWriter(log),
        states,
        app_keys,
        TableWebhookRegistry(store.service_client, settings.table_prefix),
        TableDeliveryStateStore(store.service_client, settings.table_prefix),
        TableSetupLinkRegistry(store.service_client, settings.table_prefix),
        TablePortalSecrets(store.service_client, settings.table_prefix),
        TableAuditTrail(store.service_client, settings.table_prefix),
        table_service=store.service_client,
    )


def build_memory_runtime(settings: Settings) -> Runtime:
    """A runtime on the in-memory doubles of every store (directory, tenants, provisioning log,
    digest state, application keys, webhooks, portal, audit): tests and experiments; nothing
    outlives the process."""
    from scim.notify.state_memory import MemoryNotifyStateStore
    from scim.provisioning_log.memory import MemoryProvisioningLog
    from scim.store.app_keys_memory import MemoryAppKeyRegistry
    from scim.store.audit_memory import MemoryAuditTrail
    from scim.store.delivery_state_memory import MemoryDeliveryStateStore
    from scim.store.memory import MemoryStore, MemoryTenantRegistry
    from scim.store.portal_links_memory import MemorySetupLinkRegistry
    from scim.store.portal_secrets_memory import MemoryPortalSecrets
    from scim.store.webhooks_memory import MemoryWebhookRegistry

    log = MemoryProvisioningLog()
    service = ScimService(MemoryStore(), Limits(max_body_bytes=settings.max_body_bytes))
    return Runtime(
        settings,
        service,
        MemoryTenantRegistry(),
        log,
        LogWriter(log),
        MemoryNotifyStateStore(),
        MemoryAppKeyRegistry(),
        MemoryWebhookRegistry(),
        MemoryDeliveryStateStore(),
        MemorySetupLinkRegistry(),
        MemoryPortalSecrets(),
        MemoryAuditTrail(),
    )


async def get_runtime() -> Runtime:
    """The process's runtime, built from the environment on first use; telemetry is configured
    on the first call (:func:`scim.telemetry.setup.configure_once`: only when
    ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set), not when the app is imported."""
    global _runtime, _lock
    if not _telemetry_checked:
        _check_telemetry()
    if _runtime is not None:
        return _runtime
    if _lock is None:
        _lock = asyncio.Lock()
    async with _lock:
        if _runtime is None:
            from scim.settings import Settings

            _runtime = build_runtime(Settings.from_env())  # SettingsError naming a bad variable
    return _runtime


_telemetry_checked = False


def _check_telemetry() -> None:
    global _telemetry_checked
    _telemetry_checked = True
    from scim.telemetry.setup import configure_once

    configure_once()


def use_runtime(runtime: Runtime | None) -> None:
    """Replace the process's runtime (tests, the local host)."""
    global _runtime
    _runtime = runtime


def reset_runtime() -> None:
    """Forget the runtime; the next request builds a new one from the environment."""
    use_runtime(None)
