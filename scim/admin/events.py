"""``python -m scim.admin events TENANT``: a tenant's change events feed, on the operator's terminal.

    python -m scim.admin events TENANT [--after CURSOR] [--limit N] [--follow] [--json]

The feed the application reads over HTTP (``GET /api/v1/tenants/{tenant}/events``), read here
through the same core logic (:func:`scim.core.feed.read_page`) straight from Table storage, with
the app's settings (``EVENTS_SETTLE_SECONDS``, ``EVENTS_RETENTION_DAYS``): the same pages, the
same cursors, and the same settle delay (the newest events show about 15 s after their commit).

- Without ``--follow`` it prints every page up to the settle horizon of the moment it started,
  then exits, and prints the cursor to resume from on stderr (``next: CURSOR``): pass it as
  ``--after`` next time.
- With ``--follow`` it keeps reading, following ``next``: at once while pages come full, else
  every :data:`POLL_SECONDS`, until Ctrl-C (exit status 0; ``next:`` is printed then too).
- One line per event: its time, type, resource id and ``userName``/``displayName`` (group and
  member for membership events), every field with control characters escaped
  (:func:`scim.admin.terminal.printable`), since they come from SCIM requests. ``--json`` prints each event as one
  JSON object per line (non-ASCII escaped), as the HTTP feed serves it.
- ``--limit`` is the page size (1-1000, default 100): how many events one storage query reads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scim.admin.terminal import printable
from scim.core.feed import DEFAULT_LIMIT, MAX_LIMIT, read_page
from scim.functions.runtime import Runtime, build_runtime
from scim.settings import Settings
from scim.store.event_timing import wall_us

__all__ = ["GROUP", "POLL_SECONDS", "add_commands", "event_line", "run"]

GROUP = "events"
"""The CLI's command (``args.group``)."""
POLL_SECONDS = 1.5
"""How long ``--follow`` waits after a page that was not full."""


def add_commands(groups: Any) -> None:
    """Add ``events TENANT ...`` to the CLI's subparsers (``groups``)."""
    events = groups.add_parser(GROUP, help="print a tenant's change events feed (--follow keeps printing new ones)")
    events.add_argument("name", metavar="TENANT")
    events.add_argument("--after", metavar="CURSOR", help="continue after this cursor (printed as 'next:' on stderr)")
    events.add_argument(
        "--limit", type=int, default=DEFAULT_LIMIT, help=f"events per page, 1-{MAX_LIMIT} (default {DEFAULT_LIMIT})"
    )
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events until Ctrl-C")
    events.add_argument("--json", action="store_true", help="one JSON object per event and line")


def _name(resource: Mapping[str, Any]) -> object:
    return resource.get("userName") or resource.get("displayName") or ""


def event_line(event: Mapping[str, Any]) -> str:
    """One event in the human format: time, type, the resource's id and name (escaped)."""
    raw = event.get("data")
    data: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
    p = printable
    if isinstance(data.get("object"), dict):
        obj = data["object"]
        what = f"{p(obj.get('id'))}  {p(_name(obj))}"
    elif isinstance(data.get("group"), dict) and isinstance(data.get("member"), dict):
        group, member = data["group"], data["member"]
        what = f"group {p(group.get('id'))} {p(_name(group))}  member {p(member.get('id'))} {p(_name(member))}"
    else:
        what = ""
    return f"{p(event.get('time'))}  {p(event.get('type'))}  {what}".rstrip()


@dataclass
class _Reader:
    """Where the feed is: the cursor of the next page (``None``: from the oldest retained event)."""

    runtime: Runtime
    tenant: str
    cursor: str | None
    limit: int
    as_json: bool
    pages: int = 0

    async def page(self, now: int | None = None) -> int:
        """Read and print one page; returns how many events it held."""
        settings = self.runtime.settings
        page = await read_page(
            self.runtime.store,
            self.tenant,
            self.cursor,
            self.limit,
            now,
            settle_seconds=settings.events_settle_seconds,
            retention_days=settings.events_retention_days,
        )
        for event in page["data"]:
            print(json.dumps(event) if self.as_json else event_line(event))
        sys.stdout.flush()
        self.cursor = page["next"]
        self.pages += 1
        return len(page["data"])


async def run(args: argparse.Namespace, settings: Settings) -> int:
    """Print the feed of ``args.name`` (see the module docstring); raises TenantNotFound,
    :class:`scim.core.feed.FeedError` (a ValueError) for a bad ``--limit``/``--after``."""
    runtime = build_runtime(settings)
    reader = _Reader(runtime, args.name, args.after or None, args.limit, args.json)
    try:
        await runtime.tenants.info(args.name)  # TenantNotFound for an unknown tenant
        if args.follow:
            while True:
                if await reader.page() < reader.limit:
                    await asyncio.sleep(POLL_SECONDS)
        now = wall_us()  # every page up to this moment's horizon, then stop
        while await reader.page(now):
            pass
    finally:
        if reader.pages:  # where to resume (--after), once a page was read
            print(f"next: {reader.cursor}", file=sys.stderr, flush=True)
        await runtime.close()
    return 0
