"""The store contract (``tests/store_contract.py``, ``tests/event_contract.py``) on :class:`~scim.store.memory.MemoryStore`,
and the tenant registry contract on :class:`~scim.store.memory.MemoryTenantRegistry`."""

from __future__ import annotations

import secrets

import pytest

from scim.store.memory import MemoryStore, MemoryTenantRegistry
from tests.credentials_contract import TenantCredentialsContract
from tests.event_contract import EventContract, MembershipEventContract
from tests.store_contract import DirectoryStoreContract, TenantRegistryContract


class TestMemoryStore(DirectoryStoreContract, EventContract, MembershipEventContract):
    @pytest.fixture
    def store(self) -> MemoryStore:
        return MemoryStore()

    @pytest.fixture
    def tenant(self) -> str:
        return "t" + secrets.token_hex(6)


class TestMemoryTenantRegistry(TenantRegistryContract, TenantCredentialsContract):
    @pytest.fixture
    def registry(self) -> MemoryTenantRegistry:
        return MemoryTenantRegistry()
