"""devtools.azurite: Azurite starts, answers, stops by PID, and writes nothing where it isn't told to."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import pytest
from azure.data.tables import TableServiceClient

from devtools.azurite import (
    MIN_NODE_MAJOR,
    PROJECT_ROOT,
    AzuriteError,
    AzuriteProcess,
    is_running,
    node_executable,
    port_in_use,
    server_header,
)

pytestmark = pytest.mark.azurite(reason="devtools.azurite's own tests: they start Azurite or a node of their own")


def _gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)  # the whole group: node and anything it started
    except ProcessLookupError:
        return True
    return False


def _azurite_files(folder: Path) -> list[str]:
    return sorted(
        p.name for p in folder.iterdir() if p.name.startswith(("__azurite", "__blobstorage", "__queuestorage"))
    )


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


def test_azurite_is_a_release_whose_point_lookups_do_not_scan_the_partition():
    """3.36+ finds an entity by RowKey first; 3.35 scanned the tenant's partition (docs/performance.md)."""
    node = node_executable()
    version = subprocess.run([str(node), "--version"], capture_output=True, text=True, check=True).stdout
    assert int(version.strip().lstrip("v").split(".")[0]) >= MIN_NODE_MAJOR
    with AzuriteProcess(0) as az:
        server = server_header(az.host, az.table_port)
    assert server is not None
    match = re.fullmatch(r"Azurite-Table/(\d+)\.(\d+)\.(\d+)", server)
    assert match, server
    assert tuple(int(n) for n in match.groups()[:2]) >= (3, 36), server


def _fake_project(tmp_path: Path, node_version: str | None) -> Path:
    """A project folder whose node_modules has an Azurite launcher and, if given, a ``node`` of that version."""
    bin_dir = tmp_path / "project" / "node_modules" / ".bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "azurite-table").write_text("// never run\n")
    if node_version is not None:
        node = bin_dir / "node"
        node.write_text(f"#!/bin/sh\necho {node_version}\n")
        node.chmod(0o755)
    return tmp_path / "project"


def test_an_old_node_is_refused_with_a_clear_error_before_anything_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    root = _fake_project(tmp_path, "v20.20.2")
    with pytest.raises(AzuriteError, match=rf"Node.js v20.20.2; Azurite needs Node.js {MIN_NODE_MAJOR} or newer"):
        AzuriteProcess(0, root=root).start()
    assert list((tmp_path / "tmp").iterdir()) == []  # no data folder was left behind


def test_the_projects_own_node_is_preferred_to_the_one_on_path(tmp_path: Path):
    root = _fake_project(tmp_path, f"v{MIN_NODE_MAJOR}.1.0")
    assert node_executable(root) == root / "node_modules" / ".bin" / "node"
    az = AzuriteProcess(0, root=root, node_options=("--cpu-prof",))
    az.ports = {"table": 10002}
    assert az._command()[:3] == [
        str(root / "node_modules" / ".bin" / "node"),
        "--cpu-prof",
        str(root / "node_modules" / ".bin" / "azurite-table"),
    ]


def test_no_node_at_all_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = _fake_project(tmp_path, None)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(AzuriteError, match=r"no Node\.js"):
        node_executable(root)
