"""A local SMTP sink for development: ``make run`` starts it so a failure digest can be seen arriving.

It listens on 127.0.0.1:1025 (``SMTP_SINK_HOST``/``SMTP_SINK_PORT`` of
:mod:`devtools.local_defaults`), accepts every message, prints a one-line summary to stderr and
keeps each message as ``.local/mail/<time>-<n>.eml`` under the project. It needs ``aiosmtpd`` (a development dependency) and is never deployed.
"""

from __future__ import annotations

import email
import sys
import time
from dataclasses import dataclass, field
from email.policy import default
from pathlib import Path
from typing import Any

from devtools.local_defaults import SMTP_SINK_HOST, SMTP_SINK_PORT

__all__ = ["DEFAULT_PORT", "SmtpSink"]

DEFAULT_PORT = SMTP_SINK_PORT
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class _Handler:
    folder: Path
    received: int = 0
    summaries: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd's handler name
        self.received += 1
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{time.strftime('%Y%m%dT%H%M%S')}-{self.received}.eml"
        path.write_bytes(envelope.content)
        message = email.message_from_bytes(envelope.content, policy=default)
        summary = f"[smtp sink] mail to {', '.join(envelope.rcpt_tos)}: {message['Subject']} (saved to {path})"
        self.summaries.append(summary)
        print(summary, file=sys.stderr, flush=True)
        return "250 OK"


class SmtpSink:
    """Start and stop the sink (an aiosmtpd controller on its own thread)."""

    def __init__(self, port: int = DEFAULT_PORT, folder: Path | None = None) -> None:
        self.port = port
        self.handler = _Handler(folder or PROJECT_ROOT / ".local" / "mail")
        self._controller: Any = None

    def start(self) -> SmtpSink:
        from aiosmtpd.controller import Controller

        self._controller = Controller(self.handler, hostname=SMTP_SINK_HOST, port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


if __name__ == "__main__":
    sink = SmtpSink().start()
    print(f"SMTP sink on {SMTP_SINK_HOST}:{sink.port}; Ctrl-C to stop", file=sys.stderr)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        sink.stop()
