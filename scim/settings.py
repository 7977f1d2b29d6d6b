"""Application settings, read from the environment (Functions app settings, local.settings.json).

Every name here but the platform's (``WEBSITE_*``) is listed in ``local.settings.sample.json``
and set by ``infra/``; a test cross-checks the three (it finds the names in the
``validation_alias`` of the fields below).
Table storage must be configured (``SCIM_TABLE_ENDPOINT`` or ``SCIM_TABLE_CONNECTION_STRING``):
without it the settings fail, in Azure and locally alike. This module knows no storage emulator
and no local mail server: the local defaults (Azurite's account, make run's SMTP sink) are in
``devtools/local_defaults.py``, which is not deployed; ``make run`` sets them.

:class:`Settings` is a pydantic-settings model: a value that does not parse fails when the
settings are built (at start-up), with a :class:`SettingsError` naming the variable. Importing
this module imports pydantic, so the Functions entry point imports it on first use only
(``scim.functions.runtime``), not at cold start.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from scim.store.event_timing import EVENTS_SETTLE_SECONDS

__all__ = ["Settings", "SettingsError"]

DEFAULT_PORT = 7071  # Core Tools' default port, and devtools.localhost's
TABLE_PREFIX_MAX = 40  # infra/main.bicep's tablePrefix: a table name is at most 63 characters
ENTRA_MULTI_TENANT_AUTHORITY = "https://login.microsoftonline.com/organizations/v2.0"  # PORTAL_OIDC_AUTHORITY

# Set while from_env() validates a given mapping: then the process environment is not read at all
# (pydantic-settings would otherwise fill every name the mapping lacks from os.environ).
_MAPPING_ONLY: ContextVar[bool] = ContextVar("scim_settings_mapping_only", default=False)


class SettingsError(ValueError):
    """The environment holds a value the app cannot use; the message names each such variable
    (and never shows the value of a secret)."""


class Settings(BaseSettings):
    """The settings the SCIM app reads; each field's ``validation_alias`` is its variable.

    - ``SCIM_TABLE_ENDPOINT``: Table service URL; used with DefaultAzureCredential (managed
      identity in Azure; ``AZURE_CLIENT_ID`` picks a user-assigned identity). Wins when set.
    - ``SCIM_TABLE_CONNECTION_STRING``: a connection string (local development: Azurite,
      e.g. ``UseDevelopmentStorage=true``). One of the two must be set: with neither, the
      settings fail naming both (in Azure, where the platform sets ``WEBSITE_SITE_NAME``, and
      ``WEBSITE_INSTANCE_ID`` where it has one, naming ``SCIM_TABLE_ENDPOINT``, which
      ``infra/`` sets). There is no default: the app never looks for an emulator by itself.
    - ``SCIM_TABLE_PREFIX``: prefix of the table names (default ``scim``): letters and digits,
      starting with a letter, at most 40.
    - ``SCIM_PUBLIC_BASE_URL``: the app's public base URL, used in Tenant URLs and ``location``
      (default ``http://127.0.0.1:{PORT}``, PORT defaulting to 7071).
    - ``SCIM_MAX_BODY_BYTES``: largest accepted request body (default 1 MiB; larger gets 413).
    - ``NOTIFY_SCHEDULE``: NCRONTAB schedule of the failure digest timer (read by the Functions
      host as ``%NOTIFY_SCHEDULE%``; default every 10 minutes).
    - ``NOTIFY_FROM``: sender address of digests.
    - ``NOTIFY_MAX_EMAILS_PER_RUN``: the most digests one timer run sends (default 0: no cap);
      the others wait for the next runs, which batch their failures. ``infra/`` sets 1 for the
      Azure-managed email domain (5 emails a minute, 10 an hour).
    - ``ACS_EMAIL_ENDPOINT``: Azure Communication Services endpoint; when set, digests are sent
      through ACS Email with DefaultAzureCredential (no keys).
    - ``SMTP_HOST``, ``SMTP_PORT`` (25), ``SMTP_STARTTLS`` (false), ``SMTP_USERNAME``,
      ``SMTP_PASSWORD``: an SMTP server, used when ``ACS_EMAIL_ENDPOINT`` is not set. No default
      host: with neither ``ACS_EMAIL_ENDPOINT`` nor ``SMTP_HOST``, no digest is sent, and each
      tenant's run says no email sender is configured (``make run`` sets its SMTP sink).
    - ``LOG_RETENTION_DAYS``: days the provisioning log keeps entries (default 30).
    - ``EVENTS_SETTLE_SECONDS``: the events feed serves events stamped at least this long ago
      (default 15, :data:`scim.store.event_timing.EVENTS_SETTLE_SECONDS`; > 0). Below the
      writers' bound (``docs/events.md``) a consumer can miss events: lower it in tests only.
    - ``EVENTS_RETENTION_DAYS``: days change events are kept (default 30, at least 1); the timer
      purges older ones, and a feed cursor older than that is expired (410).
    - ``PORTAL_OIDC_CLIENT_ID``: application (client) id of the portal's Entra app registration
      (docs/portal-signin.md); empty: portal sign-in is off and the other ``PORTAL_*`` settings are
      not checked. Set, it needs exactly one client credential of the two below.
    - ``PORTAL_OIDC_AUTHORITY``: the OpenID Connect issuer whose discovery document
      (``/.well-known/openid-configuration``) the portal reads (default Entra's multi-tenant
      ``https://login.microsoftonline.com/organizations/v2.0``); https, or http on a loopback host
      (make run's local provider). A multi-tenant authority (``/organizations/``, ``/common/``)
      needs ``PORTAL_OPERATOR_TENANT_ID``.
    - ``PORTAL_OIDC_CLIENT_SECRET``: a client secret, for local development only: refused in Azure
      (``WEBSITE_SITE_NAME``/``WEBSITE_INSTANCE_ID`` set) at start-up.
    - ``PORTAL_OIDC_FEDERATED_CLIENT_ID``: client id of the user-assigned managed identity whose
      token (audience ``api://AzureADTokenExchange``) is the client assertion: a federated
      credential of the app registration, no secret (``infra/`` sets the app's own identity).
    - ``PORTAL_OPERATOR_TENANT_ID``: Entra tenant id (``tid``) operators sign in from (``infra/``:
      the deployment's tenant); a role held in any other tenant never makes an operator.
    - ``PORTAL_OPERATOR_ROLE`` (default ``Portal.Operator``), ``PORTAL_OPERATOR_GROUP`` (a group
      object id, optional): an operator holds that app role or is in that group.
    - ``PORTAL_TENANT_ADMIN_ROLE`` (default ``Portal.TenantAdmin``): the app role a customer's
      tenant admins hold in their own tenant.

    An empty value counts as unset (``local.settings.sample.json`` lists the optional ones
    empty). The connection string, ``SMTP_PASSWORD`` and ``PORTAL_OIDC_CLIENT_SECRET`` are :class:`~pydantic.SecretStr`:
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
    table_connection_string: SecretStr | None = Field(
        default=None, validation_alias="SCIM_TABLE_CONNECTION_STRING"
    )  # may hold an account key
    table_prefix: str = Field(default="scim", validation_alias="SCIM_TABLE_PREFIX")
    port: int = Field(default=DEFAULT_PORT, validation_alias="PORT", ge=1, le=65535, repr=False)
    public_base_url: str = Field(
        default_factory=lambda data: f"http://127.0.0.1:{data.get('port')}", validation_alias="SCIM_PUBLIC_BASE_URL"
    )
    max_body_bytes: int = Field(default=1024 * 1024, validation_alias="SCIM_MAX_BODY_BYTES", gt=0)
    notify_from: str = Field(default="scim-notifications@localhost", validation_alias="NOTIFY_FROM")
    notify_max_emails_per_run: int = Field(default=0, validation_alias="NOTIFY_MAX_EMAILS_PER_RUN", ge=0)
    acs_email_endpoint: str | None = Field(default=None, validation_alias="ACS_EMAIL_ENDPOINT")
    # Set by the platform in Azure (App Service, Functions), never by infra/ or local settings.
    azure_site_name: str | None = Field(default=None, validation_alias="WEBSITE_SITE_NAME")
    azure_instance_id: str | None = Field(default=None, validation_alias="WEBSITE_INSTANCE_ID", repr=False)
    smtp_host: str | None = Field(default=None, validation_alias="SMTP_HOST")
    smtp_port: int = Field(default=25, validation_alias="SMTP_PORT", ge=1, le=65535)
    smtp_starttls: bool = Field(default=False, validation_alias="SMTP_STARTTLS")
    smtp_username: str | None = Field(default=None, validation_alias="SMTP_USERNAME")
    smtp_password: SecretStr | None = Field(default=None, validation_alias="SMTP_PASSWORD")  # never in logs
    log_retention_days: int = Field(default=30, validation_alias="LOG_RETENTION_DAYS", ge=1)
    events_settle_seconds: float = Field(
        default=EVENTS_SETTLE_SECONDS, validation_alias="EVENTS_SETTLE_SECONDS", gt=0, allow_inf_nan=False
    )
    events_retention_days: int = Field(default=30, validation_alias="EVENTS_RETENTION_DAYS", ge=1)
    portal_client_id: str | None = Field(default=None, validation_alias="PORTAL_OIDC_CLIENT_ID")
    portal_authority: str = Field(default=ENTRA_MULTI_TENANT_AUTHORITY, validation_alias="PORTAL_OIDC_AUTHORITY")
    portal_client_secret: SecretStr | None = Field(default=None, validation_alias="PORTAL_OIDC_CLIENT_SECRET")
    portal_federated_client_id: str | None = Field(default=None, validation_alias="PORTAL_OIDC_FEDERATED_CLIENT_ID")
    portal_operator_tenant_id: str | None = Field(default=None, validation_alias="PORTAL_OPERATOR_TENANT_ID")
    portal_operator_role: str | None = Field(default="Portal.Operator", validation_alias="PORTAL_OPERATOR_ROLE")
    portal_operator_group: str | None = Field(default=None, validation_alias="PORTAL_OPERATOR_GROUP")
    portal_tenant_admin_role: str | None = Field(
        default="Portal.TenantAdmin", validation_alias="PORTAL_TENANT_ADMIN_ROLE"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        if _MAPPING_ONLY.get():
            return (init_settings,)  # from_env(mapping): that mapping alone
        return init_settings, env_settings  # no .env file, no secrets directory

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings in ``env`` (default: the process environment, as pydantic-settings reads it);
        a given ``env`` is read alone, never completed from the process environment.

        Raises :class:`SettingsError` naming every variable whose value is not usable.
        """
        token = _MAPPING_ONLY.set(env is not None)
        try:
            if env is None:
                return cls()
            # The same reading as pydantic-settings' on os.environ: exact names, empty is unset.
            return cls.model_validate({name: value for name, value in env.items() if value != ""})
        except ValidationError as exc:
            raise SettingsError(_describe(exc, os.environ if env is None else env)) from None
        finally:
            _MAPPING_ONLY.reset(token)

    @property
    def in_azure(self) -> bool:
        """Whether the app runs in Azure (the platform set ``WEBSITE_SITE_NAME`` or ``WEBSITE_INSTANCE_ID``)."""
        return bool(self.azure_site_name or self.azure_instance_id)

    @property
    def portal_sign_in(self) -> bool:
        """Whether portal sign-in is configured (``PORTAL_OIDC_CLIENT_ID`` is set)."""
        return self.portal_client_id is not None

    def tenant_url(self, tenant: str) -> str:
        """The Tenant URL an admin pastes into Entra for ``tenant``."""
        return f"{self.public_base_url}/scim/{tenant}"

    def token_endpoint(self, tenant: str) -> str:
        """The Token Endpoint an admin pastes into Entra for ``tenant`` (OAuth 2.0 client
        credentials, :mod:`scim.functions.oauth_adapter`): the same base as :meth:`tenant_url`."""
        return f"{self.public_base_url}/oauth/{tenant}/token"

    def portal_setup_url(self, secret: str) -> str:
        """The URL of a portal setup link (:mod:`scim.portal.links`): what an operator hands to a
        customer's IT admin; the same base as :meth:`tenant_url`. The secret is the URL's
        fragment (``…/portal/setup#scimsl_…``), which browsers never send: no server, proxy or
        request log sees it (the portal's script reads it; :func:`scim.portal.pages.setup_page`).
        Links of the old form, ``…/portal/setup/scimsl_…``, keep working until they expire."""
        return f"{self.public_base_url}/portal/setup#{secret}"

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

    @field_validator("portal_operator_tenant_id", "portal_operator_group")
    @classmethod
    def _guid(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(uuid.UUID(value.strip()))
        except ValueError:
            raise ValueError("must be a GUID (an Entra object or tenant id)") from None

    @field_validator("portal_authority")
    @classmethod
    def _oidc_authority(cls, value: str) -> str:
        parts = urlsplit(value)
        loopback = (parts.hostname or "") in ("127.0.0.1", "localhost", "::1")
        if not parts.netloc or not (parts.scheme == "https" or (parts.scheme == "http" and loopback)):
            raise ValueError("must be an https:// URL (http:// only on 127.0.0.1, localhost or ::1)")
        return value.rstrip("/")

    @field_validator("smtp_starttls", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _table_storage(self) -> Settings:
        if self.table_endpoint or self.table_connection_string is not None:
            return self
        if self.in_azure:
            platform = "WEBSITE_SITE_NAME" if self.azure_site_name else "WEBSITE_INSTANCE_ID"
            raise ValueError(
                f"SCIM_TABLE_ENDPOINT is not set, and this is Azure ({platform} is set): the app has no "
                "table storage. Set SCIM_TABLE_ENDPOINT to the storage account's Table endpoint "
                "(https://<account>.table.core.windows.net), as infra/ does"
            )
        raise ValueError(
            "no table storage: neither SCIM_TABLE_ENDPOINT nor SCIM_TABLE_CONNECTION_STRING is set. In Azure, "
            "set SCIM_TABLE_ENDPOINT to the storage account's Table endpoint, as infra/ does. Locally, `make run` "
            "sets them; the admin CLI (python -m scim.admin) reads local.settings.json, which `make run` writes "
            "from local.settings.sample.json when it is missing (or copy the sample to local.settings.json)"
        )

    @model_validator(mode="after")
    def _portal_sign_in(self) -> Settings:
        if self.portal_client_secret is not None and self.in_azure:
            platform = "WEBSITE_SITE_NAME" if self.azure_site_name else "WEBSITE_INSTANCE_ID"
            raise ValueError(
                f"PORTAL_OIDC_CLIENT_SECRET is set, and this is Azure ({platform} is set): a client secret is for "
                "local development only. Remove it and set PORTAL_OIDC_FEDERATED_CLIENT_ID to the client id of the "
                "app's managed identity, a federated credential of the app registration, as infra/ does "
                "(docs/portal-signin.md)"
            )
        if self.portal_client_id is None:
            return self
        if (self.portal_client_secret is None) == (self.portal_federated_client_id is None):
            raise ValueError(
                "PORTAL_OIDC_CLIENT_ID is set: set exactly one client credential, PORTAL_OIDC_FEDERATED_CLIENT_ID "
                "(Azure: the managed identity as a federated credential) or PORTAL_OIDC_CLIENT_SECRET (local only)"
            )
        segments = urlsplit(self.portal_authority).path.strip("/").split("/")
        if self.portal_operator_tenant_id is None and {"organizations", "common"} & set(segments):
            raise ValueError(
                f"PORTAL_OIDC_AUTHORITY={self.portal_authority!r} signs in users of any Entra tenant: set "
                "PORTAL_OPERATOR_TENANT_ID to the tenant id operators sign in from (infra/ sets the deployment's)"
            )
        return self


_SECRETS = frozenset({"SCIM_TABLE_CONNECTION_STRING", "SMTP_PASSWORD", "PORTAL_OIDC_CLIENT_SECRET"})


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
