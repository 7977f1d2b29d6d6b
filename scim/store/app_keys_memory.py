"""Application keys in process memory (tests, local runs): the double of
:class:`~scim.store.app_keys_tables.TableAppKeyRegistry`, with its behaviour.

Two maps, as the Table registry keeps two rows: by hash (what :meth:`lookup` reads) and by
name (uniqueness, ``list`` and ``revoke``); both change together, with no ``await`` in between.
"""

from __future__ import annotations

from scim.app_keys import (
    AppKeyExists,
    AppKeyInfo,
    AppKeyInUse,
    AppKeyNotFound,
    AppKeyRegistry,
    check_app_key,
    new_app_key,
    validate_key_name,
)
from scim.store import utc_now
from scim.tenants import hash_token

__all__ = ["MemoryAppKeyRegistry"]


class MemoryAppKeyRegistry(AppKeyRegistry):
    """Key hashes by name and names by hash, in memory; never the keys themselves."""

    def __init__(self) -> None:
        self._by_name: dict[str, tuple[str, str]] = {}  # name -> (key hash, created)
        self._by_hash: dict[str, str] = {}  # key hash -> name

    async def create(self, name: str, key: str | None = None) -> str:
        """Store the key's hash under ``name``; see :meth:`AppKeyRegistry.create`."""
        validate_key_name(name)
        key = new_app_key() if key is None else check_app_key(key)
        digest = hash_token(key)
        if name in self._by_name:
            raise AppKeyExists(name)
        if digest in self._by_hash:
            raise AppKeyInUse()
        self._by_name[name] = (digest, utc_now())
        self._by_hash[digest] = name
        return key

    async def list(self) -> list[AppKeyInfo]:
        """Every key's name and creation time, by name."""
        return [AppKeyInfo(name, created) for name, (_, created) in sorted(self._by_name.items())]

    async def revoke(self, name: str) -> None:
        """Forget the key; AppKeyNotFound if there is none of that name."""
        record = self._by_name.pop(name, None)
        if record is None:
            raise AppKeyNotFound(name)
        self._by_hash.pop(record[0], None)

    async def lookup(self, key_hash: str) -> tuple[str, str] | None:
        """``(name, hash)`` of the key with that hash, or None."""
        name = self._by_hash.get(key_hash)
        return None if name is None else (name, key_hash)
