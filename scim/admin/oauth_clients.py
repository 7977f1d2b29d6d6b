"""``python -m scim.admin oauth-client ...``: a tenant's OAuth 2.0 clients (issue 13).

    python -m scim.admin oauth-client create TENANT [--json]
    python -m scim.admin oauth-client list TENANT [--json]
    python -m scim.admin oauth-client revoke TENANT CLIENT_ID

Entra's provisioning tab can authenticate with **OAuth2 client credentials grant** instead of
a Secret Token (docs/ENTRA.md §7): it asks for a **Tenant URL**, a **Token Endpoint**, a
**Client Identifier** and a **Client Secret**, then gets access tokens from the token endpoint
(:mod:`scim.functions.oauth_adapter`; each lives 1 h) and sends them as bearer tokens.
``create`` prints those four values, labelled as Entra labels its fields (the secret is shown
once: only its SHA-256 hash is stored); with ``--json``, exactly ``{"client_id",
"client_secret", "token_endpoint"}``. ``list`` shows each client's id, creation time and when
it was last issued a token (never a secret); with ``--json`` a list of ``{"client_id",
"created", "last_issued"}`` (RFC 3339, or null). ``revoke`` deletes a client: its secret and
every access token it was issued fail on their next request, on every instance.

A tenant holds at most :data:`~scim.credentials.MAX_OAUTH_CLIENTS` clients, so a secret is
rotated without downtime: create a second client, switch Entra to it, revoke the first.

The commands work on the tenant registry of the app's settings (:func:`run` opens it with
:func:`~scim.functions.runtime.build_runtime` and closes it), or on a registry the caller
passes (the tests pass the memory one). An unknown tenant, a tenant being deleted, too many
clients or an unknown client id print one ``error:`` line on stderr and return 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from scim.admin.core import record_cli_audit
from scim.credentials import MAX_OAUTH_CLIENTS, ClientNotFound, OAuthClient, TooManyClients, format_epoch
from scim.tenants import TenantDeleting, TenantNotFound, TenantRegistry, validate_tenant_name

if TYPE_CHECKING:
    from scim.portal.audit import AuditTrail
    from scim.settings import Settings

__all__ = ["GROUP", "add_commands", "client_json", "precheck", "run"]

GROUP = "oauth-client"
"""The CLI's command group (``args.group``)."""


def add_commands(groups: Any) -> None:
    """Add ``oauth-client create|list|revoke`` to the CLI's subparsers (``groups``)."""
    clients = groups.add_parser(
        GROUP, help="a tenant's OAuth 2.0 clients: Entra's 'OAuth2 client credentials grant' instead of a Secret Token"
    ).add_subparsers(dest="action", required=True)
    create = clients.add_parser(
        "create", help="create a client; print the Token Endpoint, Client Identifier and Client Secret (once)"
    )
    create.add_argument("name", metavar="TENANT")
    create.add_argument(
        "--json", action="store_true", help="print one JSON object (client_id, client_secret, token_endpoint)"
    )
    listing = clients.add_parser("list", help="list a tenant's clients: ids, creation, last token issued (no secret)")
    listing.add_argument("name", metavar="TENANT")
    listing.add_argument("--json", action="store_true")
    revoke = clients.add_parser("revoke", help="delete a client: its secret and its access tokens fail at once")
    revoke.add_argument("name", metavar="TENANT")
    revoke.add_argument("client_id", metavar="CLIENT_ID")


def precheck(args: argparse.Namespace) -> str | None:
    """What ``main`` checks before any storage I/O: the tenant name. Returns None (nothing is
    refused here); raises InvalidTenantName (a ValueError) for a name no tenant can have."""
    validate_tenant_name(args.name)
    return None


def client_json(client: OAuthClient) -> dict[str, Any]:
    """A client as ``list --json`` prints it (never its secret or its hash)."""
    return {
        "client_id": client.id,
        "created": format_epoch(client.created),
        "last_issued": format_epoch(client.last_issued),
    }


async def run(args: argparse.Namespace, settings: Settings, tenants: TenantRegistry | None = None) -> int:
    """Carry out one ``oauth-client`` command and print its outcome; 1 with an ``error:`` line on
    stderr for an unknown tenant, a tenant being deleted, too many clients or an unknown client.

    ``tenants``: the registry to use (left open); by default the app's, opened from ``settings``
    and closed here.
    """
    runtime = None
    if tenants is None:
        from scim.functions.runtime import build_runtime  # the Azure SDK: imported when used

        runtime = build_runtime(settings)
        tenants = runtime.tenants
    try:
        return await _run(args, settings, tenants, runtime.audit if runtime is not None else None)
    except TenantNotFound:
        print(f"error: no tenant {args.name!r}", file=sys.stderr)
    except (TenantDeleting, TooManyClients, ClientNotFound) as exc:
        print(f"error: {exc}", file=sys.stderr)
    finally:
        if runtime is not None:
            await runtime.close()
    return 1


async def _run(args: argparse.Namespace, settings: Settings, tenants: TenantRegistry, audit: AuditTrail | None) -> int:
    name = validate_tenant_name(args.name)
    if args.action == "create":
        client, secret = await tenants.create_client(name)
        await record_cli_audit(audit, name, "oauth_client.created", client=client.id)
        endpoint = settings.token_endpoint(name)
        if args.json:
            print(json.dumps({"client_id": client.id, "client_secret": secret, "token_endpoint": endpoint}))
        else:
            print(f"Tenant URL: {settings.tenant_url(name)}")
            print(f"Token Endpoint: {endpoint}")
            print(f"Client Identifier: {client.id}")
            print(f"Client Secret: {secret}")
        print(
            "In Entra's provisioning tab choose 'OAuth2 client credentials grant' and paste these values. "
            "The Client Secret is shown once and will not be shown again: only its SHA-256 hash is stored.\n"
            f"To rotate it without downtime: create another client (a tenant holds at most {MAX_OAUTH_CLIENTS}), "
            f"switch Entra to it, then: python -m scim.admin oauth-client revoke {name} {client.id}",
            file=sys.stderr,
        )
    elif args.action == "list":
        listed = await tenants.list_clients(name)
        if args.json:
            print(json.dumps([client_json(c) for c in listed]))
        else:
            for c in listed:
                last = format_epoch(c.last_issued) or "never"
                print(f"{c.id}\tcreated {format_epoch(c.created)}\tlast token issued {last}")
            if not listed:
                print(
                    f"tenant {name} has no OAuth clients (create one with: python -m scim.admin oauth-client create "
                    f"{name})",
                    file=sys.stderr,
                )
    elif args.action == "revoke":
        await tenants.revoke_client(name, args.client_id)
        await record_cli_audit(audit, name, "oauth_client.revoked", client=args.client_id)
        print(f"Revoked OAuth client {args.client_id} of tenant {name}: it and its access tokens stop working at once.")
    return 0
