"""What the admin CLI does, as async functions (also used by ``make run`` and the tests).

Settings are the app's own (:class:`scim.settings.Settings`): in Azure, the Table endpoint
with DefaultAzureCredential; locally, ``local.settings.json`` values or, with nothing
configured, Azurite on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from dataclasses import dataclass
from pathlib import Path

from ..notify.notifier import RunResult
from ..provisioning_log import LogPage
from ..runtime import Runtime, build_runtime
from ..settings import Settings
from ..tenants import TenantExists, TenantInfo, validate_recipients, validate_tenant_name

__all__ = [
    "Credentials",
    "create_tenant",
    "delete_tenant",
    "ensure_tenant",
    "list_tenants",
    "load_settings",
    "notify_now",
    "read_log",
    "regenerate_token",
    "update_notifications",
]

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Credentials:
    """What an admin pastes into Entra's provisioning tab."""

    tenant: str
    url: str
    token: str

    def lines(self) -> str:
        """The two lines, labelled as Entra's portal labels its fields."""
        return f"Tenant URL: {self.url}\nSecret Token: {self.token}"

    def to_json(self) -> str:
        return json.dumps({"tenant": self.tenant, "url": self.url, "token": self.token})


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """The app's settings: the environment first, then ``local.settings.json`` Values if present."""
    merged: dict[str, str] = {}
    local = PROJECT_ROOT / "local.settings.json"
    if local.is_file():
        try:
            values = json.loads(local.read_text()).get("Values", {})
            merged.update({k: str(v) for k, v in values.items()})
        except (OSError, ValueError):
            pass
    merged.update(os.environ if env is None else env)
    return Settings.from_env(merged)


async def _with_runtime(settings: Settings) -> Runtime:
    return build_runtime(settings)


async def create_tenant(
    settings: Settings, name: str, token: str | None = None, notify: Sequence[str] = ()
) -> Credentials:
    """Create a tenant (with failure digests to ``notify``, if given); raises TenantExists."""
    validate_tenant_name(name)
    recipients = validate_recipients(notify)
    runtime = await _with_runtime(settings)
    try:
        secret = await runtime.tenants.create(name, token)
        if recipients:
            await runtime.tenants.set_notifications(name, recipients, True)
    finally:
        await runtime.close()
    return Credentials(name, settings.tenant_url(name), secret)


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
        return await runtime.tenants.info(name)
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


async def notify_now(settings: Settings, name: str) -> RunResult:
    """Send the tenant's failure digest now (what the timer does), with a short lag."""
    from ..notify.notifier import Notifier
    from ..timer_adapter import build_notifier

    runtime = await _with_runtime(settings)
    notifier: Notifier = build_notifier(runtime, lag=timedelta(seconds=5))
    try:
        return await notifier.run_tenant(await runtime.tenants.info(name))
    finally:
        if notifier.sender is not None:
            await notifier.sender.close()
        await runtime.close()


async def regenerate_token(settings: Settings, name: str, token: str | None = None) -> Credentials:
    """Replace a tenant's token: the previous one fails on the next request (401)."""
    runtime = await _with_runtime(settings)
    try:
        secret = await runtime.tenants.set_token(name, token)
    finally:
        await runtime.close()
    return Credentials(name, settings.tenant_url(name), secret)


async def ensure_tenant(settings: Settings, name: str, token: str) -> Credentials:
    """Make sure ``name`` exists and holds ``token`` (what ``make run`` does for the dev tenant)."""
    validate_tenant_name(name)
    runtime = await _with_runtime(settings)
    try:
        try:
            await runtime.tenants.create(name, token)
        except TenantExists:
            await runtime.tenants.set_token(name, token)
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


async def delete_tenant(settings: Settings, name: str) -> None:
    """Delete a tenant: its token stops working at once, then its users and groups are removed."""
    from ..notify.state import NotifyStateStore

    runtime = await _with_runtime(settings)
    try:
        await runtime.tenants.delete(name)
        await runtime.store.delete_tenant(name)
        await runtime.log.purge(name, datetime.now(UTC) + timedelta(days=1))
        await NotifyStateStore(runtime.log.service_client, settings.table_prefix).forget(name)
    finally:
        await runtime.close()
