"""The delivery state contract (``tests/delivery_state_contract.py``) on
:class:`~scim.store.delivery_state_memory.MemoryDeliveryStateStore`."""

from __future__ import annotations

import pytest

from scim.store.delivery_state_memory import MemoryDeliveryStateStore
from tests.delivery_state_contract import DeliveryStateContract


class TestMemoryDeliveryStateStore(DeliveryStateContract):
    @pytest.fixture
    def states(self) -> MemoryDeliveryStateStore:
        return MemoryDeliveryStateStore()
