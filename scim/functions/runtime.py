"""The process-wide objects a Functions worker reuses across invocations.

One Table client (and so one connection pool) per process, created on first use:
creating clients per request would cost a TLS handshake and an AAD token each time.
Tests swap in their own runtime with :func:`use_runtime`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scim.core.service import Limits, ScimService
from scim.provisioning_log import LogWriter, ProvisioningLog
from scim.store.base import DirectoryStore
from scim.tenants import TenantRegistry

if TYPE_CHECKING:
    from scim.settings import Settings  # pydantic-settings: imported on first use (get_runtime), not at cold start

__all__ = ["Runtime", "get_runtime", "reset_runtime", "use_runtime"]


@dataclass
class Runtime:
    """What handling a request needs: settings, the SCIM service (with its store) and the tenants."""

    settings: Settings
    service: ScimService
    tenants: TenantRegistry
    log: ProvisioningLog
    log_writer: LogWriter

    @property
    def store(self) -> DirectoryStore:
        return self.service.store

    async def close(self) -> None:
        await self.log_writer.drain()
        await self.service.store.close()
        await self.tenants.close()


_runtime: Runtime | None = None
_lock: asyncio.Lock | None = None


def build_runtime(settings: Settings, *, per_call_policies: Sequence[Any] | None = None) -> Runtime:
    """A runtime on Azure Table Storage (or Azurite) as the settings say; one client for both tables.

    ``per_call_policies`` are azure-core policies that see every storage request (tests count
    round trips with :class:`scim.store.roundtrips.RoundTripCounter`).
    """
    from scim.store.tables import TableStore

    store = TableStore.from_settings(settings, per_call_policies=per_call_policies)
    log = ProvisioningLog(store.service_client, settings.table_prefix)
    service = ScimService(store, Limits(max_body_bytes=settings.max_body_bytes))
    return Runtime(settings, service, store.tenant_registry(), log, LogWriter(log))


async def get_runtime() -> Runtime:
    """The process's runtime, built from the environment on first use."""
    global _runtime, _lock
    if _runtime is not None:
        return _runtime
    if _lock is None:
        _lock = asyncio.Lock()
    async with _lock:
        if _runtime is None:
            from scim.settings import Settings

            _runtime = build_runtime(Settings.from_env())  # SettingsError naming a bad variable
    return _runtime


def use_runtime(runtime: Runtime | None) -> None:
    """Replace the process's runtime (tests, the local host)."""
    global _runtime
    _runtime = runtime


def reset_runtime() -> None:
    """Forget the runtime; the next request builds a new one from the environment."""
    use_runtime(None)
