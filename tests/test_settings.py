"""The app's settings (``scim.settings``, pydantic-settings): defaults, each variable, the
errors that name a bad variable, secrets kept out of text, and the refusal to start without
table storage (no local default: make run's are in devtools/local_defaults.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from scim.functions import runtime as runtime_module
from scim.settings import Settings, SettingsError
from scim.store.event_timing import EVENTS_SETTLE_SECONDS
from tests.helpers import ROOT, admin

ACCOUNT_KEY = "c2VjcmV0LWFjY291bnQta2V5LW5ldmVyLWluLWxvZ3M="
CONNECTION_STRING = (
    f"DefaultEndpointsProtocol=https;AccountName=contoso;AccountKey={ACCOUNT_KEY};EndpointSuffix=core.windows.net"
)
PASSWORD = "smtp-password-never-in-logs"
SECRETS = (ACCOUNT_KEY, PASSWORD)
LOCAL = "UseDevelopmentStorage=true"  # Azurite on 127.0.0.1:10002, as the Azure SDK reads it
STORAGE = {"SCIM_TABLE_CONNECTION_STRING": LOCAL}  # the one setting without a default

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


def test_the_defaults_with_only_table_storage_set() -> None:
    settings = Settings.from_env(STORAGE)
    assert settings.table_endpoint is None
    assert _plain(settings.table_connection_string) == LOCAL
    assert settings.table_prefix == "scim"
    assert settings.public_base_url == "http://127.0.0.1:7071"
    assert settings.tenant_url("acme") == "http://127.0.0.1:7071/scim/acme"
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.notify_from == "scim-notifications@localhost"
    assert settings.acs_email_endpoint is None
    assert (settings.smtp_host, settings.smtp_port) == (None, 25)  # no mail server but the one configured
    assert settings.smtp_starttls is False
    assert settings.smtp_username is None and settings.smtp_password is None
    assert settings.log_retention_days == 30
    assert settings.events_settle_seconds == EVENTS_SETTLE_SECONDS == 15
    assert settings.events_retention_days == 30


@pytest.mark.parametrize(
    "env",
    [
        {"SCIM_TABLE_ENDPOINT": "https://contoso.table.core.windows.net"},
        {**STORAGE, "ACS_EMAIL_ENDPOINT": "https://contoso.communication.azure.com"},
        STORAGE,
    ],
    ids=["table-endpoint", "acs", "local-storage"],
)
def test_smtp_has_no_default_server_anywhere(env: dict[str, str]) -> None:
    settings = Settings.from_env(env)
    assert (settings.smtp_host, settings.smtp_port) == (None, 25)


def test_the_samples_values_are_the_local_set_up_and_an_empty_value_is_unset() -> None:
    """The sample: Azurite by UseDevelopmentStorage=true (no account key in the repository) and
    make run's SMTP sink; every other value is the default."""
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    settings = Settings.from_env(sample)
    assert _plain(settings.table_connection_string) == LOCAL and settings.table_endpoint is None
    assert (settings.smtp_host, settings.smtp_port) == ("127.0.0.1", 1025)
    local = {**STORAGE, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": "1025"}
    assert settings == Settings.from_env(local)
    assert Settings.from_env({**dict.fromkeys(sample, ""), **STORAGE}) == Settings.from_env(STORAGE)
    with pytest.raises(SettingsError, match="SCIM_TABLE_CONNECTION_STRING"):
        Settings.from_env(dict.fromkeys(sample, ""))  # empty is unset: no table storage


# ---- no table storage: no default ---------------------------------------------------------------


@pytest.mark.parametrize(
    "env",
    [{}, {"WEBSITE_SITE_NAME": "", "WEBSITE_INSTANCE_ID": ""}, {"SCIM_TABLE_ENDPOINT": "", "SMTP_PORT": "2525"}],
    ids=["nothing", "empty-platform", "empty-endpoint"],
)
def test_without_table_storage_the_settings_fail_naming_both_variables(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError) as failure:
        Settings.from_env(env)
    message = str(failure.value)
    assert "SCIM_TABLE_ENDPOINT" in message and "SCIM_TABLE_CONNECTION_STRING" in message, message
    # ... and what to do: in Azure as infra/ does; locally make run, or local.settings.json from the sample.
    assert "infra/" in message and "make run" in message, message
    assert "local.settings.json" in message and "local.settings.sample.json" in message, message
    assert "\n" not in message  # one line for the operator


def test_the_deployed_settings_hold_no_emulator_key_or_local_default() -> None:
    """Azurite's account key and make run's defaults are in devtools/ (not deployed), not here."""
    import scim.settings
    from devtools.local_defaults import AZURITE_KEY

    text = (ROOT / "scim" / "settings.py").read_text()
    assert AZURITE_KEY not in text and "devstoreaccount1" not in text
    names = {"AZURITE_KEY", "AZURITE_ACCOUNT", "AZURITE_CONNECTION_STRING", "azurite_connection_string"}
    assert not names & set(vars(scim.settings)), "moved to devtools.local_defaults"


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
            "EVENTS_SETTLE_SECONDS": "0.5",
            "EVENTS_RETENTION_DAYS": "90",
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
    assert settings.events_settle_seconds == 0.5  # fractions: tests use a short horizon
    assert settings.events_retention_days == 90


def test_port_makes_the_default_base_url_and_the_base_url_wins() -> None:
    assert Settings.from_env({**STORAGE, "PORT": "8123"}).public_base_url == "http://127.0.0.1:8123"
    assert (
        Settings.from_env({**STORAGE, "PORT": "8123", "SCIM_PUBLIC_BASE_URL": "https://x.example"}).public_base_url
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
    assert Settings.from_env({**STORAGE, "SMTP_STARTTLS": text}).smtp_starttls is value


def test_the_process_environment_is_read_as_a_mapping_is(environ: pytest.MonkeyPatch) -> None:
    values = {
        "SCIM_TABLE_PREFIX": "envprefix",
        "SMTP_PORT": "2525",
        "SMTP_PASSWORD": PASSWORD,
        "SCIM_TABLE_ENDPOINT": "",
        **STORAGE,
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
        ("EVENTS_SETTLE_SECONDS", "0"),
        ("EVENTS_SETTLE_SECONDS", "-1"),
        ("EVENTS_SETTLE_SECONDS", "nan"),
        ("EVENTS_SETTLE_SECONDS", "inf"),
        ("EVENTS_SETTLE_SECONDS", "15s"),
        ("EVENTS_RETENTION_DAYS", "0"),
        ("EVENTS_RETENTION_DAYS", "1.5"),
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
        Settings.from_env({**STORAGE, name: value})
    assert name in str(failure.value)


def test_every_bad_variable_is_named_and_no_secret_is_shown() -> None:
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


def test_in_azure_no_table_storage_fails_even_with_every_other_setting() -> None:
    env = {"WEBSITE_SITE_NAME": "scim-prod", "SMTP_HOST": "smtp.contoso.com", "NOTIFY_FROM": "a@contoso.com"}
    with pytest.raises(SettingsError, match="SCIM_TABLE_ENDPOINT is not set, and this is Azure"):
        Settings.from_env(env)


# ---- when it fails: at start-up ---------------------------------------------------------------


async def test_the_functions_worker_fails_building_its_runtime_naming_the_variable(
    environ: pytest.MonkeyPatch,
) -> None:
    environ.setattr(runtime_module, "_runtime", None)
    environ.setenv("SMTP_PORT", "abc")
    with pytest.raises(ValueError, match="SMTP_PORT"):
        await runtime_module.get_runtime()
    assert runtime_module._runtime is None


def _admin_in(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m scim.admin ARGS`` with ``root`` as the project root (where it reads local.settings.json)."""
    code = (
        "import sys; from pathlib import Path; from scim.admin import core, __main__ as cli; "
        f"core.PROJECT_ROOT = Path({str(root)!r}); sys.exit(cli.main({list(args)!r}))"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_admin_cli_without_table_storage_stops_with_one_line_saying_what_to_do(tmp_path: Path) -> None:
    """Neither the environment nor local.settings.json gives storage: one ``error:`` line, no traceback."""
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    result = _admin_in(tmp_path, env, "tenant", "list")
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid settings: no table storage"), result.stderr
    assert "SCIM_TABLE_ENDPOINT" in lines[0] and "SCIM_TABLE_CONNECTION_STRING" in lines[0]
    assert "make run" in lines[0] and "local.settings.json" in lines[0]


def test_the_admin_cli_reads_storage_from_local_settings_json_under_an_empty_variable(tmp_path: Path) -> None:
    """local.settings.json gives the storage (here an endpoint that is refused at once); an empty
    variable in the environment does not hide it (empty is unset, as for the app)."""
    (tmp_path / "local.settings.json").write_text(
        json.dumps({"Values": {"SCIM_TABLE_CONNECTION_STRING": "", "SCIM_TABLE_ENDPOINT": "not a url"}})
    )
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    result = _admin_in(tmp_path, {**env, "SCIM_TABLE_ENDPOINT": ""}, "tenant", "list")
    assert result.returncode == 1
    assert result.stderr.startswith("error: invalid settings: SCIM_TABLE_ENDPOINT='not a url'"), result.stderr
    (tmp_path / "local.settings.json").write_text("{not json")
    broken = _admin_in(tmp_path, env, "tenant", "list")
    assert broken.returncode == 1 and len(broken.stderr.splitlines()) == 1, broken.stderr
    assert broken.stderr.startswith("error: ") and "local.settings.json" in broken.stderr, broken.stderr


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
    nothing = import_function_app({})  # no default storage locally either: make run sets it
    assert nothing.returncode != 0
    assert "neither SCIM_TABLE_ENDPOINT nor SCIM_TABLE_CONNECTION_STRING is set" in nothing.stderr, nothing.stderr
    local = import_function_app(STORAGE)
    assert local.returncode == 0, local.stderr
