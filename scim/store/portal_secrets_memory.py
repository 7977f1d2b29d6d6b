"""The portal's secrets in process memory (tests, local runs): the double of
:class:`~scim.store.portal_secrets_tables.TablePortalSecrets`.

The key is kept in a dict that several objects may share (``vault``), as several instances
share one table: the first to store a key wins, the others read it.
"""

from __future__ import annotations

from scim.portal.secrets_store import PortalSecrets

__all__ = ["MemoryPortalSecrets"]

_SESSION = "session"


class MemoryPortalSecrets(PortalSecrets):
    """The session key in memory (``vault``: shared with another object, as one storage)."""

    def __init__(self, vault: dict[str, bytes] | None = None) -> None:
        self.vault: dict[str, bytes] = {} if vault is None else vault

    async def _stored_key(self, candidate: bytes) -> bytes:
        """Insert-if-absent, with no ``await`` in between."""
        return self.vault.setdefault(_SESSION, candidate)
