"""The local development defaults: Azurite's account and key, make run's SMTP sink, and the
settings ``make run`` gives the app.

They live here, in ``devtools/`` (kept out of the deployment package by ``.funcignore``), not in
:mod:`scim.settings`: the deployed app knows no emulator key and no local default, and refuses
to start without table storage. Locally, ``make run`` (:mod:`devtools.dev`) fills in what the
environment and ``local.settings.json`` leave unset with :func:`apply_local_defaults`; the tests
and the benchmark build their settings from :func:`azurite_connection_string` for the Azurite
they start on a free port.
"""

from __future__ import annotations

from collections.abc import MutableMapping

__all__ = [
    "AZURITE_ACCOUNT",
    "AZURITE_HOST",
    "AZURITE_KEY",
    "AZURITE_TABLE_PORT",
    "SMTP_SINK_HOST",
    "SMTP_SINK_PORT",
    "apply_local_defaults",
    "azurite_connection_string",
    "local_environment",
]

# Azurite's documented, public development account: the same in every Azurite (not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZURITE_HOST = "127.0.0.1"
AZURITE_TABLE_PORT = 10002  # Azurite's own default, and what UseDevelopmentStorage=true means

SMTP_SINK_HOST = "127.0.0.1"  # make run's SMTP sink (devtools/smtp_sink.py)
SMTP_SINK_PORT = 1025


def azurite_connection_string(host: str = AZURITE_HOST, table_port: int = AZURITE_TABLE_PORT) -> str:
    """The connection string of a local Azurite Table service (what ``SCIM_TABLE_CONNECTION_STRING`` takes)."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"TableEndpoint=http://{host}:{table_port}/{AZURITE_ACCOUNT};"
    )


def local_environment(table_port: int = AZURITE_TABLE_PORT, smtp_port: int = SMTP_SINK_PORT) -> dict[str, str]:
    """The settings of the local set-up: Azurite's Table service on ``table_port`` of 127.0.0.1,
    and digests to the SMTP sink on ``smtp_port``."""
    return {
        "SCIM_TABLE_CONNECTION_STRING": azurite_connection_string(AZURITE_HOST, table_port),
        "SMTP_HOST": SMTP_SINK_HOST,
        "SMTP_PORT": str(smtp_port),
    }


def apply_local_defaults(
    environ: MutableMapping[str, str], table_port: int = AZURITE_TABLE_PORT, smtp_port: int = SMTP_SINK_PORT
) -> list[str]:
    """Fill in :func:`local_environment` where ``environ`` leaves it unset (missing or empty, as
    the app reads it): Table storage unless ``SCIM_TABLE_ENDPOINT`` or
    ``SCIM_TABLE_CONNECTION_STRING`` is set; the SMTP sink unless ``SMTP_HOST`` or
    ``ACS_EMAIL_ENDPOINT`` is set. Returns the names set."""
    defaults = local_environment(table_port, smtp_port)
    names = []
    if not (environ.get("SCIM_TABLE_ENDPOINT") or environ.get("SCIM_TABLE_CONNECTION_STRING")):
        names.append("SCIM_TABLE_CONNECTION_STRING")
    if not (environ.get("SMTP_HOST") or environ.get("ACS_EMAIL_ENDPOINT")):
        names.append("SMTP_HOST")
        if not environ.get("SMTP_PORT"):
            names.append("SMTP_PORT")
    for name in names:
        environ[name] = defaults[name]
    return names
