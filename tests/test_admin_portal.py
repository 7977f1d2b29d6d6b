"""``python -m scim.admin portal link|links|revoke-links`` and ``audit`` (:mod:`scim.admin.portal`),
and tenant delete purging a tenant's setup links and audit trail (:mod:`scim.admin.core`).

The commands are parsed by a parser built here with :func:`portal.add_commands` (as
``scim.admin.__main__`` will) and run with :func:`portal.run` on the test's runtime (memory and
Azurite), and on Azurite with the runtime :func:`run` builds (and closes) from the settings.
"""

from __future__ import annotations

import argparse
import json
import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from azure.data.tables.aio import TableClient

from scim.admin import core, portal
from scim.functions.runtime import Runtime, build_runtime
from scim.portal.audit import AuditEntry
from scim.portal.links import parse_time
from scim.settings import Settings
from scim.tenants import InvalidTenantName, TenantDeleting, hash_token
from tests.scim_fixtures import azurite_settings

URL = re.compile(r"^(?P<base>.+)/portal/setup#(?P<secret>scimsl_[A-Za-z0-9_-]{43})$")


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scim.admin")
    portal.add_commands(parser.add_subparsers(dest="group", required=True))
    return parser.parse_args(list(argv))


async def cli(runtime: Runtime | None, settings: Settings, capsys: Any, *argv: str) -> tuple[int, str, str]:
    """Run one command (``portal ...`` or ``audit ...``): (exit code, stdout, stderr)."""
    args = parse(*argv)
    portal.precheck(args)
    code = await portal.run(args, settings, runtime)
    out, err = capsys.readouterr()
    return code, out, err


async def new_tenant(runtime: Runtime) -> str:
    name = "pt-" + uuid.uuid4().hex[:10]
    await runtime.tenants.create(name)
    return name


async def test_link_prints_the_url_once_and_it_opens_the_portal_once(runtime: Runtime, capsys: Any) -> None:
    name = await new_tenant(runtime)
    code, out, err = await cli(runtime, runtime.settings, capsys, "portal", "link", name)
    assert code == 0, err
    fields = dict(line.split(": ", 1) for line in out.splitlines())
    assert list(fields) == ["Setup link", "Expires"]
    found = URL.match(fields["Setup link"])
    assert found and found["base"] == runtime.settings.public_base_url, fields
    secret = found["secret"]
    (link,) = await runtime.portal_links.list(name)
    assert parse_time(fields["Expires"]) == link.expires
    assert timedelta(days=7) - timedelta(seconds=5) < link.expires - link.created <= timedelta(days=7)
    assert link.created_by == "cli" and secret not in err and "shown" in err and link.id in err
    assert f"portal revoke-links {name}" in err
    used = await runtime.portal_links.redeem(secret, "session:test")
    assert used is not None and used.tenant == name
    assert await runtime.portal_links.redeem(secret, "session:test") is None

    code, out, _ = await cli(runtime, runtime.settings, capsys, "audit", name, "--json")
    assert code == 0
    (entry,) = json.loads(out)["entries"]
    assert entry["actor"] == "cli" and entry["action"] == "link.created"
    assert entry["detail"] == {"link": link.id, "expires": fields["Expires"]}
    assert secret not in out and hash_token(secret) not in out


async def test_link_json_is_exactly_url_and_expires_and_expires_is_bounded(runtime: Runtime, capsys: Any) -> None:
    name = await new_tenant(runtime)
    code, out, _ = await cli(runtime, runtime.settings, capsys, "portal", "link", name, "--expires", "30m", "--json")
    assert code == 0
    made = json.loads(out)
    assert set(made) == {"url", "expires"} and URL.match(made["url"])
    (link,) = await runtime.portal_links.list(name)
    assert link.expires - link.created == timedelta(minutes=30)
    for bad in ("4m", "31d", "0d", "never", "soon"):
        with pytest.raises(SystemExit) as usage:
            parse("portal", "link", name, "--expires", bad)
        assert usage.value.code == 2
    assert "5 minutes to 30 days" in capsys.readouterr().err


async def test_links_lists_ids_statuses_and_who_never_a_secret(runtime: Runtime, capsys: Any) -> None:
    name = await new_tenant(runtime)
    code, out, err = await cli(runtime, runtime.settings, capsys, "portal", "links", name)
    assert code == 0 and out == "" and "no setup links" in err
    assert (await cli(runtime, runtime.settings, capsys, "portal", "links", name, "--json"))[1] == "[]\n"
    used_secret, used = await runtime.portal_links.create(name, timedelta(days=1), "operator:alice@contoso.com")
    await runtime.portal_links.redeem(used_secret, "entra:0b1c@72f9")
    open_secret, opened = await runtime.portal_links.create(name, timedelta(hours=1), "cli")
    code, out, _ = await cli(runtime, runtime.settings, capsys, "portal", "links", name)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2 and {line.split("\t")[0] for line in lines} == {used.id, opened.id}
    by_id = {line.split("\t")[0]: line for line in lines}
    assert by_id[opened.id].split("\t")[1] == "open" and "by cli" in by_id[opened.id]
    assert by_id[used.id].split("\t")[1] == "used" and "by entra:0b1c@72f9" in by_id[used.id]
    assert used_secret not in out and open_secret not in out
    code, out, _ = await cli(runtime, runtime.settings, capsys, "portal", "links", name, "--json")
    listed = {x["id"]: x for x in json.loads(out)}
    assert set(listed) == {used.id, opened.id}
    assert listed[used.id]["status"] == "used" and listed[used.id]["used_by"] == "entra:0b1c@72f9"
    assert listed[opened.id]["used"] is None and listed[opened.id]["created_by"] == "cli"
    assert {"id", "created", "expires", "used", "created_by"} <= set(listed[opened.id])
    assert used_secret not in out and hash_token(open_secret) not in out


async def test_revoke_links_ends_every_open_link_and_is_audited(runtime: Runtime, capsys: Any) -> None:
    name = await new_tenant(runtime)
    secrets = [(await runtime.portal_links.create(name, timedelta(days=1), "cli"))[0] for _ in range(2)]
    code, out, _ = await cli(runtime, runtime.settings, capsys, "portal", "revoke-links", name)
    assert code == 0 and f"Revoked 2 open setup links of tenant {name}" in out
    assert all([await runtime.portal_links.redeem(s, "x") is None for s in secrets])
    code, out, _ = await cli(runtime, runtime.settings, capsys, "portal", "revoke-links", name)
    assert "Revoked 0 open setup links" in out
    page = await runtime.audit.page(name)
    assert [(e.actor, e.action, e.detail) for e in page.entries] == [
        ("cli", "links.revoked", {"count": "0"}),
        ("cli", "links.revoked", {"count": "2"}),
    ]


async def test_audit_pages_newest_first_escaped(runtime: Runtime, capsys: Any) -> None:
    name = await new_tenant(runtime)
    code, out, err = await cli(runtime, runtime.settings, capsys, "audit", name)
    assert code == 0 and out == "" and "no audit entries" in err
    for n in range(3):
        await runtime.audit.record(
            AuditEntry(name, "setup-link:0a1b2c3d", "notify.updated", {"to": f"ops{n}@contoso.com\x1b[2J\u202e"})
        )
    code, out, _ = await cli(runtime, runtime.settings, capsys, "audit", name, "--limit", "2")
    lines = out.splitlines()
    assert len(lines) == 3 and lines[2].startswith("-- more: add --cursor ")
    assert "ops2@contoso.com\\x1b[2J\\u202e" in lines[0] and "ops1@" in lines[1]
    assert "\x1b" not in out and "\u202e" not in out
    assert "  setup-link:0a1b2c3d  notify.updated  to=" in lines[0]
    cursor = lines[2].removeprefix("-- more: add --cursor ")
    code, out, _ = await cli(runtime, runtime.settings, capsys, "audit", name, "--limit", "2", "--cursor", cursor)
    assert code == 0 and len(out.splitlines()) == 1 and "ops0@" in out
    code, out, _ = await cli(runtime, runtime.settings, capsys, "audit", name, "--json", "--limit", "2")
    page = json.loads(out)
    assert [e["detail"]["to"][:4] for e in page["entries"]] == ["ops2", "ops1"] and page["cursor"] == cursor
    assert "\x1b" not in out  # JSON escapes it


async def test_unknown_tenants_and_bad_input_are_refused(runtime: Runtime, capsys: Any) -> None:
    missing = "pt-" + uuid.uuid4().hex[:10]
    for argv in (
        ("portal", "link", missing),
        ("portal", "links", missing),
        ("portal", "revoke-links", missing),
        ("audit", missing),
    ):
        code, out, err = await cli(runtime, runtime.settings, capsys, *argv)
        assert (code, out) == (1, "") and f"error: no tenant {missing!r}" in err, argv
    assert await runtime.portal_links.list(missing) == [] and (await runtime.audit.page(missing)).entries == []
    with pytest.raises(InvalidTenantName):
        portal.precheck(parse("portal", "link", "Not-Valid"))
    with pytest.raises(ValueError, match="not an audit cursor"):
        portal.precheck(parse("audit", "contoso", "--cursor", "' or true"))

    deleting = await new_tenant(runtime)
    await runtime.tenants.begin_delete(deleting)  # type: ignore[attr-defined]
    code, out, err = await cli(runtime, runtime.settings, capsys, "portal", "link", deleting)
    assert code == 1 and out == "" and "being deleted" in err
    assert await runtime.portal_links.list(deleting) == []


# ---- on Azurite: the runtime run() builds, the rows, tenant delete --------------------------------


async def _portal_rows(settings: Settings) -> list[dict[str, Any]]:
    assert settings.table_connection_string is not None
    connection = settings.table_connection_string.get_secret_value()
    async with TableClient.from_connection_string(connection, f"{settings.table_prefix}portal") as table:
        return [dict(row) async for row in table.list_entities()]


async def _audit_rows(settings: Settings, name: str) -> int:
    assert settings.table_connection_string is not None
    connection = settings.table_connection_string.get_secret_value()
    async with TableClient.from_connection_string(connection, f"{settings.table_prefix}audit") as table:
        return len([r async for r in table.query_entities("PartitionKey eq @pk", parameters={"pk": name})])


@pytest.fixture
def settings(azurite: str, table_prefix: str) -> Settings:
    return azurite_settings(azurite, table_prefix, SCIM_PUBLIC_BASE_URL="https://scim.example.com")


async def test_the_commands_on_the_settings_storage_keep_hashes_only(settings: Settings, capsys: Any) -> None:
    name = "pt-" + uuid.uuid4().hex[:10]
    await core.create_tenant(settings, name)
    code, out, err = await cli(None, settings, capsys, "portal", "link", name, "--json")
    assert code == 0, err
    made = json.loads(out)
    secret = URL.match(made["url"])["secret"]  # type: ignore[index]
    assert made["url"] == f"https://scim.example.com/portal/setup#{secret}"
    stored = repr(await _portal_rows(settings))
    assert secret not in stored and secret.removeprefix("scimsl_")[:16] not in stored and hash_token(secret) in stored
    code, out, _ = await cli(None, settings, capsys, "portal", "links", name, "--json")
    assert [x["status"] for x in json.loads(out)] == ["open"]
    code, out, _ = await cli(None, settings, capsys, "audit", name)
    assert code == 0 and "  cli  link.created  expires=" in out


async def test_tenant_delete_purges_its_setup_links_and_audit_trail(settings: Settings) -> None:
    name, other = ("pt-" + uuid.uuid4().hex[:10] for _ in range(2))
    for tenant in (name, other):
        await core.create_tenant(settings, tenant)
    runtime = build_runtime(settings)
    try:
        secret, _ = await runtime.portal_links.create(name, timedelta(days=1), "cli")
        used, _ = await runtime.portal_links.create(name, timedelta(days=1), "cli")
        await runtime.portal_links.redeem(used, "s")
        kept, _ = await runtime.portal_links.create(other, timedelta(days=1), "cli")
        for tenant in (name, other):
            await runtime.audit.record(AuditEntry(tenant, "cli", "link.created", {"link": "0a1b2c3d"}))
    finally:
        await runtime.close()
    assert await _audit_rows(settings, name) == 2  # tenant.created (by the CLI) and link.created

    await core.delete_tenant(settings, name)
    rows = await _portal_rows(settings)
    assert not [r for r in rows if r.get("tenant") == name or str(r["RowKey"]).startswith(f"t|{name}|")]
    assert hash_token(secret) not in repr(rows)
    assert await _audit_rows(settings, name) == 0
    runtime = build_runtime(settings)
    try:
        assert await runtime.portal_links.redeem(secret, "s") is None
        assert len(await runtime.portal_links.list(other)) == 1 and (await runtime.audit.page(other)).entries
        assert await runtime.portal_links.redeem(kept, "s") is not None
    finally:
        await runtime.close()


async def test_links_or_audit_left_without_a_record_block_the_name_until_tenant_delete(settings: Settings) -> None:
    """What a delete interrupted after the record went would leave (or a link made during a delete)."""
    name = "pt-" + uuid.uuid4().hex[:10]
    runtime = build_runtime(settings)
    try:
        await runtime.portal_links.create(name, timedelta(days=1), "cli")
        await runtime.audit.record(AuditEntry(name, "cli", "links.revoked", {"count": "0"}))
    finally:
        await runtime.close()
    with pytest.raises(TenantDeleting):
        await core.create_tenant(settings, name)
    assert await core.delete_tenant(settings, name) is True  # finished the delete of the leftovers
    assert await _audit_rows(settings, name) == 0
    assert not [r for r in await _portal_rows(settings) if str(r["RowKey"]).startswith(f"t|{name}|")]
    await core.create_tenant(settings, name)
