"""``python -m scim.admin token ...``: a tenant's Secret Tokens (:mod:`scim.credentials`).

    python -m scim.admin token regenerate NAME [--expires 90d|never] [--json]
    python -m scim.admin token rotate NAME [--overlap 24h] [--expires 90d|never] [--json]
    python -m scim.admin token list NAME [--json]
    python -m scim.admin token revoke NAME ID

``regenerate`` issues a new token and every other token of the tenant fails at once (the seed
product's "Regenerate SCIM Token"). ``rotate`` issues a new token and the others keep working
for the overlap (default 24 h), so Entra never holds a token that has stopped working while an
admin pastes the new one; a tenant holds at most 3 active tokens. ``list`` shows each token's
id, creation, expiry and last use (to within an hour), never the token. ``revoke`` makes one
token fail at once. ``--expires`` sets the new token's lifetime; without it, the tenant's
default applies (``tenant update NAME --token-expires 90d``; none: tokens do not expire).

``regenerate --json`` and ``rotate --json`` print the same object: ``tenant``, ``url``,
``token``, ``token_id``, ``expires`` (RFC 3339 or null). ``list --json`` prints a list of
``id``, ``created``, ``expires``, ``last_used`` (and ``retires``: the end of a rotation's
overlap, or null); ``expires`` is when the token stops working, the earlier of the two.

:func:`run` takes any :class:`~scim.tenants.TenantRegistry` (the tests pass the memory one).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from scim.admin.core import Credentials, record_cli_audit
from scim.admin.terminal import printable
from scim.credentials import DEFAULT, Expiry, SecretToken, format_duration, format_epoch, parse_duration
from scim.tenants import TenantRegistry, check_token_strength, validate_tenant_name

if TYPE_CHECKING:
    from scim.portal.audit import AuditTrail
    from scim.settings import Settings

__all__ = ["DEFAULT", "DEFAULT_OVERLAP", "GROUP", "add_commands", "expiry_argument", "regenerate", "run", "token_json"]

GROUP = "token"
"""The CLI's command group (``args.group``)."""

DEFAULT_OVERLAP = "24h"


def expiry_argument(text: str) -> int | None:
    """``--expires``: a duration (``90d``) or ``never`` (an argparse type: a bad value is a usage error)."""
    try:
        return parse_duration(text, allow_never=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def duration_argument(text: str) -> int:
    """``--overlap``: a duration (``24h``)."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    assert seconds is not None
    return seconds


def add_commands(groups: Any) -> None:
    """Add ``token regenerate|rotate|list|revoke`` to the CLI's subparsers (``groups``)."""
    token = groups.add_parser("token", help="manage a tenant's Secret Tokens").add_subparsers(
        dest="action", required=True
    )
    expires_help = "the new token stops working after this (90d, 12h, or never; default: the tenant's default)"
    regenerate = token.add_parser("regenerate", help="issue a new token; every other token stops working at once")
    regenerate.add_argument("name")
    regenerate.add_argument("--expires", type=expiry_argument, default=DEFAULT, help=expires_help)
    regenerate.add_argument("--json", action="store_true", help="print one JSON object")
    rotate = token.add_parser(
        "rotate", help="issue a new token; the others keep working until the overlap ends (no downtime)"
    )
    rotate.add_argument("name")
    rotate.add_argument(
        "--overlap",
        type=duration_argument,
        default=duration_argument(DEFAULT_OVERLAP),
        help=f"how long the previous tokens keep working (default {DEFAULT_OVERLAP})",
    )
    rotate.add_argument("--expires", type=expiry_argument, default=DEFAULT, help=expires_help)
    rotate.add_argument("--json", action="store_true", help="print the same object as token regenerate --json")
    listing = token.add_parser("list", help="list the active tokens: id, created, expires, last used (never a token)")
    listing.add_argument("name")
    listing.add_argument("--json", action="store_true")
    revoke = token.add_parser("revoke", help="make one token (by id, from token list) stop working at once")
    revoke.add_argument("name")
    revoke.add_argument("id")


def token_json(token: SecretToken) -> dict[str, Any]:
    """One token of ``token list --json``."""
    return {
        "id": token.id,
        "created": format_epoch(token.created),
        "expires": format_epoch(token.ends),
        "last_used": format_epoch(token.last_used),
        "retires": format_epoch(token.retires),
    }


def _newest(tokens: tuple[SecretToken, ...]) -> SecretToken | None:
    return max(tokens, key=lambda t: t.created) if tokens else None


async def regenerate(
    tenants: TenantRegistry, name: str, expires: Expiry = DEFAULT, token: str | None = None
) -> tuple[str, SecretToken | None]:
    """Replace every token of ``name`` by a new one: the token and its record."""
    if token is not None:
        check_token_strength(token)
    secret = await tenants.set_token(name, token, expires)
    return secret, _newest(await tenants.list_tokens(name))


async def run(
    args: argparse.Namespace, tenants: TenantRegistry, settings: Settings, audit: AuditTrail | None = None
) -> int:
    """Carry out one ``token`` command, recorded in the tenant's ``audit`` trail (when given);
    the caller closes ``tenants`` and reports exceptions."""
    name = validate_tenant_name(args.name)
    url = settings.tenant_url(name)
    if args.action == "regenerate":
        secret, record = await regenerate(tenants, name, args.expires)
        await record_cli_audit(audit, name, "token.regenerated", token=record.id if record else "?")
        _print_issued(args, name, url, secret, record, None)
    elif args.action == "rotate":
        secret, record = await tenants.rotate_token(name, args.overlap, args.expires)
        await record_cli_audit(audit, name, "token.rotated", token=record.id, overlap=format_duration(args.overlap))
        _print_issued(args, name, url, secret, record, datetime.now(UTC).timestamp() + args.overlap)
    elif args.action == "list":
        tokens = await tenants.list_tokens(name)
        if args.json:
            print(json.dumps([token_json(t) for t in tokens]))
            return 0
        lifetime = await tenants.token_lifetime(name)
        default = format_duration(lifetime) if lifetime else "never"
        print(f"Secret Tokens of {printable(name)} (new tokens expire after: {default}):")
        for t in tokens:
            ends = format_epoch(t.ends) or "never"
            state = f"retires {format_epoch(t.retires)}" if t.retires is not None else f"expires {ends}"
            used = format_epoch(t.last_used) or "never"
            print(f"  {t.id}\tcreated {format_epoch(t.created)}\t{state}\tlast used {used}")
        if not tokens:
            print("  none: run token regenerate to issue one")
    elif args.action == "revoke":
        await tenants.revoke_token(name, args.id)
        await record_cli_audit(audit, name, "token.revoked", token=args.id)
        print(f"Token {printable(args.id)} of {printable(name)} revoked: it fails from its next request on.")
        if not await tenants.list_tokens(name):
            print(
                f"warning: {name} has no active token left; Entra cannot provision until you run "
                f"`python -m scim.admin token regenerate {name}`",
                file=sys.stderr,
            )
    return 0


def _print_issued(
    args: argparse.Namespace, name: str, url: str, secret: str, record: SecretToken | None, overlap_end: float | None
) -> None:
    issued = Credentials.issued(name, url, secret, record)
    if args.json:
        print(issued.to_json())
        return
    print(issued.lines())
    print(issued.details(), file=sys.stderr)
    if overlap_end is not None:
        print(
            f"The previous tokens keep working until {format_epoch(int(overlap_end))}: paste the new Secret Token "
            "into Entra's provisioning tab (Test Connection) before then.",
            file=sys.stderr,
        )
