"""The setup link contract (``tests/portal_links_contract.py``) on
:class:`~scim.store.portal_links_memory.MemorySetupLinkRegistry`, and the pure parts of
:mod:`scim.portal.links` (formats, bounds, the setup URL)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from scim.portal.links import check_expiry, is_link_id, is_well_formed, new_link_id, new_link_secret
from scim.settings import Settings
from scim.store.portal_links_memory import MemorySetupLinkRegistry
from tests.portal_links_contract import SECRET_SHAPE, SetupLinkRegistryContract


class TestMemorySetupLinkRegistry(SetupLinkRegistryContract):
    @pytest.fixture
    def registry(self) -> MemorySetupLinkRegistry:
        return MemorySetupLinkRegistry()

    async def stored_text(self, registry: Any) -> str:
        return repr(vars(registry))


def test_secrets_and_ids_have_their_forms() -> None:
    secrets = {new_link_secret() for _ in range(100)}
    assert len(secrets) == 100 and all(SECRET_SHAPE.match(s) and is_well_formed(s) for s in secrets)
    assert all(is_link_id(new_link_id()) for _ in range(100))
    for bad in ("", "scimsl_", "scimak_" + "A" * 43, "scimsl_" + "A" * 42, "scimsl_" + "A" * 44, None, 42):
        assert not is_well_formed(bad)


def test_expiry_bounds() -> None:
    assert check_expiry(timedelta(minutes=5)) == timedelta(minutes=5)
    assert check_expiry(timedelta(days=30)) == timedelta(days=30)
    with pytest.raises(ValueError, match=r"5 minutes to 30 days \(5m \.\. 30d\)"):
        check_expiry(timedelta(days=31))


def test_the_setup_url_is_under_the_public_base_url() -> None:
    settings = Settings.from_env(
        {
            "SCIM_TABLE_CONNECTION_STRING": "UseDevelopmentStorage=true",
            "SCIM_PUBLIC_BASE_URL": "https://scim.example.com/",
        }
    )
    secret = new_link_secret()
    # the secret in the fragment, which browsers never send (no request log holds it)
    assert settings.portal_setup_url(secret) == f"https://scim.example.com/portal/setup#{secret}"
