"""The app's settings (``scim.settings``, pydantic-settings): defaults, each variable, the
errors that name a bad variable, secrets kept out of text, and the refusal of the local
Azurite default in Azure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback

import pytest

from scim.functions import runtime as runtime_module
from scim.settings import AZURITE_CONNECTION_STRING, Settings
from tests.helpers import ROOT, admin

ACCOUNT_KEY = "c2VjcmV0LWFjY291bnQta2V5LW5ldmVyLWluLWxvZ3M="
CONNECTION_STRING = (
    f"DefaultEndpointsProtocol=https;AccountName=contoso;AccountKey={ACCOUNT_KEY};EndpointSuffix=core.windows.net"
)
PASSWORD = "smtp-password-never-in-logs"
SECRETS = (ACCOUNT_KEY, PASSWORD)

# Every variable Settings reads (the app's, and the platform's in Azure).
VARIABLES = tuple(str(field.validation_alias) for field in Settings.model_fields.values())


def _plain(value: object) -> object:
    """A setting's value, a secret's revealed."""
    reveal = getattr(value, "get_secret_value", None)
    return reveal() if reveal else value


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The process environment without any variable Settings reads."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# ---- defaults ---------------------------------------------------------------------------------


def test_the_defaults_with_nothing_set_are_the_local_development_ones() -> None:
    settings = Settings.from_env({})
    assert settings.table_endpoint is None
    assert _plain(settings.table_connection_string) == AZURITE_CONNECTION_STRING  # Azurite on 127.0.0.1:10002
    assert settings.table_prefix == "scim"
    assert settings.public_base_url == "http://127.0.0.1:7071"
    assert settings.tenant_url("acme") == "http://127.0.0.1:7071/scim/acme"
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.notify_from == "scim-notifications@localhost"
    assert settings.acs_email_endpoint is None
    assert (settings.smtp_host, settings.smtp_port) == ("127.0.0.1", 1025)  # make run's SMTP sink
    assert settings.smtp_starttls is False
    assert settings.smtp_username is None and settings.smtp_password is None
    assert settings.log_retention_days == 30


@pytest.mark.parametrize(
    "remote",
    [
        {"SCIM_TABLE_ENDPOINT": "https://contoso.table.core.windows.net"},
        {"ACS_EMAIL_ENDPOINT": "https://contoso.communication.azure.com"},
    ],
)
def test_with_an_azure_endpoint_smtp_defaults_to_no_server_on_port_25(remote: dict[str, str]) -> None:
    settings = Settings.from_env(remote)
    assert (settings.smtp_host, settings.smtp_port) == (None, 25)


def test_the_samples_values_are_the_defaults_and_an_empty_value_is_unset() -> None:
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    assert Settings.from_env(sample) == Settings.from_env({})
    assert Settings.from_env(dict.fromkeys(sample, "")) == Settings.from_env({})


# ---- each variable ----------------------------------------------------------------------------


def test_each_variable_is_read() -> None:
    settings = Settings.from_env(
        {
            "SCIM_TABLE_ENDPOINT": "https://contoso.table.core.windows.net",
            "SCIM_TABLE_CONNECTION_STRING": CONNECTION_STRING,
            "SCIM_TABLE_PREFIX": "prod2",
            "SCIM_PUBLIC_BASE_URL": "https://scim.contoso.com/",
            "SCIM_MAX_BODY_BYTES": "2048",
            "NOTIFY_FROM": "DoNotReply@contoso.com",
            "ACS_EMAIL_ENDPOINT": "https://contoso.communication.azure.com",
            "SMTP_HOST": "smtp.contoso.com",
            "SMTP_PORT": "587",
            "SMTP_STARTTLS": "true",
            "SMTP_USERNAME": "mailer",
            "SMTP_PASSWORD": PASSWORD,
            "LOG_RETENTION_DAYS": "7",
        }
    )
    assert settings.table_endpoint == "https://contoso.table.core.windows.net"
    assert _plain(settings.table_connection_string) == CONNECTION_STRING
    assert settings.table_prefix == "prod2"
    assert settings.public_base_url == "https://scim.contoso.com"  # without the trailing slash
    assert settings.tenant_url("acme") == "https://scim.contoso.com/scim/acme"
    assert settings.max_body_bytes == 2048
    assert settings.notify_from == "DoNotReply@contoso.com"
    assert settings.acs_email_endpoint == "https://contoso.communication.azure.com"
    assert (settings.smtp_host, settings.smtp_port, settings.smtp_starttls) == ("smtp.contoso.com", 587, True)
    assert settings.smtp_username == "mailer"
    assert _plain(settings.smtp_password) == PASSWORD
    assert settings.log_retention_days == 7


def test_port_makes_the_default_base_url_and_the_base_url_wins() -> None:
    assert Settings.from_env({"PORT": "8123"}).public_base_url == "http://127.0.0.1:8123"
    assert (
        Settings.from_env({"PORT": "8123", "SCIM_PUBLIC_BASE_URL": "https://x.example"}).public_base_url
        == "https://x.example"
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        ("yes", True),
        (" yes ", True),
        ("0", False),
        ("false", False),
        ("no", False),
    ],
)
def test_smtp_starttls_reads_the_usual_spellings(text: str, value: bool) -> None:
    assert Settings.from_env({"SMTP_STARTTLS": text}).smtp_starttls is value


def test_the_process_environment_is_read_as_a_mapping_is(environ: pytest.MonkeyPatch) -> None:
    values = {
        "SCIM_TABLE_PREFIX": "envprefix",
        "SMTP_PORT": "2525",
        "SMTP_PASSWORD": PASSWORD,
        "SCIM_TABLE_ENDPOINT": "",
    }
    for name, value in values.items():
        environ.setenv(name, value)
    assert Settings.from_env() == Settings.from_env(values)
    settings = Settings.from_env()
    assert (settings.table_prefix, settings.smtp_port, settings.table_endpoint) == ("envprefix", 2525, None)
    environ.setenv("SMTP_PORT", "abc")
    with pytest.raises(ValueError, match="SMTP_PORT"):
        Settings.from_env()


# ---- errors name the variable -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SMTP_PORT", "abc"),
        ("SMTP_PORT", "70000"),
        ("LOG_RETENTION_DAYS", "abc"),
        ("LOG_RETENTION_DAYS", "0"),
        ("SCIM_MAX_BODY_BYTES", "1MB"),
        ("SCIM_MAX_BODY_BYTES", "-1"),
        ("SMTP_STARTTLS", "maybe"),
        ("PORT", "http"),
        ("SCIM_TABLE_PREFIX", "scim-dev"),
        ("SCIM_TABLE_ENDPOINT", "contoso.table.core.windows.net"),
        ("SCIM_PUBLIC_BASE_URL", "scim.contoso.com"),
        ("ACS_EMAIL_ENDPOINT", "contoso.communication.azure.com"),
    ],
)
def test_a_bad_value_fails_naming_its_variable(name: str, value: str) -> None:
    with pytest.raises(ValueError) as failure:
        Settings.from_env({name: value})
    assert name in str(failure.value)


def test_every_bad_variable_is_named_and_no_secret_is_shown() -> None:
    from scim.settings import SettingsError

    env = {
        "SMTP_PORT": "abc",
        "LOG_RETENTION_DAYS": "a month",
        "SCIM_MAX_BODY_BYTES": "1MB",
        "SMTP_PASSWORD": PASSWORD,
        "SCIM_TABLE_CONNECTION_STRING": CONNECTION_STRING,
    }
    with pytest.raises(SettingsError) as failure:
        Settings.from_env(env)
    message = str(failure.value)
    assert all(name in message for name in ("SMTP_PORT", "LOG_RETENTION_DAYS", "SCIM_MAX_BODY_BYTES")), message
    assert "'abc'" in message  # the bad value, to spot the typo
    printed = "".join(traceback.format_exception(failure.value))
    assert not any(secret in printed for secret in SECRETS), printed


# ---- secrets ----------------------------------------------------------------------------------


def test_secrets_are_masked_wherever_the_settings_are_printed() -> None:
    settings = Settings.from_env(
        {"SCIM_TABLE_CONNECTION_STRING": CONNECTION_STRING, "SMTP_HOST": "smtp.contoso.com", "SMTP_PASSWORD": PASSWORD}
    )
    texts = [
        repr(settings),
        str(settings),
        f"{settings}",
        repr(settings.smtp_password),
        str(settings.smtp_password),
        f"{settings.table_connection_string}",
        str(vars(settings)),
    ]
    if hasattr(settings, "model_dump_json"):
        texts.append(settings.model_dump_json())
    for text in texts:
        assert not any(secret in text for secret in SECRETS), text
    assert _plain(settings.smtp_password) == PASSWORD
    assert _plain(settings.table_connection_string) == CONNECTION_STRING


# ---- Azure ------------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", ["WEBSITE_SITE_NAME", "WEBSITE_INSTANCE_ID"])
def test_in_azure_no_table_storage_setting_fails_naming_scim_table_endpoint(platform: str) -> None:
    with pytest.raises(ValueError) as failure:
        Settings.from_env({platform: "scim-prod", "SMTP_PASSWORD": PASSWORD})
    message = "".join(traceback.format_exception(failure.value))
    assert "SCIM_TABLE_ENDPOINT" in str(failure.value) and "Azure" in str(failure.value)
    assert PASSWORD not in message


def test_in_azure_a_table_endpoint_or_connection_string_is_taken_and_smtp_is_not_the_local_sink() -> None:
    endpoint = Settings.from_env(
        {"WEBSITE_SITE_NAME": "scim-prod", "SCIM_TABLE_ENDPOINT": "https://contoso.table.core.windows.net"}
    )
    assert endpoint.table_endpoint == "https://contoso.table.core.windows.net"
    connection = Settings.from_env({"WEBSITE_INSTANCE_ID": "0a1b2c", "SCIM_TABLE_CONNECTION_STRING": CONNECTION_STRING})
    assert _plain(connection.table_connection_string) == CONNECTION_STRING
    assert (connection.smtp_host, connection.smtp_port) == (None, 25)  # no make run sink on an Azure instance


def test_outside_azure_the_azurite_default_stays() -> None:
    for env in ({}, {"WEBSITE_SITE_NAME": "", "WEBSITE_INSTANCE_ID": ""}):
        settings = Settings.from_env(env)
        assert settings.table_endpoint is None
        assert _plain(settings.table_connection_string) == AZURITE_CONNECTION_STRING


# ---- when it fails: at start-up ---------------------------------------------------------------


async def test_the_functions_worker_fails_building_its_runtime_naming_the_variable(
    environ: pytest.MonkeyPatch,
) -> None:
    environ.setattr(runtime_module, "_runtime", None)
    environ.setenv("SMTP_PORT", "abc")
    with pytest.raises(ValueError, match="SMTP_PORT"):
        await runtime_module.get_runtime()
    assert runtime_module._runtime is None


def test_the_admin_cli_stops_with_one_line_naming_the_variable() -> None:
    env = {"PATH": "/usr/bin:/bin", "SMTP_PORT": "abc", "SMTP_PASSWORD": PASSWORD}
    result = admin(env, "tenant", "list")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "SMTP_PORT" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and PASSWORD not in result.stderr


def test_the_function_app_fails_at_start_up_in_azure_without_table_storage() -> None:
    """In Azure with no table setting, importing the entry point (what the Functions host does at
    start-up) fails naming SCIM_TABLE_ENDPOINT, instead of every request answering 500 later."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCIM_", "WEBSITE_"))}

    def import_function_app(extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", "import function_app"],
            cwd=ROOT,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    in_azure = import_function_app({"WEBSITE_SITE_NAME": "scim-contoso"})
    assert in_azure.returncode != 0
    assert "SCIM_TABLE_ENDPOINT is not set, and this is Azure" in in_azure.stderr, in_azure.stderr[-2000:]
    local = import_function_app({})
    assert local.returncode == 0, local.stderr
