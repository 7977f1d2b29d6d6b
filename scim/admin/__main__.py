"""``python -m scim.admin``: manage tenants, Secret Tokens, failure digests and the provisioning log.

    python -m scim.admin tenant create NAME [--notify ADDR ...] [--expires 90d] [--token-expires 90d] [--json]
    python -m scim.admin tenant update NAME [--notify ADDR ...] [--notify-on | --notify-off] [--token-expires 90d|never]
    python -m scim.admin tenant list [--json]
    python -m scim.admin tenant delete NAME [--yes]
    python -m scim.admin token regenerate NAME [--expires 90d|never] [--json]
    python -m scim.admin token rotate NAME [--overlap 24h] [--expires 90d|never] [--json]
    python -m scim.admin token list NAME [--json] | token revoke NAME ID
    python -m scim.admin oauth-client create TENANT [--json] | oauth-client list TENANT [--json]
    python -m scim.admin oauth-client revoke TENANT CLIENT_ID
    python -m scim.admin portal link TENANT [--expires 7d] [--json] | portal links TENANT [--json]
    python -m scim.admin portal revoke-links TENANT
    python -m scim.admin audit TENANT [--limit N] [--cursor C] [--json]
    python -m scim.admin log NAME [--failures] [--since 2h|2026-11-26T10:00:00Z] [--limit N] [--cursor C] [--json]
    python -m scim.admin notify run-now NAME
    python -m scim.admin app-key create NAME [--json] | app-key list [--json] | app-key revoke NAME [--yes]
    python -m scim.admin events TENANT [--after CURSOR] [--limit N] [--follow] [--json]
    python -m scim.admin webhook add URL [--tenant T ...] [--events TYPE,...] [--json] | webhook list [--json]
    python -m scim.admin webhook remove ID [--yes] | webhook rotate-secret ID [--json]
    python -m scim.admin webhook replay ID --since TIME [--tenant T ...] [--json]
    python -m scim.admin webhook enable ID | webhook disable ID

``tenant delete`` cannot be undone: on a terminal it asks you to type the tenant name;
``--yes`` skips that (scripts); without a terminal and without ``--yes`` it refuses. It revokes
the token first and removes the tenant's record last, so if it stops part way (it then says
so), running it again finishes the job; meanwhile ``tenant list`` shows the tenant as
``deleting`` and ``tenant create`` refuses the name.

``token regenerate`` and ``token rotate`` print a token only if it is the one stored: when
another change of the tenant's tokens came in between, they say so and exit 1 (run it again).
Tokens (:mod:`scim.admin.tokens`): ``regenerate`` makes every other token fail at once;
``rotate`` keeps the others working for the overlap; ``revoke`` ends one at once; ``--expires``
overrides the tenant's default lifetime (``tenant update --token-expires``).

``log`` prints control characters of logged values (which come from SCIM requests) as
``\\xNN`` / ``\\uNNNN`` escapes, so no logged text can drive the terminal; ``--json`` escapes
them as JSON does.

``events`` prints a tenant's change events feed (:mod:`scim.admin.events`); with ``--follow`` it
runs until Ctrl-C, which exits 0.

``webhook`` manages the webhook endpoints and their delivery (:mod:`scim.admin.webhooks`):
``list`` shows each one's state, last success and error, and backlog; ``replay`` delivers again
the events committed since a time; ``disable`` and ``enable`` stop and resume deliveries.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from azure.core.exceptions import AzureError

from scim.admin import app_keys, core, events, oauth_clients, portal, tokens, webhooks
from scim.admin.terminal import printable
from scim.app_keys import AppKeyExists, AppKeyNotFound
from scim.credentials import format_duration
from scim.functions.runtime import build_runtime
from scim.provisioning_log import LogEntry, parse_since
from scim.settings import Settings
from scim.store.base import StoreError
from scim.tenants import (
    InvalidTenantName,
    TenantDeleting,
    TenantExists,
    TenantInfo,
    TenantNotFound,
    TokenConflict,
    validate_tenant_name,
)
from scim.webhooks import WebhookNotFound


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scim.admin",
        description="Manage SCIM tenants, tokens, digests, logs, application keys and webhooks.",
    )
    groups = parser.add_subparsers(dest="group", required=True)
    tenant = groups.add_parser("tenant", help="create, update, list or delete tenants").add_subparsers(
        dest="action", required=True
    )
    create = tenant.add_parser("create", help="create a tenant and print its Tenant URL and Secret Token")
    create.add_argument("name")
    create.add_argument(
        "--notify", action="append", default=[], metavar="ADDRESS", help="email failure digests here (repeatable)"
    )
    create.add_argument(
        "--expires", type=tokens.expiry_argument, default=None, help="the first token stops working after this (90d)"
    )
    create.add_argument(
        "--token-expires",
        type=tokens.expiry_argument,
        default=None,
        help="the tenant's default lifetime of later tokens (90d; default: never)",
    )
    create.add_argument(
        "--json", action="store_true", help="print one JSON object (tenant, url, token, token_id, expires)"
    )
    update = tenant.add_parser("update", help="change a tenant's failure digest settings")
    update.add_argument("name")
    update.add_argument(
        "--notify", action="append", metavar="ADDRESS", help="the digest recipients (repeatable; replaces the list)"
    )
    switch = update.add_mutually_exclusive_group()
    switch.add_argument("--notify-on", dest="enabled", action="store_const", const=True, help="send digests")
    switch.add_argument("--notify-off", dest="enabled", action="store_const", const=False, help="stop sending digests")
    update.add_argument(
        "--token-expires",
        type=tokens.expiry_argument,
        default=tokens.DEFAULT,
        help="the default lifetime of the tenant's new tokens (90d, or never)",
    )
    listing = tenant.add_parser("list", help="list tenants")
    listing.add_argument("--json", action="store_true")
    delete = tenant.add_parser(
        "delete", help="delete a tenant, its token, its directory and its log (asks to type the name; resumable)"
    )
    delete.add_argument("name")
    delete.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation (scripts)")
    tokens.add_commands(groups)
    log = groups.add_parser("log", help="read a tenant's provisioning log, newest first")
    log.add_argument("name")
    log.add_argument("--failures", action="store_true", help="failed requests only")
    log.add_argument("--since", help="a time (2026-11-26T10:00:00Z) or a duration back from now (30m, 2h, 7d)")
    log.add_argument("--limit", type=int, default=50, help="entries per page (default 50)")
    log.add_argument("--cursor", help="continue after a previous page (printed at its end)")
    log.add_argument("--json", action="store_true")
    notify = groups.add_parser("notify", help="failure digests").add_subparsers(dest="action", required=True)
    run_now = notify.add_parser("run-now", help="send the tenant's failure digest now")
    run_now.add_argument("name")
    app_keys.add_commands(groups)
    oauth_clients.add_commands(groups)
    events.add_commands(groups)
    webhooks.add_commands(groups)
    portal.add_commands(groups)
    return parser


def _tenant_json(settings: Settings, info: TenantInfo) -> dict[str, object]:
    return {
        "tenant": info.name,
        "url": settings.tenant_url(info.name),
        "created": info.created,
        "notify": list(info.notify),
        "notify_enabled": info.notify_enabled,
        "state": info.state,
        "entra_tid": info.entra_tid,
    }


def _log_line(entry: LogEntry) -> str:
    """One entry in the human format; every field comes from a SCIM request, so each is escaped."""
    p = printable
    where = f" {p(entry.resource_type)} {p(entry.resource_id)}" if entry.resource_id else ""
    subject = f" ({p(entry.subject)})" if entry.subject else ""
    error = f" {p(entry.scim_type)} {p(entry.detail)}".rstrip() if entry.failed else ""
    return (
        f"{p(entry.time)}  {p(entry.status)}  {p(entry.operation)}{where}{subject}{error}"
        f"  [{p(entry.correlation_id)}, {entry.duration_ms:.0f} ms]"
    )


def _confirm_delete(name: str) -> str | None:
    """Ask the operator on a terminal to type the tenant's name: None if they did, else why not."""
    if sys.stdin is None or not sys.stdin.isatty():
        return (
            f"tenant delete cannot be undone and asks to type the tenant name on a terminal; "
            f"to delete {name!r} from a script, pass --yes"
        )
    print(
        f"This deletes tenant {name!r}: its Secret Token, its users and groups, its provisioning log and its "
        "digest settings. It cannot be undone.",
        file=sys.stderr,
    )
    print("Type the tenant name to confirm: ", end="", file=sys.stderr, flush=True)
    try:
        answer = sys.stdin.readline()
    except (EOFError, KeyboardInterrupt):
        answer = ""
    if answer.strip() != name:
        return "the name typed does not match; nothing was deleted"
    return None


async def _run(args: argparse.Namespace) -> int:
    settings = core.load_settings()
    if args.group in portal.GROUPS:
        return await portal.run(args, settings)
    if args.group == app_keys.GROUP:
        return await app_keys.run(args, app_keys.open_registry(settings), settings.public_base_url)
    if args.group == events.GROUP:
        return await events.run(args, settings)
    if args.group == webhooks.GROUP:
        hooks, stores = webhooks.open_stores(settings)  # one Table client: registry, tenants, feeds, delivery
        return await webhooks.run(args, hooks, in_azure=webhooks.azure_policy(settings), stores=stores)
    if args.group == oauth_clients.GROUP:
        return await oauth_clients.run(args, settings)
    if args.group == tokens.GROUP:
        runtime = build_runtime(settings)
        try:
            return await tokens.run(args, runtime.tenants, settings, runtime.audit)
        finally:
            await runtime.close()
    if args.group == "tenant" and args.action == "create":
        credentials = await core.create_tenant(
            settings, args.name, notify=args.notify, expires=args.expires, token_lifetime=args.token_expires
        )
        print(credentials.to_json() if args.json else credentials.lines())
        if not args.json and credentials.expires:
            print(credentials.details(), file=sys.stderr)
    elif args.group == "tenant" and args.action == "update":
        if args.token_expires is not tokens.DEFAULT:
            await core.set_token_lifetime(settings, args.name, args.token_expires)
            lifetime = "never" if args.token_expires is None else format_duration(args.token_expires)
            print(f"New Secret Tokens of {args.name} expire after: {lifetime}.")
        if args.notify is not None or args.enabled is not None or args.token_expires is tokens.DEFAULT:
            info = await core.update_notifications(settings, args.name, args.notify, args.enabled)
            state = "on" if info.notify_enabled else "off"
            print(f"Failure digests for {info.name}: {state}, to {', '.join(info.notify) or 'nobody'}.")
    elif args.group == "tenant" and args.action == "list":
        tenants = await core.list_tenants(settings)
        if args.json:
            print(json.dumps([_tenant_json(settings, t) for t in tenants]))
        for t in [] if args.json else tenants:
            digests = f"digests to {', '.join(t.notify)}" if t.notify_enabled and t.notify else "digests off"
            if t.deleting:
                digests = f"deleting (not finished: run tenant delete {t.name})"
            print(
                "\t".join(printable(f) for f in (t.name, settings.tenant_url(t.name), f"created {t.created}", digests))
            )
    elif args.group == "tenant" and args.action == "delete":
        resumed = await core.delete_tenant(settings, args.name)
        print(f"Finished deleting tenant {args.name}." if resumed else f"Deleted tenant {args.name}.")
    elif args.group == "log":
        since = parse_since(args.since) if args.since else None
        page = await core.read_log(
            settings, args.name, failures_only=args.failures, since=since, limit=max(1, args.limit), cursor=args.cursor
        )
        if args.json:
            print(json.dumps({"entries": [e.to_json() for e in page.entries], "cursor": page.cursor}))
        else:
            for entry in page.entries:
                print(_log_line(entry))
            if page.cursor:
                print(f"-- more: add --cursor {printable(page.cursor)}")
    elif args.group == "notify" and args.action == "run-now":
        result = await core.notify_now(settings, args.name)
        print(
            f"{result.tenant}: {result.outcome}"
            + (f", {result.failures} failures" if result.failures else "")
            + (f" ({result.reason})" if result.reason else "")
        )
        return 0 if result.outcome in ("sent", "nothing") else 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.group == "tenant" and args.action == "delete":
            validate_tenant_name(args.name)
            refused = None if args.yes else _confirm_delete(args.name)
            if refused is not None:
                print(f"error: {refused}", file=sys.stderr)
                return 1
        if args.group in portal.GROUPS:
            portal.precheck(args)  # InvalidTenantName / bad --cursor before any storage I/O
        if args.group == oauth_clients.GROUP:
            oauth_clients.precheck(args)  # InvalidTenantName before any storage I/O
        if args.group == app_keys.GROUP and (refused := app_keys.precheck(args)) is not None:
            print(f"error: {refused}", file=sys.stderr)
            return 1
        if args.group == webhooks.GROUP and (refused := webhooks.precheck(args)) is not None:
            print(f"error: {refused}", file=sys.stderr)
            return 1
        if args.group == events.GROUP:
            validate_tenant_name(args.name)
            signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even from a background job
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        if args.group == events.GROUP:
            return 0  # --follow runs until Ctrl-C
        raise
    except TenantDeleting as exc:
        print(f"error: {exc}", file=sys.stderr)
    except TokenConflict:
        print(
            "error: the token was changed concurrently; run the command again (no token was issued)",
            file=sys.stderr,
        )
    except core.DeleteInterrupted as exc:
        print(f"error: {exc}", file=sys.stderr)
    except (AppKeyExists, AppKeyNotFound, WebhookNotFound) as exc:
        print(f"error: {exc}", file=sys.stderr)
    except TenantExists:
        print(f"error: tenant {args.name!r} already exists", file=sys.stderr)
    except TenantNotFound:
        print(f"error: no tenant {args.name!r}", file=sys.stderr)
    except InvalidTenantName as exc:
        print(f"error: {exc}", file=sys.stderr)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except (OSError, StoreError, AzureError) as exc:
        print(
            f"error: cannot reach Table storage ({exc.__class__.__name__}); is Azurite running? (make run starts it)",
            file=sys.stderr,
        )
    return 1


if __name__ == "__main__":
    sys.exit(main())
