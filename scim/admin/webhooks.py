"""``python -m scim.admin webhook ...``: the webhook endpoints of :mod:`scim.webhooks` and their delivery.

    python -m scim.admin webhook add URL [--tenant T ...] [--events TYPE,...] [--json]
    python -m scim.admin webhook list [--json]
    python -m scim.admin webhook remove ID [--yes]
    python -m scim.admin webhook rotate-secret ID [--json]
    python -m scim.admin webhook replay ID --since TIME [--tenant T ...] [--json]
    python -m scim.admin webhook enable ID | webhook disable ID

``add`` checks the URL for where the app runs (:mod:`scim.webhooks.urls`: in Azure, or from a
machine working on Azure storage (``SCIM_TABLE_ENDPOINT``), only public ``https://`` targets,
every address the host resolves to; locally also ``http://`` to this machine: :func:`azure_policy`) and prints the endpoint's signing secret once; ``rotate-secret`` prints a new one (the
previous one keeps signing for 24 h). The secrets are stored as they are (they sign every
delivery) and ``list`` never prints them. ``remove`` asks to type the endpoint id on a terminal;
``--yes`` skips that (scripts); without a terminal and without ``--yes`` it refuses. It also
deletes the endpoint's cursor and waiting lanes in each tenant it served
(:meth:`DeliveryStores.forget`); a deliverer that was failing a delivery to it at that very
moment (it learns of the removal within ``ENDPOINTS_TTL``, 5 s) may still save one lane row.

``list`` shows each endpoint's state (and why it is disabled), last success, last error (time
and text, escaped: it comes from the receiver), since when it has been failing, and its
*backlog*: the events waiting for it over the tenants it serves (:mod:`scim.webhooks.backlog`;
``10000+`` when counting stopped at its cap).

Delivery (:mod:`scim.webhooks.delivery`) keeps, per tenant and endpoint, a cursor in the tenant's event
feed and the events waiting for a retry (:mod:`scim.webhooks.delivery_state`). ``replay`` moves the
endpoint's cursors back to just before ``--since`` (RFC 3339, e.g. ``2026-12-01T18:00:00Z``), in
every tenant it serves or the ``--tenant`` ones, so every event committed since then is
delivered again, with the same event ids (at least once: receivers deduplicate on
``webhook-id``). A cursor already at or before that time is left as it is (moving it would skip
events not delivered yet). It refuses a time in the future, or older than the events retention
(``EVENTS_RETENTION_DAYS``: older events may have been deleted). ``disable`` stops deliveries
(reason :data:`OPERATOR_REASON`), ``enable`` resumes them where they stopped: the cursors and
waiting events of a disabled endpoint are kept, whoever disabled it (the engine disables an
endpoint that answers ``410 Gone`` or whose retries ran out). A replay of a disabled endpoint
takes effect once it is enabled.

The commands work on the Table storage of the app's settings (:func:`open_stores`: the registry,
the tenants, the directory's feed and the delivery state on one Table service client);
:func:`run` takes any :class:`~scim.webhooks.WebhookRegistry` and :class:`DeliveryStores` (the
tests pass the memory ones).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from scim.admin.core import record_cli_audit
from scim.admin.terminal import printable
from scim.core.events import EVENT_TYPES
from scim.core.feed import retention_floor
from scim.store.event_timing import wall_us
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
from scim.webhooks.backlog import Backlog, endpoint_backlog, served_tenants
from scim.webhooks.delivery import initial_position
from scim.webhooks.urls import Resolver, check_url, parse_webhook_url, resolve, url_origin

if TYPE_CHECKING:
    from scim.functions.runtime import Runtime
    from scim.portal.audit import AuditTrail
    from scim.settings import Settings
    from scim.store.base import DirectoryStore
    from scim.tenants import TenantRegistry
    from scim.webhooks.delivery_state import DeliveryState, DeliveryStateStore

__all__ = [
    "GROUP",
    "OPERATOR_REASON",
    "DeliveryStores",
    "ReplayRefused",
    "add_commands",
    "azure_policy",
    "check_replay_time",
    "confirm_remove",
    "endpoint_json",
    "open_registry",
    "open_stores",
    "parse_replay_time",
    "precheck",
    "replay_position",
    "run",
]

GROUP = "webhook"
"""The CLI's command group (``args.group``)."""
OPERATOR_REASON = "disabled by an operator"
"""The reason ``webhook disable`` records."""
_ID_ACTIONS = ("remove", "rotate-secret", "replay", "enable", "disable")
"""The commands that take an endpoint id."""

VERIFY_HINT = """\
Verify each delivery before trusting it (Standard Webhooks; pip install standardwebhooks):
    from standardwebhooks import Webhook
    event = Webhook(SECRET).verify(request_body, request_headers)  # raises if forged, altered or stale
Deduplicate on the webhook-id header (the event id): an event may arrive more than once."""
EXAMPLE_TIME = "2026-12-01T18:00:00Z"


class ReplayRefused(ValueError):
    """``webhook replay`` cannot do what it was asked (a time out of range, a tenant the endpoint
    does not serve); nothing was changed. ``str()`` is the message for the operator."""


@dataclass
class DeliveryStores:
    """What ``list``, ``replay`` and ``enable`` read besides the registry: the tenants, their
    feeds (the directory) and the delivery state, with the events retention in days
    (``EVENTS_RETENTION_DAYS``). ``closer`` releases them (the runtime that holds them)."""

    tenants: TenantRegistry
    directory: DirectoryStore
    deliveries: DeliveryStateStore
    retention_days: int = 30
    closer: Callable[[], Awaitable[None]] | None = None
    audit: AuditTrail | None = None
    """Where the commands that change an endpoint record it, for each tenant it serves."""

    @classmethod
    def of(cls, runtime: Runtime, *, owned: bool = True) -> DeliveryStores:
        """The stores of ``runtime`` (memory or Tables); ``owned``: :meth:`close` closes it."""
        return cls(
            runtime.tenants,
            runtime.store,
            runtime.deliveries,
            runtime.settings.events_retention_days,
            runtime.close if owned else None,
            runtime.audit,
        )

    async def record(self, endpoint: WebhookEndpoint, action: str, **detail: str) -> None:
        """Record ``action`` on ``endpoint`` in the audit trail of each tenant it names (an
        endpoint of every tenant is the application's, in no tenant's trail)."""
        if self.audit is None or endpoint.tenants is None:
            return
        for tenant in endpoint.tenants:
            await record_cli_audit(self.audit, tenant, action, endpoint=endpoint.id, **detail)

    async def forget(self, endpoint: WebhookEndpoint) -> None:
        """Delete a removed endpoint's cursor and waiting lanes in each tenant it served (all
        tenants for an endpoint of every tenant): one query and the deletes per tenant."""
        tenants = endpoint.tenants if endpoint.tenants is not None else await self.tenant_names()
        for tenant in tenants:
            await self.deliveries.forget_endpoint(tenant, endpoint.id)

    async def tenant_names(self) -> list[str]:
        """The names of every tenant there is."""
        return [info.name for info in await self.tenants.list()]

    async def close(self) -> None:
        if self.closer is not None:
            await self.closer()


def add_commands(groups: Any) -> None:
    """Add ``webhook add|list|remove|rotate-secret|replay|enable|disable`` to the CLI's
    subparsers (``groups``)."""
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
    listing = hooks.add_parser(
        "list", help="list endpoints: filters, state, last success and error, backlog (never secrets)"
    )
    listing.add_argument("--json", action="store_true")
    remove = hooks.add_parser("remove", help="delete an endpoint (asks to type its id)")
    remove.add_argument("id")
    remove.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation (scripts)")
    rotate = hooks.add_parser("rotate-secret", help="make a new signing secret; the previous one signs 24 h more")
    rotate.add_argument("id")
    rotate.add_argument("--json", action="store_true", help="print one JSON object (id, secret, previous_until)")
    replay = hooks.add_parser("replay", help="deliver again the events committed since a time (same event ids)")
    replay.add_argument("id")
    replay.add_argument(
        "--since", required=True, metavar="TIME", help=f"RFC 3339 with its zone ({EXAMPLE_TIME}), within the retention"
    )
    replay.add_argument(
        "--tenant", action="append", dest="tenants", metavar="TENANT", help="only this tenant's events (repeatable)"
    )
    replay.add_argument("--json", action="store_true", help="print one JSON object (id, since, rewound, unchanged)")
    enable = hooks.add_parser("enable", help="deliver to a disabled endpoint again, from where it stopped")
    enable.add_argument("id")
    disable = hooks.add_parser("disable", help="stop delivering to an endpoint (what waits for it is kept)")
    disable.add_argument("id")


def azure_policy(settings: Settings) -> bool:
    """Whether ``add`` applies the Azure URL policy: in Azure, and also from an operator's machine
    working on Azure storage (``SCIM_TABLE_ENDPOINT``), whose endpoints the app in Azure delivers
    to (``http://127.0.0.1`` there would be the app's own instance)."""
    return settings.in_azure or bool(settings.table_endpoint)


def open_registry(settings: Settings) -> WebhookRegistry:
    """The endpoints on the Table storage the settings name."""
    from scim.store.webhooks_tables import TableWebhookRegistry  # the Azure SDK: imported when used

    return TableWebhookRegistry.from_settings(settings)


def open_stores(settings: Settings) -> tuple[WebhookRegistry, DeliveryStores]:
    """The endpoints, the tenants, the directory and the delivery state on the Table storage the
    settings name, on one Table service client (the app's runtime, as ``events`` uses);
    closing the :class:`DeliveryStores` closes them all."""
    from scim.functions.runtime import build_runtime  # the Azure SDK: imported when used

    runtime = build_runtime(settings)
    return runtime.webhooks, DeliveryStores.of(runtime)


def _event_types(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [t.strip() for value in values for t in value.split(",") if t.strip()]


# ---- replay: the time and the position ------------------------------------------------------------

_RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})")
_ZONELESS = re.compile(r"\d{4}-\d{2}-\d{2}(?:[Tt ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_replay_time(text: str) -> datetime:
    """``--since``: an RFC 3339 date-time with its zone (``2026-12-01T18:00:00Z``,
    ``2026-12-01T19:00:00.5+01:00``), as an aware datetime; ReplayRefused for anything else
    (a time without a zone is refused rather than guessed: add ``Z`` for UTC)."""
    stripped = text.strip()
    match = _RFC3339.fullmatch(stripped)
    if match is None:
        if _ZONELESS.fullmatch(stripped):
            raise ReplayRefused(
                f"--since {printable(text)!r} has no time zone: give a full RFC 3339 time with its zone, "
                f"e.g. {EXAMPLE_TIME} (Z for UTC) or 2026-12-01T19:00:00+01:00"
            )
        raise ReplayRefused(
            f"--since takes an RFC 3339 time with its zone, e.g. {EXAMPLE_TIME}, not {printable(text)!r}"
        )
    day, clock, fraction, zone = match.groups()
    iso = f"{day}T{clock}" + (f".{(fraction + '00000')[:6]}" if fraction else "")
    iso += "+00:00" if zone in ("Z", "z") else zone
    try:
        return datetime.fromisoformat(iso)
    except ValueError:
        raise ReplayRefused(f"--since {printable(text)!r} is not a valid date and time (e.g. {EXAMPLE_TIME})") from None


def _stamp_us(when: datetime) -> int:
    """``when`` in microseconds since the epoch (exact, no float rounding)."""
    return (when - _EPOCH) // timedelta(microseconds=1)


def replay_position(when: datetime) -> str:
    """The feed position just before ``when``: every event stamped at or after it comes after
    (positions are ``{stamp:016d}|...``: :func:`scim.core.feed.position_stamp`)."""
    return f"{_stamp_us(when):016d}|"


def _refuse_future(when: datetime, now_us: int) -> None:
    if _stamp_us(when) > now_us:
        raise ReplayRefused(
            f"--since {format_time(when)} is in the future (it is {format_time(_EPOCH + timedelta(microseconds=now_us))}"
            "): replay delivers again the events committed since a past time"
        )


def check_replay_time(when: datetime, retention_days: int, now_us: int | None = None) -> None:
    """ReplayRefused for a time in the future, or older than the events retention."""
    now = wall_us() if now_us is None else now_us
    _refuse_future(when, now)
    floor = retention_floor(now, retention_days)
    if _stamp_us(when) < floor:
        oldest = format_time(_EPOCH + timedelta(microseconds=floor))
        raise ReplayRefused(
            f"--since {format_time(when)} is older than the events retention ({retention_days} "
            f"day{'' if retention_days == 1 else 's'}, "
            f"EVENTS_RETENTION_DAYS): events before {oldest} may have been deleted and cannot be replayed; "
            f"give a time after {oldest}"
        )


# ---- checks before any I/O ------------------------------------------------------------------------


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
    id, a replay's time and tenants, and a remove's confirmation. Returns why the command is
    refused, or None; raises ValueError (UnsafeWebhookUrl, InvalidWebhookFilter, ReplayRefused)
    and WebhookNotFound (a malformed id)."""
    if args.action == "add":
        parse_webhook_url(args.url)
        normalise_tenants(args.tenants)
        normalise_events(_event_types(args.events))
    if args.action in _ID_ACTIONS and not is_endpoint_id(args.id):
        raise WebhookNotFound(args.id)
    if args.action == "replay":
        normalise_tenants(args.tenants)
        _refuse_future(parse_replay_time(args.since), wall_us())  # the retention: with the settings (run)
    if args.action == "remove" and not args.yes:
        return confirm_remove(args.id)
    return None


# ---- output ---------------------------------------------------------------------------------------


def endpoint_json(endpoint: WebhookEndpoint, backlog: Backlog | None = None) -> dict[str, Any]:
    """What ``list --json`` shows of an endpoint: everything but its secrets, and its
    ``backlog`` (:meth:`~scim.webhooks.backlog.Backlog.to_json`; None when not counted)."""
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
        "backlog": None if backlog is None else backlog.to_json(),
    }


def _state(endpoint: WebhookEndpoint) -> str:
    """``enabled``, or ``disabled (reason, since time)``."""
    if endpoint.enabled:
        return endpoint.state
    details = [d for d in (endpoint.disabled_reason, endpoint.disabled_at and f"since {endpoint.disabled_at}") if d]
    return endpoint.state + (f" ({', '.join(details)})" if details else "")


def _line(endpoint: WebhookEndpoint, backlog: Backlog | None = None) -> str:
    """One endpoint in the human format, tab-separated (the reason and the last error may come
    from a remote server: every field is escaped)."""
    fields = [endpoint.id, endpoint.url, _state(endpoint)]
    if backlog is not None:
        fields.append(f"backlog {backlog}")
    fields += [
        "tenants " + (",".join(endpoint.tenants) if endpoint.tenants is not None else "all"),
        "events " + (",".join(endpoint.events) if endpoint.events is not None else "all"),
        f"created {endpoint.created}",
        f"last success {endpoint.last_success or 'never'}",
    ]
    if endpoint.failing_since:
        fields.append(f"failing since {endpoint.failing_since}")
    if endpoint.last_error:
        fields.append(f"last error {endpoint.last_error_at} {endpoint.last_error}")
    return "\t".join(printable(f) for f in fields)


def _needs_stores(action: str) -> str:
    return f"webhook {action} needs the tenants, the feeds and the delivery state (DeliveryStores)"


# ---- the commands ---------------------------------------------------------------------------------


async def _list(args: argparse.Namespace, hooks: WebhookRegistry, stores: DeliveryStores | None) -> None:
    listed = await hooks.list()
    backlogs: dict[str, Backlog] = {}
    if stores is not None and listed:
        tenants = await stores.tenant_names()
        states: dict[str, DeliveryState] = {}  # each tenant's state loaded once for every endpoint
        now = wall_us()
        for endpoint in listed:
            backlogs[endpoint.id] = await endpoint_backlog(
                endpoint, tenants, stores.directory, stores.deliveries, now_us=now, states=states
            )
    if args.json:
        print(json.dumps([endpoint_json(e, backlogs.get(e.id)) for e in listed]))
        return
    for endpoint in listed:
        print(_line(endpoint, backlogs.get(endpoint.id)))
    if not listed:
        print("no webhook endpoints (add one with: python -m scim.admin webhook add URL)", file=sys.stderr)


async def _replay(args: argparse.Namespace, hooks: WebhookRegistry, stores: DeliveryStores) -> None:
    when = parse_replay_time(args.since)
    check_replay_time(when, stores.retention_days)
    endpoint = await hooks.get(args.id)
    existing = await stores.tenant_names()
    if args.tenants:
        names = sorted(set(args.tenants))
        for name in names:
            if endpoint.tenants is not None and name not in endpoint.tenants:
                raise ReplayRefused(
                    f"webhook endpoint {endpoint.id} is not for tenant {name!r} "
                    f"(its tenants: {', '.join(endpoint.tenants)}); nothing was replayed"
                )
            if name not in existing:
                raise ReplayRefused(f"no tenant {name!r}; nothing was replayed")
    else:
        names = served_tenants(endpoint, existing)
    position = replay_position(when)
    limit = asyncio.Semaphore(8)

    async def rewind(tenant: str) -> bool:
        """Move the cursor back to ``position`` if it is past it (else it has yet to get there:
        moving it would skip events not delivered yet)."""
        async with limit:
            cursor = (await stores.deliveries.load(tenant)).cursors.get(endpoint.id)
            current = cursor.position if cursor is not None else initial_position(endpoint)
            if current <= position:
                return False
            await stores.deliveries.rewind(tenant, endpoint.id, position)
            return True

    outcomes = await asyncio.gather(*(rewind(t) for t in names))
    rewound = [t for t, moved in zip(names, outcomes, strict=True) if moved]
    unchanged = [t for t, moved in zip(names, outcomes, strict=True) if not moved]
    since = format_time(when)
    if stores.audit is not None and endpoint.tenants is not None:
        for name in names:
            moved = "yes" if name in rewound else "no"
            await record_cli_audit(
                stores.audit, name, "webhook.replayed", endpoint=endpoint.id, since=since, rewound=moved
            )
    if args.json:
        print(
            json.dumps(
                {
                    "id": endpoint.id,
                    "since": since,
                    "position": position,
                    "rewound": rewound,
                    "unchanged": unchanged,
                    "state": endpoint.state,
                }
            )
        )
    elif not names:
        print(f"Webhook endpoint {endpoint.id} serves no existing tenant: nothing to replay.")
    else:
        print(
            f"Replay of webhook endpoint {endpoint.id} since {since}: rewound in {len(rewound)} "
            f"tenant{'' if len(rewound) == 1 else 's'} of {len(names)}"
            + (f" ({', '.join(rewound)})" if 0 < len(rewound) <= 10 else "")
            + "."
        )
        if unchanged:
            print(
                f"{len(unchanged)} tenant{'' if len(unchanged) == 1 else 's'} left as they were, their delivery not "
                f"past {since} yet (the events since then are still to be delivered)"
                + (f": {', '.join(unchanged)}" if len(unchanged) <= 10 else "")
                + "."
            )
        if rewound:
            print(
                "The events committed since then are delivered again, with the same event ids "
                "(receivers deduplicate on the webhook-id header).",
                file=sys.stderr,
            )
    if not endpoint.enabled and rewound:
        print(
            f"Webhook endpoint {endpoint.id} is disabled ({printable(endpoint.disabled_reason or 'no reason')}): "
            f"the replay takes effect after `python -m scim.admin webhook enable {endpoint.id}`.",
            file=sys.stderr,
        )


async def _enable(args: argparse.Namespace, hooks: WebhookRegistry, stores: DeliveryStores | None) -> None:
    endpoint = await hooks.get(args.id)
    if endpoint.enabled:
        print(f"Webhook endpoint {endpoint.id} is enabled already.")
        return
    await hooks.enable(endpoint.id)
    waiting = ""
    if stores is not None:
        await stores.record(endpoint, "webhook.enabled")
        backlog = await endpoint_backlog(endpoint, await stores.tenant_names(), stores.directory, stores.deliveries)
        waiting = f"; {backlog} event{'' if backlog.events == 1 and not backlog.capped else 's'} wait for it"
    print(
        f"Enabled webhook endpoint {endpoint.id}: delivery resumes where it stopped (its cursors and the events "
        f"waiting for it were kept){waiting}."
    )


async def _disable(args: argparse.Namespace, hooks: WebhookRegistry, stores: DeliveryStores | None) -> None:
    endpoint = await hooks.get(args.id)
    if not endpoint.enabled:
        print(f"Webhook endpoint {endpoint.id} is {printable(_state(endpoint))} already.")
        return
    await hooks.disable(endpoint.id, OPERATOR_REASON)
    if stores is not None:
        await stores.record(endpoint, "webhook.disabled")
    print(
        f"Disabled webhook endpoint {endpoint.id}: nothing more is delivered to it. Its cursors and the events "
        f"waiting for it are kept: `python -m scim.admin webhook enable {endpoint.id}` resumes from there."
    )


async def run(
    args: argparse.Namespace,
    hooks: WebhookRegistry,
    *,
    in_azure: bool,
    resolver: Resolver = resolve,
    stores: DeliveryStores | None = None,
) -> int:
    """Carry out one ``webhook`` command on ``hooks`` and print its outcome; closes ``hooks``
    and ``stores``. ``stores`` (the tenants, feeds and delivery state) are needed by ``replay``
    (else ValueError); without them ``list`` and ``enable`` leave the backlog out."""
    try:
        if args.action == "add":
            await check_url(args.url, in_azure=in_azure, resolver=resolver)
            endpoint_id, secret = await hooks.add(args.url, args.tenants, _event_types(args.events))
            if stores is not None:
                await stores.record(await hooks.get(endpoint_id), "webhook.added", url=url_origin(args.url))
            if args.json:
                print(json.dumps({"id": endpoint_id, "url": args.url, "secret": secret}))
            else:
                print(f"Webhook endpoint {endpoint_id}: {args.url}")
                print(f"Signing secret: {secret}")
                print(
                    "The signing secret is shown once (and again only by rotate-secret): keep it in the receiver's "
                    f"secret store.\n{VERIFY_HINT}\n"
                    "Events committed from now on are delivered to it (webhook list shows its state and backlog).",
                    file=sys.stderr,
                )
        elif args.action == "list":
            await _list(args, hooks, stores)
        elif args.action == "remove":
            removed = await hooks.get(args.id)
            await hooks.remove(args.id)
            if stores is not None:
                await stores.record(removed, "webhook.removed")
                await stores.forget(removed)
            print(f"Removed webhook endpoint {args.id}.")
        elif args.action == "rotate-secret":
            now = datetime.now(UTC)
            secret = await hooks.rotate_secret(args.id, now)
            if stores is not None:
                await stores.record(await hooks.get(args.id), "webhook.secret_rotated")
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
        elif args.action == "replay":
            if stores is None:
                raise ValueError(_needs_stores("replay"))
            await _replay(args, hooks, stores)
        elif args.action == "enable":
            await _enable(args, hooks, stores)
        elif args.action == "disable":
            await _disable(args, hooks, stores)
    finally:
        await hooks.close()
        if stores is not None:
            await stores.close()
    return 0
