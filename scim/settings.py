"""Application settings, read from the environment (Functions app settings, local.settings.json).

Every name here is listed in ``local.settings.sample.json`` and set by ``infra/``; a test
cross-checks the three. With nothing configured, the app talks to Azurite on 127.0.0.1.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["AZURITE_CONNECTION_STRING", "Settings"]

# Azurite's documented, public development account (not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_connection_string(host: str = "127.0.0.1", table_port: int = 10002) -> str:
    """The connection string of a local Azurite Table service."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"TableEndpoint=http://{host}:{table_port}/{AZURITE_ACCOUNT};"
    )


AZURITE_CONNECTION_STRING = azurite_connection_string()


@dataclass(frozen=True)
class Settings:
    """The settings the SCIM app reads.

    - ``SCIM_TABLE_ENDPOINT``: Table service URL; used with DefaultAzureCredential (managed
      identity in Azure; ``AZURE_CLIENT_ID`` picks a user-assigned identity). Wins when set.
    - ``SCIM_TABLE_CONNECTION_STRING``: a connection string (local development, Azurite).
      When neither is set, Azurite on 127.0.0.1:10002 is used.
    - ``SCIM_TABLE_PREFIX``: prefix of the table names (default ``scim``).
    - ``SCIM_PUBLIC_BASE_URL``: the app's public base URL, used in Tenant URLs and ``location``
      (default ``http://127.0.0.1:{PORT}``, PORT defaulting to 7071).
    - ``SCIM_MAX_BODY_BYTES``: largest accepted request body (default 1 MiB; larger gets 413).
    """

    table_endpoint: str | None
    table_connection_string: str
    table_prefix: str
    public_base_url: str
    max_body_bytes: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        port = env.get("PORT", "7071")
        base = env.get("SCIM_PUBLIC_BASE_URL") or f"http://127.0.0.1:{port}"
        return cls(
            table_endpoint=env.get("SCIM_TABLE_ENDPOINT") or None,
            table_connection_string=env.get("SCIM_TABLE_CONNECTION_STRING") or AZURITE_CONNECTION_STRING,
            table_prefix=env.get("SCIM_TABLE_PREFIX", "scim"),
            public_base_url=base.rstrip("/"),
            max_body_bytes=int(env.get("SCIM_MAX_BODY_BYTES", str(1024 * 1024))),
        )

    def tenant_url(self, tenant: str) -> str:
        """The Tenant URL an admin pastes into Entra for ``tenant``."""
        return f"{self.public_base_url}/scim/{tenant}"
