"""``python -m scim.admin oauth-client create|list|revoke`` (:mod:`scim.admin.oauth_clients`).

The commands are parsed by a parser built here with :func:`oauth_clients.add_commands` (as
``scim.admin.__main__`` does) and run with :func:`oauth_clients.run` on the test's runtime:
its registry on the memory store and on Azurite, and once on Azurite with the registry
:func:`run` opens (and closes) from the settings.
"""

from __future__ import annotations

import argparse
import json
import re
import uuid
from typing import Any

import pytest

from scim.admin import oauth_clients
from scim.credentials import MAX_OAUTH_CLIENTS, InvalidClient, format_epoch
from scim.functions.runtime import Runtime
from scim.tenants import InvalidTenantName

RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scim.admin")
    oauth_clients.add_commands(parser.add_subparsers(dest="group", required=True))
    return parser.parse_args([oauth_clients.GROUP, *argv])


async def cli(runtime: Runtime, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run one ``oauth-client`` command on the runtime's registry: (exit code, stdout, stderr)."""
    args = parse(*argv)
    assert oauth_clients.precheck(args) is None
    code = await oauth_clients.run(args, runtime.settings, runtime.tenants)
    out, err = capsys.readouterr()
    return code, out, err


async def new_tenant(runtime: Runtime) -> str:
    name = "oc-" + uuid.uuid4().hex[:10]
    await runtime.tenants.create(name)
    return name


async def test_create_prints_entras_four_fields_and_the_secret_works(runtime: Runtime, capsys: Any):
    tenant = await new_tenant(runtime)
    code, out, err = await cli(runtime, capsys, "create", tenant)
    assert code == 0, err
    fields = dict(line.split(": ", 1) for line in out.splitlines())
    assert list(fields) == ["Tenant URL", "Token Endpoint", "Client Identifier", "Client Secret"]
    assert fields["Tenant URL"] == runtime.settings.tenant_url(tenant)
    assert fields["Token Endpoint"] == runtime.settings.token_endpoint(tenant)
    assert fields["Token Endpoint"] == f"{runtime.settings.public_base_url}/oauth/{tenant}/token"
    client_id, secret = fields["Client Identifier"], fields["Client Secret"]
    assert secret not in err and "shown once" in err and f"oauth-client revoke {tenant} {client_id}" in err
    token, _ = await runtime.tenants.issue_access_token(tenant, client_id, secret)
    assert await runtime.tenants.authenticate(tenant, token)


async def test_create_json_is_exactly_id_secret_and_endpoint(runtime: Runtime, capsys: Any):
    tenant = await new_tenant(runtime)
    code, out, _ = await cli(runtime, capsys, "create", tenant, "--json")
    assert code == 0
    made = json.loads(out)
    assert set(made) == {"client_id", "client_secret", "token_endpoint"}
    assert made["token_endpoint"] == runtime.settings.token_endpoint(tenant)
    await runtime.tenants.issue_access_token(tenant, made["client_id"], made["client_secret"])


async def test_list_shows_ids_creation_and_last_issue_never_a_secret(runtime: Runtime, capsys: Any):
    tenant = await new_tenant(runtime)
    code, out, err = await cli(runtime, capsys, "list", tenant, "--json")
    assert (code, json.loads(out)) == (0, [])
    code, out, err = await cli(runtime, capsys, "list", tenant)
    assert code == 0 and out == "" and "no OAuth clients" in err

    first, first_secret = await runtime.tenants.create_client(tenant)
    second, second_secret = await runtime.tenants.create_client(tenant)
    _, record = await runtime.tenants.issue_access_token(tenant, first.id, first_secret)

    code, out, _ = await cli(runtime, capsys, "list", tenant, "--json")
    listed = json.loads(out)
    assert code == 0 and [c["client_id"] for c in listed] == [first.id, second.id]
    assert all(set(c) == {"client_id", "created", "last_issued"} for c in listed)
    assert all(RFC3339.fullmatch(c["created"]) for c in listed)
    assert listed[0]["last_issued"] == format_epoch(record.issued) and listed[1]["last_issued"] is None

    code, out, _ = await cli(runtime, capsys, "list", tenant)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2
    assert lines[0].startswith(f"{first.id}\tcreated ") and lines[0].endswith(
        f"last token issued {listed[0]['last_issued']}"
    )
    assert lines[1].endswith("last token issued never")
    for secret in (first_secret, second_secret):
        assert secret not in out


async def test_revoke_stops_the_client_and_its_tokens_at_once(runtime: Runtime, capsys: Any):
    tenant = await new_tenant(runtime)
    client, secret = await runtime.tenants.create_client(tenant)
    token, _ = await runtime.tenants.issue_access_token(tenant, client.id, secret)

    code, out, err = await cli(runtime, capsys, "revoke", tenant, client.id)
    assert code == 0, err
    assert client.id in out and "at once" in out
    assert not await runtime.tenants.authenticate(tenant, token)
    with pytest.raises(InvalidClient):
        await runtime.tenants.issue_access_token(tenant, client.id, secret)
    assert await runtime.tenants.list_clients(tenant) == ()


async def test_errors_are_one_line_and_exit_1(runtime: Runtime, capsys: Any):
    unknown = "nobody-oc"
    for argv in (("create", unknown), ("list", unknown), ("revoke", unknown, "scimc_0000")):
        code, out, err = await cli(runtime, capsys, *argv)
        assert (code, out, err) == (1, "", f"error: no tenant {unknown!r}\n"), argv

    tenant = await new_tenant(runtime)
    code, _, err = await cli(runtime, capsys, "revoke", tenant, "scimc_nobody")
    assert code == 1 and err.startswith("error: no OAuth client 'scimc_nobody'") and err.count("\n") == 1

    for _ in range(MAX_OAUTH_CLIENTS):
        assert (await cli(runtime, capsys, "create", tenant, "--json"))[0] == 0
    code, out, err = await cli(runtime, capsys, "create", tenant)
    assert (
        code == 1
        and out == ""
        and err.startswith(f"error: the tenant has {MAX_OAUTH_CLIENTS} OAuth clients")
        and "revoke" in err
    )

    await runtime.tenants.begin_delete(tenant)
    for argv in (("create", tenant), ("list", tenant), ("revoke", tenant, "scimc_0000")):
        code, out, err = await cli(runtime, capsys, *argv)
        assert code == 1 and out == "" and err.startswith(f"error: tenant {tenant!r} is being deleted"), argv


def test_precheck_refuses_a_name_no_tenant_can_have():
    with pytest.raises(InvalidTenantName):
        oauth_clients.precheck(parse("list", "Not_A_Tenant"))
    with pytest.raises(SystemExit):
        parse("revoke", "acme")  # CLIENT_ID is required


@pytest.mark.azurite(reason="run opens and closes the app's registry from the settings")
async def test_run_opens_the_registry_of_the_settings(runtime: Runtime, capsys: Any):
    tenant = await new_tenant(runtime)
    assert await oauth_clients.run(parse("create", tenant, "--json"), runtime.settings) == 0
    made = json.loads(capsys.readouterr().out)
    assert [c.id for c in await runtime.tenants.list_clients(tenant)] == [made["client_id"]]
    assert await oauth_clients.run(parse("revoke", tenant, made["client_id"]), runtime.settings) == 0
    assert await runtime.tenants.list_clients(tenant) == ()
    assert await oauth_clients.run(parse("list", "nobody-oc"), runtime.settings) == 1
