"""The contract every :class:`~scim.portal.secrets_store.PortalSecrets` passes (:mod:`scim.portal.secrets_store`).

A test module subclasses :class:`PortalSecretsContract` (named ``Test...``) and provides a
``secrets_store`` fixture (on empty storage) and ``another``, a second object on the same storage
(another instance of the app).
"""

from __future__ import annotations

import asyncio
from typing import Any

from scim.portal.secrets_store import SESSION_KEY_BYTES, PortalSecrets


class PortalSecretsContract:
    """The :class:`~scim.portal.secrets_store.PortalSecrets` behaviour; subclasses provide ``secrets_store`` and ``another``."""

    async def another(self, store: Any) -> PortalSecrets:
        raise NotImplementedError

    async def test_the_session_key_is_32_random_bytes_made_once(self, secrets_store: PortalSecrets) -> None:
        key = await secrets_store.session_key()
        assert isinstance(key, bytes) and len(key) == SESSION_KEY_BYTES == 32
        assert len(set(key)) > 8, "random bytes"
        assert await secrets_store.session_key() == key

    async def test_a_later_instance_reads_the_stored_key(self, secrets_store: PortalSecrets) -> None:
        key = await secrets_store.session_key()
        later = await self.another(secrets_store)
        try:
            assert await later.session_key() == key
        finally:
            await later.close()

    async def test_concurrent_first_calls_on_two_instances_agree(self, secrets_store: PortalSecrets) -> None:
        other = await self.another(secrets_store)
        try:
            keys = await asyncio.gather(*(s.session_key() for s in [secrets_store, other] * 3))
            assert len(set(keys)) == 1, keys
        finally:
            await other.close()
