"""``python -m scim.admin``: manage tenants and Secret Tokens.

    python -m scim.admin tenant create NAME [--json]
    python -m scim.admin tenant list [--json]
    python -m scim.admin tenant delete NAME
    python -m scim.admin token regenerate NAME [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from ..store.base import StoreError
from ..tenants import InvalidTenantName, TenantExists, TenantNotFound
from . import core


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scim.admin", description="Manage SCIM tenants and their Secret Tokens.")
    groups = parser.add_subparsers(dest="group", required=True)
    tenant = groups.add_parser("tenant", help="create, list or delete tenants").add_subparsers(dest="action", required=True)
    create = tenant.add_parser("create", help="create a tenant and print its Tenant URL and Secret Token")
    create.add_argument("name")
    create.add_argument("--json", action="store_true", help="print one JSON object (tenant, url, token)")
    listing = tenant.add_parser("list", help="list tenants")
    listing.add_argument("--json", action="store_true")
    delete = tenant.add_parser("delete", help="delete a tenant, its token and its directory")
    delete.add_argument("name")
    token = groups.add_parser("token", help="manage a tenant's Secret Token").add_subparsers(dest="action", required=True)
    regenerate = token.add_parser("regenerate", help="issue a new token; the old one stops working at once")
    regenerate.add_argument("name")
    regenerate.add_argument("--json", action="store_true")
    return parser


async def _run(args: argparse.Namespace) -> int:
    settings = core.load_settings()
    if args.group == "tenant" and args.action == "create":
        credentials = await core.create_tenant(settings, args.name)
        print(credentials.to_json() if args.json else credentials.lines())
    elif args.group == "token" and args.action == "regenerate":
        credentials = await core.regenerate_token(settings, args.name)
        print(credentials.to_json() if args.json else credentials.lines())
    elif args.group == "tenant" and args.action == "list":
        tenants = await core.list_tenants(settings)
        if args.json:
            print(json.dumps([{"tenant": t.name, "url": settings.tenant_url(t.name), "created": t.created} for t in tenants]))
        else:
            for t in tenants:
                print(f"{t.name}\t{settings.tenant_url(t.name)}\tcreated {t.created}")
    elif args.group == "tenant" and args.action == "delete":
        await core.delete_tenant(settings, args.name)
        print(f"Deleted tenant {args.name}.")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except TenantExists:
        print(f"error: tenant {args.name!r} already exists", file=sys.stderr)
    except TenantNotFound:
        print(f"error: no tenant {args.name!r}", file=sys.stderr)
    except InvalidTenantName as exc:
        print(f"error: {exc}", file=sys.stderr)
    except (OSError, StoreError) as exc:
        print(f"error: cannot reach Table storage ({exc.__class__.__name__}); is Azurite running? (make run starts it)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
