"""scim.azurite: Azurite starts, answers, stops by PID, and writes nothing where it isn't told to."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest
from azure.data.tables import TableServiceClient

from scim.azurite import PROJECT_ROOT, AzuriteError, AzuriteProcess, is_running, port_in_use


def _gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)  # the whole group: node and anything it started
    except ProcessLookupError:
        return True
    return False


def _azurite_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(("__azurite", "__blobstorage", "__queuestorage")))


def test_in_memory_start_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)  # Azurite must not write into the caller's cwd
    before_root = _azurite_files(PROJECT_ROOT)
    az = AzuriteProcess(0)
    with az:
        pid = az.pid
        assert pid is not None and az.running
        assert az.table_port > 0
        assert is_running(az.table_port)
        assert f"TableEndpoint=http://127.0.0.1:{az.table_port}/devstoreaccount1;" in az.connection_string
        service = TableServiceClient.from_connection_string(az.connection_string)
        service.create_table("probe")
        assert [t.name for t in service.list_tables()] == ["probe"]
        service.close()
    assert not az.running
    assert _gone(pid)
    assert not is_running(az.table_port)
    assert not port_in_use(az.table_port)
    assert list(tmp_path.iterdir()) == []
    assert _azurite_files(PROJECT_ROOT) == before_root
    az.stop()  # stopping twice is harmless


def test_persistent_location_keeps_data_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cwd, data = tmp_path / "cwd", tmp_path / "data"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    with AzuriteProcess(0, in_memory=False, location=data) as az:
        service = TableServiceClient.from_connection_string(az.connection_string)
        service.create_table("kept")
        service.close()
    assert "__azurite_db_table__.json" in _azurite_files(data)
    assert list(cwd.iterdir()) == []
    with AzuriteProcess(0, in_memory=False, location=data) as az:  # a restart sees the data
        service = TableServiceClient.from_connection_string(az.connection_string)
        assert [t.name for t in service.list_tables()] == ["kept"]
        service.close()
    assert list(cwd.iterdir()) == []


def test_all_services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    with AzuriteProcess(0, all_services=True, blob_port=0, queue_port=0) as az:
        assert set(az.ports) == {"blob", "queue", "table"}
        assert is_running(az.blob_port, service="blob")
        assert is_running(az.queue_port, service="queue")
        cs = az.storage_connection_string
        for service in ("Blob", "Queue", "Table"):
            assert re.search(rf"{service}Endpoint=http://127\.0\.0\.1:\d+/devstoreaccount1;", cs)
        pid = az.pid
    assert _gone(pid)
    assert list(tmp_path.iterdir()) == []


def test_port_taken_by_something_else():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert port_in_use(port) and not is_running(port)
        with pytest.raises(AzuriteError, match="already in use"):
            AzuriteProcess(port).start()


def test_early_exit_reports_azurite_output(tmp_path: Path):
    class Broken(AzuriteProcess):
        def _command(self) -> list[str]:  # Azurite refuses --location with --inMemoryPersistence
            return [*super()._command(), "--location", str(tmp_path)]

    az = Broken(0)
    with pytest.raises(AzuriteError, match="inMemoryPersistence option is not supported"):
        az.start()
    assert not az.running


def test_in_memory_and_location_are_exclusive(tmp_path: Path):
    with pytest.raises(ValueError):
        AzuriteProcess(0, in_memory=True, location=tmp_path)


def test_session_fixtures(azurite: str, table_prefix: str):
    assert isinstance(azurite, str) and "TableEndpoint=http://127.0.0.1:" in azurite
    assert re.fullmatch(r"t[0-9a-f]{8}", table_prefix)
    service = TableServiceClient.from_connection_string(azurite)
    name = f"{table_prefix}fixture"
    service.create_table(name)
    assert name in [t.name for t in service.list_tables()]
    service.delete_table(name)
    service.close()
