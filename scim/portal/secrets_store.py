"""The portal's own secrets: the key its sessions are signed and encrypted with.

The web layer needs a key no one else has to protect its session cookies. Rather than an app
setting (one more secret to make, store and rotate by hand in every deployment), the key is
made by the service itself: :meth:`PortalSecrets.session_key` returns :data:`SESSION_KEY_BYTES`
(32) bytes from the OS CSPRNG, generated on the very first call anywhere and stored; every
later call, on any instance, returns the stored key.

**Agreement.** The first call inserts its candidate only if no key is stored
(insert-if-absent: on Azure Tables an insert, which fails with 409 when the row exists), then
uses whatever is stored: of two instances starting at once, one inserts, the other reads the
winner's key, so both sign and check sessions with one key.

**Cached.** An object reads the key once and keeps it (the key never changes: rotating it
means deleting the stored row, which ends every session at the next cold start of each
instance). The key is stored as it is (it signs: a hash would sign nothing), in the storage
account that only the app's identity and the operators reach; whoever reads it can forge
portal sessions, as whoever reads a webhook's secret can forge deliveries
(:mod:`scim.webhooks`, "Secrets are stored as they are").

Implementations: memory (:mod:`scim.store.portal_secrets_memory`) and Azure Tables
(:mod:`scim.store.portal_secrets_tables`, a row in ``{prefix}portal``).
"""

from __future__ import annotations

import abc
import secrets

from scim.store.base import StoreError

__all__ = ["SESSION_KEY_BYTES", "PortalSecrets"]

SESSION_KEY_BYTES = 32
"""The session key's length: 256 bits."""


class PortalSecrets(abc.ABC):
    """Where the portal's session key lives (see the module docstring).

    Storage failures surface as :class:`scim.store.base.StoreError` (``StoreUnavailable``:
    the caller answers 503); nothing is cached until a call succeeds.
    """

    _session_key: bytes | None = None

    async def session_key(self) -> bytes:
        """The portal's session key: 32 bytes, the same on every instance and every call."""
        if self._session_key is None:
            key = await self._stored_key(secrets.token_bytes(SESSION_KEY_BYTES))
            if len(key) != SESSION_KEY_BYTES:
                raise StoreError(f"the stored portal session key is {len(key)} bytes, not {SESSION_KEY_BYTES}")
            self._session_key = key
        return self._session_key

    @abc.abstractmethod
    async def _stored_key(self, candidate: bytes) -> bytes:
        """Store ``candidate`` unless a key is stored already, and return the stored key."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release network resources."""
