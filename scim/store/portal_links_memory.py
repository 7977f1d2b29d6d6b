"""Setup links in process memory (tests, local runs): the double of
:class:`~scim.store.portal_links_tables.TableSetupLinkRegistry`, with its behaviour.

Two maps, as the Table registry keeps two rows: links by tenant and id (with the hash and a
version that every change bumps), and ``(tenant, id)`` by hash for the links that can still be
found by their secret (open or expired; a used or revoked link's hash is forgotten, as its
Table row is deleted). Both change together, with no ``await`` in between.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from scim.portal.links import (
    SetupLink,
    SetupLinkRegistry,
    StoredLink,
    checked_create,
    current_time,
    new_link_id,
    new_link_secret,
    prunable,
    redeemable,
)
from scim.tenants import hash_token, validate_tenant_name

__all__ = ["MemorySetupLinkRegistry"]


class MemorySetupLinkRegistry(SetupLinkRegistry):
    """Links by tenant, hashes to links; never the secrets themselves."""

    def __init__(self) -> None:
        self._links: dict[str, dict[str, tuple[SetupLink, str, int]]] = {}  # tenant -> id -> (link, hash, version)
        self._by_hash: dict[str, tuple[str, str]] = {}  # hash -> (tenant, id): open or expired links only

    async def create(
        self, tenant: str, expires: timedelta, created_by: str, *, now: datetime | None = None
    ) -> tuple[str, SetupLink]:
        """See :meth:`SetupLinkRegistry.create`."""
        created, until = checked_create(tenant, expires, created_by, now)
        links = self._links.setdefault(tenant, {})
        for link_id, (link, _, _) in list(links.items()):
            if prunable(link, created):
                self._forget(tenant, link_id)
        while (link_id := new_link_id()) in links:
            pass
        secret = new_link_secret()
        digest = hash_token(secret)
        link = SetupLink(link_id, tenant, created, until, created_by)
        links[link_id] = (link, digest, 1)
        self._by_hash[digest] = (tenant, link_id)
        return secret, link

    def _forget(self, tenant: str, link_id: str) -> None:
        _, digest, _ = self._links[tenant].pop(link_id)
        self._by_hash.pop(digest, None)

    async def list(self, tenant: str) -> list[SetupLink]:
        """The tenant's links, newest first."""
        validate_tenant_name(tenant)
        links = [link for link, _, _ in self._links.get(tenant, {}).values()]
        return sorted(links, key=lambda link: (link.created, link.id), reverse=True)

    async def revoke_all(self, tenant: str, *, now: datetime | None = None) -> int:
        """Mark every open link revoked and forget its hash; see :meth:`SetupLinkRegistry.revoke_all`."""
        validate_tenant_name(tenant)
        when = current_time(now)
        links = self._links.get(tenant, {})
        revoked = 0
        for link_id, (link, digest, version) in list(links.items()):
            if redeemable(link, when):
                links[link_id] = (dataclasses.replace(link, revoked=when), digest, version + 1)
                self._by_hash.pop(digest, None)
                revoked += 1
        return revoked

    async def purge(self, tenant: str) -> None:
        """Forget every link of the tenant."""
        validate_tenant_name(tenant)
        for link_id in list(self._links.get(tenant, {})):
            self._forget(tenant, link_id)
        self._links.pop(tenant, None)

    async def lookup(self, key_hash: str) -> StoredLink | None:
        """The open or expired link with that hash, or None."""
        found = self._by_hash.get(key_hash)
        if found is None:
            return None
        link, digest, version = self._links[found[0]][found[1]]
        return StoredLink(link, digest, str(version))

    async def _claim(self, found: StoredLink, used_by: str, now: datetime) -> SetupLink | None:
        """Mark the link used if it is still the version read; forget its hash."""
        current = self._links.get(found.link.tenant, {}).get(found.link.id)
        if current is None or str(current[2]) != found.version:
            return None
        link, digest, version = current
        used = dataclasses.replace(link, used=now, used_by=used_by)
        self._links[link.tenant][link.id] = (used, digest, version + 1)
        self._by_hash.pop(digest, None)
        return used
