"""``python -m scim.admin app-key ...``: the application keys of :mod:`scim.app_keys`.

    python -m scim.admin app-key create NAME [--json]
    python -m scim.admin app-key list [--json]
    python -m scim.admin app-key revoke NAME [--yes]

An application key lets the application this service provisions read the change events of
every tenant (``GET /api/v1/tenants/{tenant}/events`` with ``Authorization: Bearer <key>``); it
is not a Secret Token and Entra never sees it. ``create`` prints the key once (only its SHA-256
hash is stored); ``revoke`` deletes it and it fails on its next request. On a terminal,
``revoke`` asks to type the key's name; ``--yes`` skips that (scripts); without a terminal and
without ``--yes`` it refuses.

The commands work on the Table storage of the app's settings (:func:`open_registry`);
:func:`run` takes any :class:`~scim.app_keys.AppKeyRegistry` (the tests pass the memory one).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from scim.app_keys import AppKeyRegistry, validate_key_name

if TYPE_CHECKING:
    from scim.settings import Settings

__all__ = ["GROUP", "add_commands", "confirm_revoke", "feed_url", "open_registry", "precheck", "run"]

GROUP = "app-key"
"""The CLI's command group (``args.group``)."""


def add_commands(groups: Any) -> None:
    """Add ``app-key create|list|revoke`` to the CLI's subparsers (``groups``)."""
    keys = groups.add_parser(
        GROUP, help="application keys: how the application reads the events feed (not Entra's token)"
    ).add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="create a key and print it (once)")
    create.add_argument("name", help="a label for the application: lowercase letters, digits, hyphens")
    create.add_argument("--json", action="store_true", help="print one JSON object (name, key)")
    listing = keys.add_parser("list", help="list keys (names and creation times, never keys)")
    listing.add_argument("--json", action="store_true")
    revoke = keys.add_parser("revoke", help="delete a key: it stops working at once (asks to type the name)")
    revoke.add_argument("name")
    revoke.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation (scripts)")


def open_registry(settings: Settings) -> AppKeyRegistry:
    """The keys on the Table storage the settings name (Azurite by default)."""
    from scim.store.app_keys_tables import TableAppKeyRegistry  # the Azure SDK: imported when used

    return TableAppKeyRegistry.from_settings(settings)


def feed_url(public_base_url: str) -> str:
    """The events feed's URL pattern, for the operator's instructions."""
    return f"{public_base_url}/api/v1/tenants/{{tenant}}/events"


def confirm_revoke(name: str) -> str | None:
    """Ask the operator on a terminal to type the key's name: None if they did, else why not."""
    if sys.stdin is None or not sys.stdin.isatty():
        return (
            f"app-key revoke cannot be undone and asks to type the key name on a terminal; "
            f"to revoke {name!r} from a script, pass --yes"
        )
    print(
        f"This revokes application key {name!r}: the application using it can no longer read the events feed. "
        "It cannot be undone (a new key can be created).",
        file=sys.stderr,
    )
    print("Type the key name to confirm: ", end="", file=sys.stderr, flush=True)
    try:
        answer = sys.stdin.readline()
    except (EOFError, KeyboardInterrupt):
        answer = ""
    if answer.strip() != name:
        return "the name typed does not match; nothing was revoked"
    return None


def precheck(args: argparse.Namespace) -> str | None:
    """What ``main`` checks before any storage I/O: the name, and a revoke's confirmation.
    Returns why the command is refused, or None; raises InvalidAppKeyName (a ValueError)."""
    if getattr(args, "name", None) is not None:
        validate_key_name(args.name)
    if args.action == "revoke" and not args.yes:
        return confirm_revoke(args.name)
    return None


async def run(args: argparse.Namespace, keys: AppKeyRegistry, public_base_url: str) -> int:
    """Carry out one ``app-key`` command on ``keys`` and print its outcome; closes ``keys``."""
    try:
        if args.action == "create":
            key = await keys.create(args.name)
            if args.json:
                print(json.dumps({"name": args.name, "key": key}))
            else:
                print(f"Application key {args.name}: {key}")
                print(
                    f"This key is shown once and will not be shown again: only its SHA-256 hash is stored. "
                    f"Keep it in the application's secret store.\n"
                    f"It is for the application, not for Entra: it reads the change events of every tenant, sent as "
                    f"'Authorization: Bearer <key>' to {feed_url(public_base_url)}.\n"
                    f"Revoke it with: python -m scim.admin app-key revoke {args.name}",
                    file=sys.stderr,
                )
        elif args.action == "list":
            listed = await keys.list()
            if args.json:
                print(json.dumps([{"name": k.name, "created": k.created} for k in listed]))
            else:
                for k in listed:
                    print(f"{k.name}\tcreated {k.created}")
                if not listed:
                    print(
                        "no application keys (create one with: python -m scim.admin app-key create NAME)",
                        file=sys.stderr,
                    )
        elif args.action == "revoke":
            await keys.revoke(args.name)
            print(f"Revoked application key {args.name}: it stops working at once.")
    finally:
        await keys.close()
    return 0
