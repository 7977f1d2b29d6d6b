"""Application settings, read from the environment (Functions app settings, local.settings.json).

Every name here but the platform's (``WEBSITE_*``) is listed in ``local.settings.sample.json``
and set by ``infra/``; a test cross-checks the three (it finds the names in the
``validation_alias`` of the fields below).
With nothing configured, the app talks to Azurite on 127.0.0.1, except in Azure, where that
is refused (see :class:`Settings`).

:class:`Settings` is a pydantic-settings model: a value that does not parse fails when the
settings are built (at start-up), with a :class:`SettingsError` naming the variable. Importing
this module imports pydantic, so the Functions entry point imports it on first use only
(``scim.functions.runtime``), not at cold start.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

__all__ = ["AZURITE_CONNECTION_STRING", "Settings", "SettingsError", "azurite_connection_string"]

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
LOCAL_SMTP_HOST = "127.0.0.1"  # make run's SMTP sink (devtools/smtp_sink.py)
LOCAL_SMTP_PORT = 1025
DEFAULT_PORT = 7071  # Core Tools' default port, and devtools.localhost's
TABLE_PREFIX_MAX = 40  # infra/main.bicep's tablePrefix: a table name is at most 63 characters


class SettingsError(ValueError):
    """The environment holds a value the app cannot use; the message names each such variable
    (and never shows the value of a secret)."""


def _remote(data: dict[str, Any]) -> bool:
    """Whether these settings are not make run's local set-up: Table or ACS endpoints, or Azure."""
    names = ("table_endpoint", "acs_email_endpoint", "azure_site_name", "azure_instance_id")
    return any(data.get(name) for name in names)  # a name is missing when its variable failed


class Settings(BaseSettings):
    """The settings the SCIM app reads; each field's ``validation_alias`` is its variable.

    - ``SCIM_TABLE_ENDPOINT``: Table service URL; used with DefaultAzureCredential (managed
      identity in Azure; ``AZURE_CLIENT_ID`` picks a user-assigned identity). Wins when set.
    - ``SCIM_TABLE_CONNECTION_STRING``: a connection string (local development, Azurite).
      When neither is set, Azurite on 127.0.0.1:10002 is used, except in Azure (the platform
      sets ``WEBSITE_SITE_NAME``, and ``WEBSITE_INSTANCE_ID`` where it has one), where that
      fails: the app would otherwise look for Azurite on its own instance.
    - ``SCIM_TABLE_PREFIX``: prefix of the table names (default ``scim``): letters and digits,
      starting with a letter, at most 40.
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
      (neither ``SCIM_TABLE_ENDPOINT`` nor ``ACS_EMAIL_ENDPOINT`` set, not in Azure) the default
      is make run's SMTP sink on 127.0.0.1:1025.
    - ``LOG_RETENTION_DAYS``: days the provisioning log keeps entries (default 30).

    An empty value counts as unset (``local.settings.sample.json`` lists the optional ones
    empty). The connection string and ``SMTP_PASSWORD`` are :class:`~pydantic.SecretStr`:
    ``repr``, ``str`` and dumps show ``**********``; ``.get_secret_value()`` gives the value.
    """

    model_config = SettingsConfigDict(
        frozen=True,
        extra="ignore",  # the environment holds much more than the settings
        case_sensitive=True,
        env_ignore_empty=True,
        hide_input_in_errors=True,  # a model-level error would show every input, secrets included
    )

    table_endpoint: str | None = Field(default=None, validation_alias="SCIM_TABLE_ENDPOINT")
    table_connection_string: SecretStr = Field(
        default=SecretStr(AZURITE_CONNECTION_STRING), validation_alias="SCIM_TABLE_CONNECTION_STRING"
    )  # may hold an account key
    table_prefix: str = Field(default="scim", validation_alias="SCIM_TABLE_PREFIX")
    port: int = Field(default=DEFAULT_PORT, validation_alias="PORT", ge=1, le=65535, repr=False)
    public_base_url: str = Field(
        default_factory=lambda data: f"http://127.0.0.1:{data.get('port')}", validation_alias="SCIM_PUBLIC_BASE_URL"
    )
    max_body_bytes: int = Field(default=1024 * 1024, validation_alias="SCIM_MAX_BODY_BYTES", gt=0)
    notify_from: str = Field(default="scim-notifications@localhost", validation_alias="NOTIFY_FROM")
    acs_email_endpoint: str | None = Field(default=None, validation_alias="ACS_EMAIL_ENDPOINT")
    # Set by the platform in Azure (App Service, Functions), never by infra/ or local settings.
    azure_site_name: str | None = Field(default=None, validation_alias="WEBSITE_SITE_NAME")
    azure_instance_id: str | None = Field(default=None, validation_alias="WEBSITE_INSTANCE_ID", repr=False)
    # Outside Azure (no Table endpoint, no ACS) digests go to make run's SMTP sink by default.
    smtp_host: str | None = Field(
        default_factory=lambda data: None if _remote(data) else LOCAL_SMTP_HOST, validation_alias="SMTP_HOST"
    )
    smtp_port: int = Field(
        default_factory=lambda data: 25 if _remote(data) else LOCAL_SMTP_PORT,
        validation_alias="SMTP_PORT",
        ge=1,
        le=65535,
    )
    smtp_starttls: bool = Field(default=False, validation_alias="SMTP_STARTTLS")
    smtp_username: str | None = Field(default=None, validation_alias="SMTP_USERNAME")
    smtp_password: SecretStr | None = Field(default=None, validation_alias="SMTP_PASSWORD")  # never in logs
    log_retention_days: int = Field(default=30, validation_alias="LOG_RETENTION_DAYS", ge=1)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings  # no .env file, no secrets directory

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings in ``env`` (default: the process environment, as pydantic-settings reads it).

        Raises :class:`SettingsError` naming every variable whose value is not usable.
        """
        try:
            if env is None:
                return cls()
            # The same reading as pydantic-settings' on os.environ: exact names, empty is unset.
            return cls.model_validate({name: value for name, value in env.items() if value != ""})
        except ValidationError as exc:
            raise SettingsError(_describe(exc, os.environ if env is None else env)) from None

    @property
    def in_azure(self) -> bool:
        """Whether the app runs in Azure (the platform set ``WEBSITE_SITE_NAME`` or ``WEBSITE_INSTANCE_ID``)."""
        return bool(self.azure_site_name or self.azure_instance_id)

    def tenant_url(self, tenant: str) -> str:
        """The Tenant URL an admin pastes into Entra for ``tenant``."""
        return f"{self.public_base_url}/scim/{tenant}"

    @field_validator("table_endpoint", "acs_email_endpoint", "public_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("public_base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("table_prefix")
    @classmethod
    def _table_prefix(cls, value: str) -> str:
        if not (value[:1].isascii() and value[:1].isalpha() and value.isascii() and value.isalnum()):
            raise ValueError(
                "must be letters and digits, starting with a letter (table names are <prefix>directory, ...)"
            )
        if len(value) > TABLE_PREFIX_MAX:
            raise ValueError(f"must be at most {TABLE_PREFIX_MAX} characters")
        return value

    @field_validator("smtp_starttls", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _storage_in_azure(self) -> Settings:
        if self.in_azure and not self.table_endpoint and "table_connection_string" not in self.model_fields_set:
            platform = "WEBSITE_SITE_NAME" if self.azure_site_name else "WEBSITE_INSTANCE_ID"
            raise ValueError(
                f"SCIM_TABLE_ENDPOINT is not set, and this is Azure ({platform} is set): the local default, "
                "Azurite on 127.0.0.1, cannot work there. Set SCIM_TABLE_ENDPOINT to the storage account's "
                "Table endpoint (https://<account>.table.core.windows.net), as infra/ does"
            )
        return self


_SECRETS = frozenset({"SCIM_TABLE_CONNECTION_STRING", "SMTP_PASSWORD"})


def _describe(exc: ValidationError, env: Mapping[str, str]) -> str:
    """One line per unusable variable: its name, its value (unless a secret) and what is wrong."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        if error["type"] == "default_factory_not_called":
            continue  # a consequence of another variable's error, listed already
        message = error["msg"].removeprefix("Value error, ")
        name = ".".join(str(part) for part in error["loc"])
        if not name:
            problems.append(message)
        elif name in _SECRETS or name not in env:
            problems.append(f"{name}: {message}")
        else:
            problems.append(f"{name}={env[name]!r}: {message}")
    return "invalid settings: " + "; ".join(problems)
