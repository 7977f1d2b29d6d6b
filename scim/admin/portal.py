"""``python -m scim.admin portal ...`` and ``audit``: the tenant portal's setup links and audit trail (issue 14).

    python -m scim.admin portal link TENANT [--expires 7d] [--json]
    python -m scim.admin portal links TENANT [--json]
    python -m scim.admin portal revoke-links TENANT
    python -m scim.admin audit TENANT [--limit N] [--cursor C] [--json]

``portal link`` makes a setup link (:mod:`scim.portal.links`) for an existing tenant and prints
its URL and expiry: hand the URL to the tenant's IT admin, who opens it once to get into the
portal. The URL is shown once (only the SHA-256 of its secret is stored); ``--expires`` is 5m
to 30d (default 7d); with ``--json``, exactly ``{"url", "expires"}``. ``portal links`` lists the
tenant's links, newest first: id, status (open, used, expired, revoked), creation and by whom,
expiry, use and by whom (never a secret); with ``--json`` a list of objects (RFC 3339 times, or
null). ``portal revoke-links`` makes every open link of the tenant fail at once.

``audit`` prints the tenant's audit trail (:mod:`scim.portal.audit`), newest first, ``--limit``
entries a page (default 50), then the ``--cursor`` of the next page; every field is escaped for
the terminal (:func:`scim.admin.terminal.printable`: actors and details come from the portal);
``--json`` prints ``{"entries": [...], "cursor": ...}``.

``portal link`` and ``portal revoke-links`` record ``link.created`` and ``links.revoked`` in the
audit trail, with actor ``cli``. The commands work on the stores of the app's settings (:func:`run`
builds the runtime, :func:`~scim.functions.runtime.build_runtime`, and closes it), or on a
runtime the caller passes (the tests pass the memory one). An unknown tenant (or, for ``portal
link``, one being deleted) prints one ``error:`` line on stderr and returns 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from scim.admin.terminal import printable
from scim.credentials import parse_duration
from scim.portal.audit import AuditEntry, check_cursor
from scim.portal.links import SetupLink, check_expiry, format_time
from scim.tenants import DELETING, TenantDeleting, TenantNotFound, validate_tenant_name

if TYPE_CHECKING:
    from scim.functions.runtime import Runtime
    from scim.settings import Settings

__all__ = ["ACTOR", "AUDIT_GROUP", "GROUP", "GROUPS", "add_commands", "expires_argument", "precheck", "run"]

GROUP = "portal"
"""The CLI's command group for setup links (``args.group``)."""
AUDIT_GROUP = "audit"
"""The CLI's command group (a command of its own) for the audit trail."""
GROUPS = (GROUP, AUDIT_GROUP)
ACTOR = "cli"
"""Who the audit trail says acted, for these commands."""
DEFAULT_EXPIRES = "7d"


def expires_argument(text: str) -> timedelta:
    """``--expires``: a duration from 5m to 30d (an argparse type: a bad value is a usage error)."""
    try:
        seconds = parse_duration(text)
        assert seconds is not None
        return check_expiry(timedelta(seconds=seconds))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_commands(groups: Any) -> None:
    """Add ``portal link|links|revoke-links`` and ``audit`` to the CLI's subparsers (``groups``)."""
    portal = groups.add_parser(
        GROUP, help="the tenant portal's setup links: a URL that lets a tenant's IT admin in, once"
    ).add_subparsers(dest="action", required=True)
    link = portal.add_parser("link", help="make a setup link for a tenant and print its URL (once) and expiry")
    link.add_argument("name", metavar="TENANT")
    link.add_argument(
        "--expires",
        type=expires_argument,
        default=expires_argument(DEFAULT_EXPIRES),
        help=f"the link stops working after this (5m to 30d; default {DEFAULT_EXPIRES})",
    )
    link.add_argument("--json", action="store_true", help="print one JSON object (url, expires)")
    links = portal.add_parser("links", help="list a tenant's setup links: id, status, times, by whom (no secret)")
    links.add_argument("name", metavar="TENANT")
    links.add_argument("--json", action="store_true")
    revoke = portal.add_parser("revoke-links", help="make every open setup link of a tenant fail at once")
    revoke.add_argument("name", metavar="TENANT")
    audit = groups.add_parser(AUDIT_GROUP, help="read a tenant's audit trail (portal and CLI actions), newest first")
    audit.add_argument("name", metavar="TENANT")
    audit.add_argument("--limit", type=int, default=50, help="entries per page (default 50, at most 1000)")
    audit.add_argument("--cursor", help="continue after a previous page (printed at its end)")
    audit.add_argument("--json", action="store_true")


def precheck(args: argparse.Namespace) -> None:
    """What ``main`` checks before any storage I/O: the tenant name and the cursor. Raises
    InvalidTenantName or ValueError."""
    validate_tenant_name(args.name)
    if args.group == AUDIT_GROUP:
        check_cursor(args.cursor)


async def run(args: argparse.Namespace, settings: Settings, runtime: Runtime | None = None) -> int:
    """Carry out one ``portal`` or ``audit`` command and print its outcome; 1 with an ``error:``
    line on stderr for an unknown tenant, or a tenant being deleted (``portal link``).

    ``runtime``: the stores to use (left open); by default the app's, built from ``settings``
    and closed here.
    """
    owned = None
    if runtime is None:
        from scim.functions.runtime import build_runtime  # the Azure SDK: imported when used

        runtime = owned = build_runtime(settings)
    try:
        return await _run(args, settings, runtime)
    except TenantNotFound:
        print(f"error: no tenant {args.name!r}", file=sys.stderr)
    except TenantDeleting as exc:
        print(f"error: {exc}", file=sys.stderr)
    finally:
        if owned is not None:
            await owned.close()
    return 1


async def _tenant(runtime: Runtime, name: str, *, active: bool = False) -> str:
    """``name`` if the tenant exists (and, with ``active``, is not being deleted)."""
    state = await runtime.tenants.state(validate_tenant_name(name))
    if state is None:
        raise TenantNotFound(name)
    if active and state == DELETING:
        raise TenantDeleting(name)
    return name


async def create_link(
    runtime: Runtime, settings: Settings, name: str, expires: timedelta, actor: str
) -> tuple[str, SetupLink]:
    """A setup link of tenant ``name`` (which must exist and not be being deleted), recorded in
    its audit trail: the URL (shown once) and the link."""
    name = await _tenant(runtime, name, active=True)
    secret, link = await runtime.portal_links.create(name, expires, actor)
    await runtime.audit.record(
        AuditEntry(name, actor, "link.created", {"link": link.id, "expires": format_time(link.expires)})
    )
    return settings.portal_setup_url(secret), link


async def _run(args: argparse.Namespace, settings: Settings, runtime: Runtime) -> int:
    if args.group == AUDIT_GROUP:
        return await _audit(args, runtime)
    if args.action == "link":
        url, link = await create_link(runtime, settings, args.name, args.expires, ACTOR)
        name = link.tenant
        if args.json:
            print(json.dumps({"url": url, "expires": format_time(link.expires)}))
        else:
            print(f"Setup link: {url}")
            print(f"Expires: {format_time(link.expires)}")
        print(
            f"Give the link to {name}'s IT admin: it opens the tenant portal once, until it expires. It is shown "
            f"once and will not be shown again: only its SHA-256 hash is stored (link id {link.id}).\n"
            f"To make every open link fail: python -m scim.admin portal revoke-links {name}",
            file=sys.stderr,
        )
    elif args.action == "links":
        name = await _tenant(runtime, args.name)
        listed = await runtime.portal_links.list(name)
        if args.json:
            print(json.dumps([link.to_json() for link in listed]))
        else:
            for link in listed:
                print(_link_line(link))
            if not listed:
                print(
                    f"tenant {name} has no setup links (make one with: python -m scim.admin portal link {name})",
                    file=sys.stderr,
                )
    elif args.action == "revoke-links":
        name = await _tenant(runtime, args.name)
        revoked = await runtime.portal_links.revoke_all(name)
        await runtime.audit.record(AuditEntry(name, ACTOR, "links.revoked", {"count": str(revoked)}))
        print(
            f"Revoked {revoked} open setup link{'' if revoked == 1 else 's'} of tenant {name}: they stop working at once."
        )
    return 0


def _link_line(link: SetupLink) -> str:
    """One link in the human format; ``created_by``/``used_by`` come from the portal, so every field is escaped."""
    p = printable
    used = f"used {format_time(link.used)} by {p(link.used_by)}" if link.used is not None else ""
    revoked = f"revoked {format_time(link.revoked)}" if link.revoked is not None else ""
    fields = [
        link.id,
        link.status(),
        f"created {format_time(link.created)} by {p(link.created_by)}",
        f"expires {format_time(link.expires)}",
        used or revoked,
    ]
    return "\t".join(p(f) for f in fields if f)


async def _audit(args: argparse.Namespace, runtime: Runtime) -> int:
    name = await _tenant(runtime, args.name)
    page = await runtime.audit.page(name, limit=max(1, args.limit), cursor=check_cursor(args.cursor))
    if args.json:
        print(json.dumps({"entries": [e.to_json() for e in page.entries], "cursor": page.cursor}))
        return 0
    p = printable
    for entry in page.entries:
        detail = " ".join(f"{p(k)}={p(v)}" for k, v in sorted(entry.detail.items()))
        print(f"{p(entry.time)}  {p(entry.actor)}  {p(entry.action)}  {detail}".rstrip())
    if page.cursor:
        print(f"-- more: add --cursor {p(page.cursor)}")
    if not page.entries and args.cursor is None:
        print(f"tenant {name} has no audit entries", file=sys.stderr)
    return 0
