"""Child processes of the bench (the service, the peer, py-spy), each stopped by its own PID."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from devtools.azurite import free_port
from devtools.children import app_env, stop_child

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS (KiB) of ``pid``, from /proc/<pid>/status."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmHWM:", "VmRSS:")):
                name, value = line.split(":", 1)
                out[name] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (seconds), from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def system_busy_seconds() -> float:
    """CPU seconds spent busy by the whole machine (all cores), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return ""


class ServiceProcess:
    """``python -m bench.server``: the app on ``devtools.localhost``'s host, with round-trip counting."""

    def __init__(self, connection_string: str, prefix: str, workdir: Path) -> None:
        self.connection_string = connection_string
        self.prefix = prefix
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.pid = 0
        self.log_path = workdir / "service.log"

    def env(self, port: int) -> dict[str, str]:
        return app_env(self.connection_string, self.prefix, HOST, port)

    def start(self, timeout: float = 30.0) -> ServiceProcess:
        port = free_port(HOST)
        ready = self.workdir / "service.ready"
        ready.unlink(missing_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.server", "--host", HOST, "--port", str(port), "--ready-file", str(ready)],
                cwd=ROOT,
                env=self.env(port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                stop_child(self.proc)
                raise RuntimeError(f"the service did not start:\n{self.log_tail()}")
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        self.port, self.pid = info["port"], info["pid"]
        return self

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.base_url}/_bench/stats", timeout=10) as r:  # loopback only
            return json.loads(r.read())  # type: ignore[no-any-return]

    def status(self) -> dict[str, int]:
        return proc_status(self.pid)

    def log_tail(self, limit: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def stop(self) -> None:
        stop_child(self.proc)


class PeerProcess:
    """The ``scim2-server`` peer (PyPI), in memory, one tenant per round (``--dynamic-tenants``)."""

    def __init__(self, workdir: Path, token: str) -> None:
        self.workdir = workdir
        self.token = token
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log_path = workdir / "peer.log"

    @staticmethod
    def available() -> bool:
        try:
            import scim2_server  # noqa: F401
        except ImportError:
            return False
        return True

    def start(self, timeout: float = 30.0) -> PeerProcess:
        import socket

        self.port = free_port(HOST)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "scim2_server.testserver.cli",
                    "--hostname",
                    HOST,
                    "--port",
                    str(self.port),
                    "--bearer-token",
                    self.token,
                    "--dynamic-tenants",
                ],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), timeout=0.5):
                return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                stop_child(self.proc)
                raise RuntimeError(f"scim2-server did not start:\n{self.log_path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)

    def tenant_url(self, tenant: str) -> str:
        return f"http://{HOST}:{self.port}/{tenant}/v2"

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def stop(self) -> None:
        stop_child(self.proc, signal.SIGINT)


class Profiler:
    """``py-spy record`` attached to a PID (raw collapsed stacks), stopped with SIGINT."""

    def __init__(self, pid: int, output: Path, rate: int = 100) -> None:
        self.pid, self.output, self.rate = pid, output, rate
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = output.with_suffix(".log")

    @staticmethod
    def executable() -> str | None:
        candidate = Path(sys.executable).parent / "py-spy"
        if candidate.exists():
            return str(candidate)
        import shutil

        return shutil.which("py-spy")

    def start(self) -> Profiler:
        exe = self.executable()
        if exe is None:
            raise RuntimeError("py-spy is not installed: `.venv/bin/pip install py-spy`")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [exe, "record", "-p", str(self.pid), "-r", str(self.rate), "--format", "raw", "-o", str(self.output)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        time.sleep(1.0)
        if self.proc.poll() is not None:
            raise RuntimeError(f"py-spy exited: {self.log_path.read_text(errors='replace')[-1000:]}")
        return self

    def stop(self) -> None:
        stop_child(self.proc, signal.SIGINT, timeout=60)
