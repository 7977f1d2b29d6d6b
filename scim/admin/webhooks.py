"""``python -m scim.admin webhook ...``: the webhook endpoints of :mod:`scim.webhooks`.

    python -m scim.admin webhook add URL [--tenant T ...] [--events TYPE,...] [--json]
    python -m scim.admin webhook list [--json]
    python -m scim.admin webhook remove ID [--yes]
    python -m scim.admin webhook rotate-secret ID [--json]

``add`` checks the URL for where the app runs (:mod:`scim.webhook_urls`: in Azure, or from a
machine working on Azure storage (``SCIM_TABLE_ENDPOINT``), only public ``https://`` targets,
every address the host resolves to; locally also ``http://`` to this machine: :func:`azure_policy`) and prints the endpoint's signing secret once; ``rotate-secret`` prints a new one (the
previous one keeps signing for 24 h). The secrets are stored as they are (they sign every
delivery) and ``list`` never prints them. ``remove`` asks to type the endpoint id on a terminal;
``--yes`` skips that (scripts); without a terminal and without ``--yes`` it refuses.

Delivery is not built yet: endpoints are registered, nothing is sent to them so far.

The commands work on the Table storage of the app's settings (:func:`open_registry`);
:func:`run` takes any :class:`~scim.webhooks.WebhookRegistry` (the tests pass the memory one).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from scim.admin.terminal import printable
from scim.core.events import EVENT_TYPES
from scim.webhook_urls import Resolver, check_url, parse_webhook_url, resolve
from scim.webhooks import (
    ROTATION_OVERLAP,
    WebhookEndpoint,
    WebhookNotFound,
    WebhookRegistry,
    format_time,
    is_endpoint_id,
    normalise_events,
    normalise_tenants,
)

if TYPE_CHECKING:
    from scim.settings import Settings

__all__ = [
    "GROUP",
    "add_commands",
    "azure_policy",
    "confirm_remove",
    "endpoint_json",
    "open_registry",
    "precheck",
    "run",
]

GROUP = "webhook"
"""The CLI's command group (``args.group``)."""

VERIFY_HINT = """\
Verify each delivery before trusting it (Standard Webhooks; pip install standardwebhooks):
    from standardwebhooks import Webhook
    event = Webhook(SECRET).verify(request_body, request_headers)  # raises if forged, altered or stale
Deduplicate on the webhook-id header (the event id): an event may arrive more than once."""


def add_commands(groups: Any) -> None:
    """Add ``webhook add|list|remove|rotate-secret`` to the CLI's subparsers (``groups``)."""
    hooks = groups.add_parser("webhook", help="webhook endpoints: where change events are pushed").add_subparsers(
        dest="action", required=True
    )
    add = hooks.add_parser("add", help="register an endpoint and print its signing secret (once)")
    add.add_argument("url", help="https://... (locally also http://127.0.0.1:PORT/...)")
    add.add_argument(
        "--tenant", action="append", dest="tenants", metavar="TENANT", help="only this tenant's events (repeatable)"
    )
    add.add_argument(
        "--events",
        action="append",
        metavar="TYPE,...",
        help=f"only these event types, comma-separated (repeatable): {', '.join(sorted(EVENT_TYPES))}",
    )
    add.add_argument("--json", action="store_true", help="print one JSON object (id, url, secret)")
    listing = hooks.add_parser("list", help="list endpoints, their filters and state (never secrets)")
    listing.add_argument("--json", action="store_true")
    remove = hooks.add_parser("remove", help="delete an endpoint (asks to type its id)")
    remove.add_argument("id")
    remove.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation (scripts)")
    rotate = hooks.add_parser("rotate-secret", help="make a new signing secret; the previous one signs 24 h more")
    rotate.add_argument("id")
    rotate.add_argument("--json", action="store_true", help="print one JSON object (id, secret, previous_until)")


def azure_policy(settings: Settings) -> bool:
    """Whether ``add`` applies the Azure URL policy: in Azure, and also from an operator's machine
    working on Azure storage (``SCIM_TABLE_ENDPOINT``), whose endpoints the app in Azure delivers
    to (``http://127.0.0.1`` there would be the app's own instance)."""
    return settings.in_azure or bool(settings.table_endpoint)


def open_registry(settings: Settings) -> WebhookRegistry:
    """The endpoints on the Table storage the settings name."""
    from scim.store.webhooks_tables import TableWebhookRegistry  # the Azure SDK: imported when used

    return TableWebhookRegistry.from_settings(settings)


def _event_types(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [t.strip() for value in values for t in value.split(",") if t.strip()]


def confirm_remove(endpoint_id: str) -> str | None:
    """Ask the operator on a terminal to type the endpoint id: None if they did, else why not."""
    if sys.stdin is None or not sys.stdin.isatty():
        return (
            f"webhook remove cannot be undone and asks to type the endpoint id on a terminal; "
            f"to remove {endpoint_id} from a script, pass --yes"
        )
    print(
        f"This removes webhook endpoint {endpoint_id}: no more events are delivered to it. "
        "It cannot be undone (the URL can be added again, with a new secret).",
        file=sys.stderr,
    )
    print("Type the endpoint id to confirm: ", end="", file=sys.stderr, flush=True)
    try:
        answer = sys.stdin.readline()
    except (EOFError, KeyboardInterrupt):
        answer = ""
    if answer.strip() != endpoint_id:
        return "the id typed does not match; nothing was removed"
    return None


def precheck(args: argparse.Namespace) -> str | None:
    """What ``main`` checks before any network or storage I/O: the URL's form, the filters, the
    id, and a remove's confirmation. Returns why the command is refused, or None; raises
    ValueError (UnsafeWebhookUrl, InvalidWebhookFilter) and WebhookNotFound (a malformed id)."""
    if args.action == "add":
        parse_webhook_url(args.url)
        normalise_tenants(args.tenants)
        normalise_events(_event_types(args.events))
    if args.action in ("remove", "rotate-secret") and not is_endpoint_id(args.id):
        raise WebhookNotFound(args.id)
    if args.action == "remove" and not args.yes:
        return confirm_remove(args.id)
    return None


def endpoint_json(endpoint: WebhookEndpoint) -> dict[str, Any]:
    """What ``list --json`` shows of an endpoint: everything but its secrets."""
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "tenants": None if endpoint.tenants is None else list(endpoint.tenants),
        "events": None if endpoint.events is None else list(endpoint.events),
        "state": endpoint.state,
        "created": endpoint.created,
        "last_success": endpoint.last_success,
        "last_error": endpoint.last_error,
        "last_error_at": endpoint.last_error_at,
        "failing_since": endpoint.failing_since,
        "disabled_reason": endpoint.disabled_reason,
        "disabled_at": endpoint.disabled_at,
        "previous_secret_until": endpoint.previous_secret_until if endpoint.previous_secret else None,
    }


def _line(endpoint: WebhookEndpoint) -> str:
    """One endpoint in the human format (the last error comes from a remote server: escaped)."""
    state = endpoint.state
    if not endpoint.enabled and endpoint.disabled_reason:
        state += f" ({endpoint.disabled_reason})"
    fields = [
        endpoint.id,
        endpoint.url,
        state,
        "tenants " + (",".join(endpoint.tenants) if endpoint.tenants is not None else "all"),
        "events " + (",".join(endpoint.events) if endpoint.events is not None else "all"),
        f"created {endpoint.created}",
        f"last success {endpoint.last_success or 'never'}",
    ]
    if endpoint.last_error:
        fields.append(f"last error {endpoint.last_error_at} {endpoint.last_error}")
    return "\t".join(printable(f) for f in fields)


async def run(args: argparse.Namespace, hooks: WebhookRegistry, *, in_azure: bool, resolver: Resolver = resolve) -> int:
    """Carry out one ``webhook`` command on ``hooks`` and print its outcome; closes ``hooks``."""
    try:
        if args.action == "add":
            await check_url(args.url, in_azure=in_azure, resolver=resolver)
            endpoint_id, secret = await hooks.add(args.url, args.tenants, _event_types(args.events))
            if args.json:
                print(json.dumps({"id": endpoint_id, "url": args.url, "secret": secret}))
            else:
                print(f"Webhook endpoint {endpoint_id}: {args.url}")
                print(f"Signing secret: {secret}")
                print(
                    "The signing secret is shown once (and again only by rotate-secret): keep it in the receiver's "
                    f"secret store.\n{VERIFY_HINT}\n"
                    "Note: delivery is not built yet; the endpoint is registered and nothing is sent to it so far.",
                    file=sys.stderr,
                )
        elif args.action == "list":
            listed = await hooks.list()
            if args.json:
                print(json.dumps([endpoint_json(e) for e in listed]))
            else:
                for endpoint in listed:
                    print(_line(endpoint))
                if not listed:
                    print("no webhook endpoints (add one with: python -m scim.admin webhook add URL)", file=sys.stderr)
        elif args.action == "remove":
            await hooks.remove(args.id)
            print(f"Removed webhook endpoint {args.id}.")
        elif args.action == "rotate-secret":
            now = datetime.now(UTC)
            secret = await hooks.rotate_secret(args.id, now)
            until = format_time(now + ROTATION_OVERLAP)
            if args.json:
                print(json.dumps({"id": args.id, "secret": secret, "previous_until": until}))
            else:
                print(f"New signing secret for {args.id}: {secret}")
                print(
                    f"Deliveries are signed with both the new and the previous secret until {until}: switch the "
                    "receiver to the new secret before then. The new secret is shown once.",
                    file=sys.stderr,
                )
    finally:
        await hooks.close()
    return 0
