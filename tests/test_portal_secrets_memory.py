"""The portal secrets contract (``tests/portal_secrets_contract.py``) on
:class:`~scim.store.portal_secrets_memory.MemoryPortalSecrets`."""

from __future__ import annotations

from typing import Any

import pytest

from scim.portal.secrets_store import PortalSecrets
from scim.store.portal_secrets_memory import MemoryPortalSecrets
from tests.portal_secrets_contract import PortalSecretsContract


class TestMemoryPortalSecrets(PortalSecretsContract):
    @pytest.fixture
    def secrets_store(self) -> MemoryPortalSecrets:
        return MemoryPortalSecrets()

    async def another(self, store: Any) -> PortalSecrets:
        return MemoryPortalSecrets(store.vault)


async def test_separate_memory_stores_have_separate_keys() -> None:
    assert await MemoryPortalSecrets().session_key() != await MemoryPortalSecrets().session_key()
