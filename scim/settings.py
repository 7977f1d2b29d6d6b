"""Application settings, read from the environment (Functions app settings, local.settings.json).

Every name here is listed in ``local.settings.sample.json`` and set by ``infra/``; a test
cross-checks the three. With nothing configured, the app talks to Azurite on 127.0.0.1.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

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
LOCAL_SMTP_HOST = "127.0.0.1"  # make run's SMTP sink (scim/smtp_sink.py)
LOCAL_SMTP_PORT = 1025


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
    - ``NOTIFY_SCHEDULE``: NCRONTAB schedule of the failure digest timer (read by the Functions
      host as ``%NOTIFY_SCHEDULE%``; default every 10 minutes).
    - ``NOTIFY_FROM``: sender address of digests.
    - ``ACS_EMAIL_ENDPOINT``: Azure Communication Services endpoint; when set, digests are sent
      through ACS Email with DefaultAzureCredential (no keys).
    - ``SMTP_HOST``, ``SMTP_PORT`` (25), ``SMTP_STARTTLS`` (false), ``SMTP_USERNAME``,
      ``SMTP_PASSWORD``: an SMTP server, used when ``ACS_EMAIL_ENDPOINT`` is not set. Locally
      (neither ``SCIM_TABLE_ENDPOINT`` nor ``ACS_EMAIL_ENDPOINT`` set) the default is make run's
      SMTP sink on 127.0.0.1:1025.
    - ``LOG_RETENTION_DAYS``: days the provisioning log keeps entries (default 30).
    """

    table_endpoint: str | None
    table_connection_string: str = field(repr=False)  # may hold an account key
    table_prefix: str
    public_base_url: str
    max_body_bytes: int
    notify_from: str = "scim-notifications@localhost"
    acs_email_endpoint: str | None = None
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: str | None = field(default=None, repr=False)  # never in logs
    log_retention_days: int = 30

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        port = env.get("PORT", "7071")
        # Outside Azure (no Table endpoint, no ACS) digests go to make run's SMTP sink by default.
        remote = bool(env.get("SCIM_TABLE_ENDPOINT") or env.get("ACS_EMAIL_ENDPOINT"))
        base = env.get("SCIM_PUBLIC_BASE_URL") or f"http://127.0.0.1:{port}"
        return cls(
            table_endpoint=env.get("SCIM_TABLE_ENDPOINT") or None,
            table_connection_string=env.get("SCIM_TABLE_CONNECTION_STRING") or AZURITE_CONNECTION_STRING,
            table_prefix=env.get("SCIM_TABLE_PREFIX", "scim"),
            public_base_url=base.rstrip("/"),
            max_body_bytes=int(env.get("SCIM_MAX_BODY_BYTES") or 1024 * 1024),
            notify_from=env.get("NOTIFY_FROM") or "scim-notifications@localhost",
            acs_email_endpoint=env.get("ACS_EMAIL_ENDPOINT") or None,
            smtp_host=env.get("SMTP_HOST") or (None if remote else LOCAL_SMTP_HOST),
            smtp_port=int(env.get("SMTP_PORT") or (25 if remote else LOCAL_SMTP_PORT)),
            smtp_starttls=(env.get("SMTP_STARTTLS") or "false").strip().lower() in ("1", "true", "yes"),
            smtp_username=env.get("SMTP_USERNAME") or None,
            smtp_password=env.get("SMTP_PASSWORD") or None,
            log_retention_days=int(env.get("LOG_RETENTION_DAYS") or 30),
        )

    def tenant_url(self, tenant: str) -> str:
        """The Tenant URL an admin pastes into Entra for ``tenant``."""
        return f"{self.public_base_url}/scim/{tenant}"
