"""``make run`` (devtools/dev.py) only ever resets a tenant on the local emulator, fails cleanly,
writes ``local.settings.json`` for the admin CLI when it is missing (and never touches an existing
one), and says when its Azurite data has grown large enough to slow the emulator down.

No Azurite is needed: ``devtools.dev.main()`` runs with its storage-touching steps replaced by
functions that fail the test if called, in a worker thread (``main`` calls ``asyncio.run``,
which must not run on the thread of pytest-asyncio's session loop).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import devtools.azurite as azurite_mod
import devtools.dev as dev
from devtools.azurite import PROJECT_ROOT, free_port
from devtools.local_defaults import azurite_connection_string

MIB = 1024 * 1024
_ENSURE_TENANT = dev._ensure_tenant  # the real one, before any fixture replaces it
REMOTE_KEY = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="  # not a real key: base64 of the alphabet


def _touched(name: str):  # type: ignore[no-untyped-def]
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"devtools.dev called {name}: it touched storage or started something")

    return fail


@pytest.fixture
def isolated(monkeypatch, tmp_path):  # type: ignore[no-untyped-def]
    """A private environment and project root for devtools.dev.main(); every step that would start
    Azurite, the SMTP sink, the server or touch storage fails the test if reached."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCIM_", "SMTP_", "ACS_", "AzureWebJobs"))}
    env["PORT"] = "7071"
    monkeypatch.setattr(os, "environ", env)
    monkeypatch.setattr(dev, "PROJECT_ROOT", tmp_path)
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # leave pytest's handlers alone
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)  # no `func`
    for name in (
        "_ensure_azurite",
        "_start_smtp_sink",
        "_ensure_tenant",
        "_ensure_notifications",
        "_run_localhost",
        "_run_func",
    ):
        monkeypatch.setattr(dev, name, _touched(name))
    return env


def run_main() -> tuple[int, float]:
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        code = pool.submit(dev.main).result(timeout=30)
    return code, time.perf_counter() - started


# ---- L4: real storage is refused unless asked for -----------------------------------------------

REMOTE = [
    {"SCIM_TABLE_ENDPOINT": "https://contoso.table.core.windows.net"},
    {
        "SCIM_TABLE_ENDPOINT": "https://contoso.table.core.windows.net",
        "SCIM_TABLE_CONNECTION_STRING": "UseDevelopmentStorage=true",
    },
    {
        "SCIM_TABLE_CONNECTION_STRING": f"DefaultEndpointsProtocol=https;AccountName=contoso;AccountKey={REMOTE_KEY};EndpointSuffix=core.windows.net"
    },
    {
        "SCIM_TABLE_CONNECTION_STRING": f"AccountName=contoso;AccountKey={REMOTE_KEY};TableEndpoint=https://10.1.2.3:10002/contoso"
    },
    # the emulator's account name on Azure's own host name is a real storage account
    {
        "SCIM_TABLE_CONNECTION_STRING": f"DefaultEndpointsProtocol=https;AccountName=devstoreaccount1;AccountKey={REMOTE_KEY}"
    },
]


@pytest.mark.parametrize(
    "settings", REMOTE, ids=["endpoint", "endpoint-wins", "account", "table-endpoint", "emulator-name-on-azure"]
)
def test_make_run_refuses_real_storage_from_the_environment(isolated, capsys, settings):
    isolated.update(settings)
    code, seconds = run_main()
    err = capsys.readouterr()
    assert code == 1
    assert seconds < 5
    assert err.out == ""  # no Tenant URL / Secret Token
    message = err.err
    assert message.startswith("error: ") and "not the local storage emulator" in message, message
    assert "SCIM_DEV_ALLOW_REMOTE=1" in message and "environment" in message, message
    assert REMOTE_KEY not in message  # never the account key


def test_make_run_refuses_real_storage_from_local_settings(isolated, capsys, tmp_path):
    (tmp_path / "local.settings.json").write_text(
        '{"Values": {"SCIM_TABLE_ENDPOINT": "", "SCIM_TABLE_CONNECTION_STRING": '
        f'"DefaultEndpointsProtocol=https;AccountName=contoso;AccountKey={REMOTE_KEY};EndpointSuffix=core.windows.net"}}}}'
    )
    code, _ = run_main()
    err = capsys.readouterr().err
    assert code == 1
    assert "local.settings.json" in err and "contoso.table.core.windows.net" in err, err
    assert REMOTE_KEY not in err


@pytest.mark.parametrize(
    ("settings", "local"),
    [
        ({}, True),
        ({"SCIM_TABLE_CONNECTION_STRING": "UseDevelopmentStorage=true"}, True),
        ({"SCIM_TABLE_CONNECTION_STRING": "usedevelopmentstorage=TRUE;"}, True),
        ({"SCIM_TABLE_ENDPOINT": "http://127.0.0.1:10002/devstoreaccount1"}, True),
        ({"SCIM_TABLE_ENDPOINT": "http://localhost:10002/devstoreaccount1"}, True),
        ({"SCIM_TABLE_ENDPOINT": "http://[::1]:10002/devstoreaccount1"}, True),
        ({"SCIM_TABLE_ENDPOINT": "", "SCIM_TABLE_CONNECTION_STRING": ""}, True),  # the sample's empty values
        ({"SCIM_TABLE_CONNECTION_STRING": azurite_connection_string("127.0.0.1", 10002)}, True),
        # Azurite in a container network: the emulator's path-style account
        (
            {
                "SCIM_TABLE_CONNECTION_STRING": "AccountName=devstoreaccount1;AccountKey=x;TableEndpoint=http://azurite:10002/devstoreaccount1"
            },
            True,
        ),
        ({"SCIM_TABLE_ENDPOINT": "https://contoso.table.core.windows.net"}, False),
        ({"SCIM_TABLE_ENDPOINT": "http://127.0.0.1.evil.example/devstoreaccount1x"}, False),
        ({"SCIM_TABLE_ENDPOINT": "https://localhost.contoso.com/"}, False),
        ({"SCIM_TABLE_CONNECTION_STRING": "AccountName=devstoreaccount1;AccountKey=x"}, False),
        ({"SCIM_TABLE_CONNECTION_STRING": "not a connection string"}, False),
    ],
)
def test_which_targets_are_the_local_emulator(settings, local):
    target = dev.storage_target(settings)
    assert target.local is local, target


@pytest.mark.parametrize(
    ("settings", "own"),
    [
        ({}, True),
        ({"SCIM_TABLE_ENDPOINT": "", "SCIM_TABLE_CONNECTION_STRING": ""}, True),
        ({"SCIM_TABLE_CONNECTION_STRING": "UseDevelopmentStorage=true"}, True),  # the sample's
        ({"SCIM_TABLE_CONNECTION_STRING": azurite_connection_string("127.0.0.1", 10099)}, False),
        ({"SCIM_TABLE_ENDPOINT": "http://127.0.0.1:10002/devstoreaccount1"}, False),
        ({"SCIM_TABLE_ENDPOINT": "https://contoso.table.core.windows.net"}, False),
    ],
)
def test_which_storage_is_make_runs_own_azurite(settings, own):
    """Make run starts (or reuses) its Azurite on 127.0.0.1:10002 for these; other storage is the user's."""
    assert dev.uses_own_azurite(settings) is own


def test_the_override_lets_make_run_use_real_storage(isolated, capsys, monkeypatch):
    isolated["SCIM_TABLE_ENDPOINT"] = "https://contoso.table.core.windows.net"
    isolated["SCIM_DEV_ALLOW_REMOTE"] = "1"
    monkeypatch.setattr(dev, "_start_smtp_sink", lambda settings: None)
    reached = []

    async def ensure_tenant(settings, name, token):  # type: ignore[no-untyped-def]
        reached.append(settings.table_endpoint)
        raise KeyboardInterrupt  # stop here: main returns 0 as on Ctrl-C

    monkeypatch.setattr(dev, "_ensure_tenant", ensure_tenant)
    code, _ = run_main()
    assert code == 0
    assert reached == ["https://contoso.table.core.windows.net"]
    assert "SCIM_DEV_ALLOW_REMOTE" in capsys.readouterr().err  # said loudly what it does


def test_python_m_scim_dev_refuses_real_storage_before_any_network_io():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCIM_", "SMTP_", "ACS_"))}
    env.update(
        SCIM_TABLE_ENDPOINT="https://scim-dev-safety.invalid",  # .invalid never resolves
        SCIM_DEV_ALLOW_REMOTE="",
        SMTP_HOST="smtp.invalid",  # no SMTP sink either way
        PORT=str(free_port()),
    )
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "devtools.dev"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "SCIM_DEV_ALLOW_REMOTE=1" in proc.stderr
    assert time.perf_counter() - started < 15


# ---- local.settings.json, for the admin CLI in another terminal -------------------------------------


def _stop_at_azurite(monkeypatch, reached):  # type: ignore[no-untyped-def]
    def ensure_azurite(with_blob_queue: bool) -> None:
        reached.append(dict(os.environ))  # what make run would serve the app with
        raise dev.AzuriteError("stop here")

    monkeypatch.setattr(dev, "_ensure_azurite", ensure_azurite)


def test_make_run_writes_local_settings_from_the_sample_when_missing(isolated, capsys, tmp_path, monkeypatch):
    """No local.settings.json: make run writes it from the sample, so that ``python -m scim.admin``
    in another terminal (which reads it) reaches make run's Azurite and SMTP sink."""
    import scim.admin.core

    shutil.copy(PROJECT_ROOT / "local.settings.sample.json", tmp_path)
    reached: list[dict[str, str]] = []
    _stop_at_azurite(monkeypatch, reached)
    code, _ = run_main()
    assert code == 1 and reached, "make run starts its own Azurite for the sample's UseDevelopmentStorage=true"
    assert "wrote local.settings.json" in capsys.readouterr().err
    written = tmp_path / "local.settings.json"
    assert written.stat().st_mode & 0o777 == 0o600
    values = json.loads(written.read_text())["Values"]
    sample = json.loads((PROJECT_ROOT / "local.settings.sample.json").read_text())["Values"]
    assert set(values) == set(sample)
    assert values["SCIM_TABLE_CONNECTION_STRING"] == "UseDevelopmentStorage=true"  # no account key in it
    assert (values["SMTP_HOST"], values["SMTP_PORT"]) == ("127.0.0.1", "1025")
    assert values["SCIM_PUBLIC_BASE_URL"] == ""  # http://127.0.0.1:$PORT, whatever the port

    # The admin CLI's settings (environment without storage, then the file) are make run's.
    monkeypatch.setattr(scim.admin.core, "PROJECT_ROOT", tmp_path)
    cli = scim.admin.core.load_settings({"PATH": "/bin"})
    served = dev.Settings.from_env(reached[0])
    assert cli.table_connection_string == served.table_connection_string
    assert (cli.smtp_host, cli.smtp_port, cli.public_base_url) == (
        served.smtp_host,
        served.smtp_port,
        served.public_base_url,
    )


def test_the_written_local_settings_leave_the_base_url_to_the_port(isolated, tmp_path, monkeypatch):
    """A later make run (or the tests) on another PORT serves, and prints, Tenant URLs on that port."""
    shutil.copy(PROJECT_ROOT / "local.settings.sample.json", tmp_path)
    before = dict(isolated)
    _stop_at_azurite(monkeypatch, [])
    run_main()
    assert (tmp_path / "local.settings.json").exists()
    isolated.clear()  # a new shell: what the first run loaded and filled in is gone
    isolated.update(before, PORT="7123")
    reached: list[dict[str, str]] = []
    _stop_at_azurite(monkeypatch, reached)
    run_main()
    assert dev.Settings.from_env(reached[0]).tenant_url("dev") == "http://127.0.0.1:7123/scim/dev"


def test_make_run_never_touches_an_existing_local_settings(isolated, capsys, tmp_path, monkeypatch):
    shutil.copy(PROJECT_ROOT / "local.settings.sample.json", tmp_path)
    mine = '{"Values": {"SCIM_TABLE_PREFIX": "mine", "SCIM_TABLE_CONNECTION_STRING": ""}}\n'
    (tmp_path / "local.settings.json").write_text(mine)
    reached: list[dict[str, str]] = []
    _stop_at_azurite(monkeypatch, reached)
    code, _ = run_main()
    assert code == 1 and reached
    assert (tmp_path / "local.settings.json").read_text() == mine
    assert "wrote local.settings.json" not in capsys.readouterr().err
    # Its empty storage is unset: make run's own Azurite, with its connection string.
    assert reached[0]["SCIM_TABLE_PREFIX"] == "mine"
    assert reached[0]["SCIM_TABLE_CONNECTION_STRING"] == azurite_connection_string("127.0.0.1", 10002)


def test_make_run_writes_no_local_settings_when_the_environment_sets_storage(isolated, tmp_path, monkeypatch):
    """Storage from the environment (here another Azurite): the file would point the admin CLI elsewhere."""
    shutil.copy(PROJECT_ROOT / "local.settings.sample.json", tmp_path)
    isolated["SCIM_TABLE_CONNECTION_STRING"] = azurite_connection_string("127.0.0.1", 10099)

    def stop(settings):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt  # main returns 0 as on Ctrl-C

    monkeypatch.setattr(dev, "_start_smtp_sink", stop)
    code, _ = run_main()
    assert code == 0
    assert not (tmp_path / "local.settings.json").exists()


def test_without_any_settings_make_run_gives_the_app_its_local_set_up(isolated, tmp_path, monkeypatch):
    """No sample, no local.settings.json, nothing in the environment: the app gets make run's
    Azurite and SMTP sink from devtools.local_defaults (the app has no default of its own)."""
    reached: list[dict[str, str]] = []
    _stop_at_azurite(monkeypatch, reached)
    code, _ = run_main()
    assert code == 1 and reached
    assert not (tmp_path / "local.settings.json").exists()
    env = reached[0]
    assert env["SCIM_TABLE_CONNECTION_STRING"] == azurite_connection_string("127.0.0.1", 10002)
    assert (env["SMTP_HOST"], env["SMTP_PORT"]) == ("127.0.0.1", "1025")


# ---- a token ensure_tenant refuses: one clean error line -------------------------------------------


def test_a_refused_dev_token_is_one_error_line(isolated, capsys, monkeypatch):
    import scim.admin.core

    isolated["SCIM_DEV_TOKEN"] = "short"
    monkeypatch.setattr(dev, "_ensure_azurite", lambda with_blob_queue: None)
    monkeypatch.setattr(dev, "_start_smtp_sink", lambda settings: None)
    monkeypatch.setattr(dev, "_ensure_tenant", _ENSURE_TENANT)  # the real one: it calls scim.admin.core

    async def refuse(settings, name, token):  # type: ignore[no-untyped-def]
        raise ValueError("the token must be at least 32 characters")

    monkeypatch.setattr(scim.admin.core, "ensure_tenant", refuse)
    code, _ = run_main()
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    assert "Traceback" not in captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "at least 32 characters" in errors[0], captured.err
    assert "SCIM_DEV_TOKEN" in errors[0]


# ---- H2: the size of .azurite/ -----------------------------------------------------------------------


def _sparse(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)


def test_folder_size_counts_every_file_below_it(tmp_path):
    assert azurite_mod.folder_size(tmp_path / "missing") == 0
    (tmp_path / "a.json").write_bytes(b"x" * 1000)
    _sparse(tmp_path / "sub" / "b.json", 5 * MIB)
    assert azurite_mod.folder_size(tmp_path) == 1000 + 5 * MIB


def test_the_azurite_data_report_warns_when_large(tmp_path):
    data = tmp_path / ".azurite"
    lines = dev.azurite_data_report(data)
    assert len(lines) == 1 and ".azurite" in lines[0]
    _sparse(data / "__azurite_db_table__.json", 12 * MIB)
    lines = dev.azurite_data_report(data)
    assert len(lines) == 1 and "12.0 MiB" in lines[0], lines
    _sparse(data / "__azurite_db_table__.json", 173 * MIB)
    lines = dev.azurite_data_report(data)
    assert len(lines) == 2, lines
    assert "173.0 MiB" in lines[0]
    warning = lines[1]
    assert warning.startswith("warning: ")
    assert "make clean-data" in warning and "LokiJS" in warning and "50 MiB" in warning, warning


def test_make_run_prints_the_size_of_its_azurite_data_at_start(isolated, capsys, tmp_path, monkeypatch):
    _sparse(tmp_path / ".azurite" / "__azurite_db_table__.json", 60 * MIB)

    def ensure_azurite(with_blob_queue: bool) -> None:
        raise dev.AzuriteError("stop here")  # reached after the report

    monkeypatch.setattr(dev, "_ensure_azurite", ensure_azurite)
    code, _ = run_main()
    err = capsys.readouterr().err.splitlines()
    assert code == 1
    assert any("60.0 MiB" in line and ".azurite" in line for line in err), err
    assert any(line.startswith("warning: ") and "make clean-data" in line for line in err), err


def test_make_clean_data_removes_the_azurite_folder(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    _sparse(tmp_path / ".azurite" / "__azurite_db_table__.json", MIB)
    (tmp_path / "keep.txt").write_text("x")
    proc = subprocess.run(
        ["make", "-s", "-f", str(PROJECT_ROOT / "Makefile"), "-C", str(tmp_path), "clean-data"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / ".azurite").exists()
    assert (tmp_path / "keep.txt").exists()


def test_a_bad_setting_stops_make_run_before_anything_starts(isolated, capsys):
    """A setting the app cannot use (here SMTP_PORT) ends make run with one error line naming it,
    before Azurite, the SMTP sink or the tenant are touched (a traceback after Azurite started)."""
    isolated["SMTP_PORT"] = "abc"
    code, _ = run_main()
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: invalid settings: SMTP_PORT='abc'"), err
    assert "Traceback" not in err
