"""Helpers shared by several test modules (issue #11: test modules never import each other).

- SCIM requests through :class:`~tests.functions_client.FunctionsClient`: :func:`new_user`,
  :func:`create_user`, :func:`create_group`, :func:`assert_scim_error`;
- a runtime on the memory store: :func:`memory_runtime`;
- the operator CLI as a script runs it: :data:`ROOT`, :func:`admin_env`, :func:`admin`;
- a tenant's partition read raw from the directory table, and its invariants:
  :func:`raw_directory`, :func:`read_directory`, :class:`Directory`, :func:`violations`;
- an SMTP handler that keeps what it is sent: :class:`Mailbox`.

Fixtures shared by several test modules are in ``tests/scim_fixtures.py`` and ``tests/conftest.py``.
"""

from __future__ import annotations

import contextlib
import email
import json
import os
import socket
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azure.data.tables.aio import TableClient

from scim.functions.runtime import Runtime, build_memory_runtime
from scim.settings import Settings
from scim.store import keys
from tests.functions_client import FunctionsClient, Response
from tests.payloads import payload

ROOT = Path(__file__).resolve().parents[1]

# Settings need table storage (scim.settings has no default): runtimes on the memory store name
# Azurite's, which they never reach.
MEMORY_SETTINGS = {"SCIM_TABLE_CONNECTION_STRING": "UseDevelopmentStorage=true"}

USER_URN = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_URN = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_URN = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"

# ---- SCIM requests ------------------------------------------------------------------------------


def assert_scim_error(response: Response, status: int, scim_type: str | None = None) -> None:
    assert response.status == status, response.body
    assert response.content_type.startswith("application/scim+json")
    body = response.json
    assert body["schemas"] == [ERROR] and body["status"] == str(status) and body["detail"]
    if scim_type:
        assert body["scimType"] == scim_type
    assert "Traceback" not in response.body.decode()


def new_user(prefix: str = "user", **extra) -> dict:
    body = payload("entra-post-user.json")
    body["userName"] = f"{prefix}-{uuid.uuid4().hex[:8]}@contoso.com"
    body["emails"][0]["value"] = body["userName"].replace("@", ".work@")
    body.update(extra)
    return body


async def create_user(client: FunctionsClient, **extra) -> dict:
    response = await client.post("/Users", new_user(**extra))
    assert response.status == 201, response.body
    return response.json


async def create_group(client: FunctionsClient, name: str | None = None) -> dict:
    body = payload("entra-post-group.json")
    body["displayName"] = name or f"group-{uuid.uuid4().hex[:8]}"
    response = await client.post("/Groups", body)
    assert response.status == 201, response.body
    return response.json


# ---- a runtime on the memory store --------------------------------------------------------------


def memory_runtime() -> Runtime:
    """A Runtime on the in-memory doubles (directory, tenants, provisioning log, digest state),
    with default settings: requests are logged, and digests can run, as on Azurite."""
    return build_memory_runtime(Settings.from_env(MEMORY_SETTINGS))


# ---- the operator CLI ---------------------------------------------------------------------------


def admin_env(azurite: str, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCIM_")}
    env.update({"SCIM_TABLE_CONNECTION_STRING": azurite, "SCIM_TABLE_PREFIX": prefix, **extra})
    return env


def admin(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m scim.admin ARGS`` as a script runs it: no terminal on stdin."""
    return subprocess.run(
        [sys.executable, "-m", "scim.admin", *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


# ---- the directory, read raw from the table -----------------------------------------------------


@dataclass
class Directory:
    """A tenant's partition, parsed: resources, index rows, memberships."""

    resources: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (type, id) -> entity
    unique: dict[str, str] = field(default_factory=dict)  # RowKey of a U|/G| row -> its id
    multi: set[str] = field(default_factory=set)  # RowKeys of X| rows
    memberships: dict[tuple[str, str], str] = field(default_factory=dict)  # (group id, member id) -> type
    events: list[str] = field(default_factory=list)  # RowKeys of e| rows (checked by tests/event_checks.py)
    unknown: list[str] = field(default_factory=list)
    _flags: dict[tuple[str, str], set[str]] = field(default_factory=dict)

    def ids(self, rtype: str) -> set[str]:
        return {i for t, i in self.resources if t == rtype}

    def doc(self, rtype: str, id: str) -> dict[str, Any]:
        entity = self.resources[(rtype, id)]
        parts = sorted((int(k[3:]), v) for k, v in entity.items() if k.startswith("doc") and k[3:].isdigit())
        return json.loads("".join(v for _, v in parts))  # type: ignore[no-any-return]

    def members(self, group_id: str) -> set[str]:
        return {m for g, m in self.memberships if g == group_id}

    def flags(self, rtype: str, id: str) -> set[str]:
        """The groups named by the resource's ``m_*`` flags that are true."""
        if (rtype, id) not in self._flags:
            entity = self.resources[(rtype, id)]
            self._flags[(rtype, id)] = {
                g
                for name, value in entity.items()
                if value is True and name.startswith("m_") and (g := keys.flag_group_id(name))
            }
        return self._flags[(rtype, id)]


_KINDS = {"u": "User", "g": "Group"}


def read_directory(rows: Iterable[Mapping[str, Any]]) -> Directory:
    directory = Directory()
    for row in rows:
        rk = row["RowKey"]
        kind, _, rest = rk.partition("|")
        if kind in _KINDS:
            directory.resources[(_KINDS[kind], keys.decode_value(rest))] = dict(row)
        elif kind in ("U", "G"):
            directory.unique[rk] = row["id"]
        elif kind == "X":
            directory.multi.add(rk)
        elif kind == "m":
            group, member = rest.split("|")
            directory.memberships[(keys.decode_value(group), keys.decode_value(member))] = row.get("type") or "User"
        elif kind == "e":
            directory.events.append(rk)
        else:
            directory.unknown.append(rk)
    return directory


async def raw_directory(connection_string: str, prefix: str, tenant: str) -> Directory:
    """Every row of the tenant's partition, read with a plain TableClient (not through the store)."""
    async with TableClient.from_connection_string(connection_string, table_name=f"{prefix}directory") as table:
        pager = table.query_entities("PartitionKey eq @pk", parameters={"pk": keys.partition_key(tenant)})
        return read_directory([row async for row in pager])


def violations(directory: Directory) -> list[str]:
    """Every broken invariant of the layout (docs/table-layout.md), as readable lines.

    - every unique/non-unique index row names a live resource that is indexed by it, and
      every term of every resource has its index row (no orphan blocking a userName);
    - no two users share a userName, no two groups a displayName (case-insensitive);
    - every membership row names a live group and a live member whose ``m_{group}`` flag is
      true, and every true flag has its membership row and names a live group.
    """
    problems: list[str] = [f"unknown row kind {rk}" for rk in directory.unknown]
    wanted_unique: dict[str, str] = {}
    wanted_multi: set[str] = set()
    for (rtype, id), entity in directory.resources.items():
        idx = json.loads(entity.get("idx") or "{}")
        for attribute, key in (idx.get("u") or {}).items():
            wanted_unique[keys.unique_key(rtype, attribute, key)] = id  # type: ignore[arg-type]
        for attribute, key in idx.get("m") or []:
            wanted_multi.add(keys.multi_key(rtype, attribute, key, id))  # type: ignore[arg-type]
        for group in directory.flags(rtype, id):
            if ("Group", group) not in directory.resources:
                problems.append(f"{rtype} {id} has a flag of deleted group {group}")
            if (group, id) not in directory.memberships:
                problems.append(f"{rtype} {id} has a flag of group {group} without a membership row")
    for rk, id in directory.unique.items():
        if wanted_unique.get(rk) != id:
            problems.append(f"orphan unique index row {rk} -> {id}")
    for rk, id in wanted_unique.items():
        if directory.unique.get(rk) != id:
            problems.append(f"missing unique index row {rk} of {id}")
    problems += [f"orphan index row {rk}" for rk in sorted(directory.multi - wanted_multi)]
    problems += [f"missing index row {rk}" for rk in sorted(wanted_multi - directory.multi)]
    for rtype, attribute in (("User", "userName"), ("Group", "displayName")):
        names = Counter(str(directory.doc(rtype, i).get(attribute, "")).casefold() for i in directory.ids(rtype))
        problems += [f"{count} {rtype}s share {attribute} {name!r}" for name, count in names.items() if count > 1]
    for (group, member), mtype in directory.memberships.items():
        if ("Group", group) not in directory.resources:
            problems.append(f"membership {group} -> {member} of a deleted group")
        if (mtype, member) not in directory.resources:
            problems.append(f"membership {group} -> {member} of a deleted {mtype}")
        elif group not in directory.flags(mtype, member):
            problems.append(f"membership {group} -> {member} without the member's flag")
    return problems


# ---- mail ---------------------------------------------------------------------------------------


@dataclass
class Mailbox:
    """An SMTP handler that keeps every message, and can refuse the next N."""

    messages: list[email.message.Message] = field(default_factory=list)
    refuse: int = 0

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        if self.refuse > 0:
            self.refuse -= 1
            return "451 try again later"
        message = email.message_from_bytes(envelope.content)
        message["X-Envelope-To"] = ",".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 OK"

    def to(self, address: str) -> list[email.message.Message]:
        return [m for m in self.messages if address in m["X-Envelope-To"]]


@contextlib.contextmanager
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    """An aiosmtpd server on 127.0.0.1 (a free port) delivering into a :class:`Mailbox`; stopped on exit."""
    from aiosmtpd.controller import Controller

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()
