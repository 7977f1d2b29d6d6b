"""What the admin CLI does, as async functions (also used by ``make run`` and the tests).

Settings are the app's own (:class:`scim.settings.Settings`): in Azure, the Table endpoint
with DefaultAzureCredential; locally, ``local.settings.json`` values or, with nothing
configured, Azurite on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..runtime import Runtime, build_runtime
from ..settings import Settings
from ..tenants import TenantExists, TenantInfo, validate_tenant_name

__all__ = [
    "Credentials",
    "create_tenant",
    "delete_tenant",
    "ensure_tenant",
    "list_tenants",
    "load_settings",
    "regenerate_token",
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


async def create_tenant(settings: Settings, name: str, token: str | None = None) -> Credentials:
    """Create a tenant; raises TenantExists."""
    validate_tenant_name(name)
    runtime = await _with_runtime(settings)
    try:
        secret = await runtime.tenants.create(name, token)
    finally:
        await runtime.close()
    return Credentials(name, settings.tenant_url(name), secret)


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
    runtime = await _with_runtime(settings)
    try:
        await runtime.tenants.delete(name)
        await runtime.store.delete_tenant(name)
    finally:
        await runtime.close()
