"""Directory storage: the :class:`~scim.store.base.DirectoryStore` interface and its implementations.

- :mod:`scim.store.base`: the interface, its contract and its errors.
- :mod:`scim.store.memory`: :class:`MemoryStore` and :class:`MemoryTenantRegistry` (tests, local runs).
- Azure Table Storage / Azurite (``docs/table-layout.md``), imported lazily by the caller: the
  Azure SDK is slow to import. Imports point down this list:

  - :mod:`scim.store.azure_errors`: Azure SDK errors mapped to store errors (the one place);
  - :mod:`scim.store.azure_client`: the service client, time bounds and budget, table creation;
  - :mod:`scim.store.entities`: a resource as a Table entity and back;
  - :mod:`scim.store.operations`: the operations of entity-group transactions;
  - :mod:`scim.store.directory_reads`: point reads and the index plans of lookups and scans;
  - :mod:`scim.store.directory_members`: member PATCHes;
  - :mod:`scim.store.event_policy`: the pipeline policy that bounds when an event may commit;
  - :mod:`scim.store.directory_commits`: transactions sent, resent, stamped (events);
  - :mod:`scim.store.directory_events`: events read back and purged;
  - :mod:`scim.store.tenant_registry`: :class:`TableTenantRegistry`;
  - :mod:`scim.store.app_keys_tables`: :class:`TableAppKeyRegistry` (application keys;
    the memory double is :mod:`scim.store.app_keys_memory`);
  - :mod:`scim.store.tables`: :class:`TableStore`, the directory.
- :mod:`scim.store.keys`: the RowKey encoding of ``docs/table-layout.md``.
- :mod:`scim.store.event_timing`: event stamps and the bounds that keep the feed from skipping one.
- :mod:`scim.store.roundtrips`: a pipeline policy counting storage round trips (tests, benchmarks).

This module also holds the few helpers both implementations share, so they stamp ids,
times and limits the same way.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from scim.store.base import Member, ResourceKind

__all__ = ["MAX_GROUPS_PER_RESOURCE", "check_members_allowed", "dedupe_members", "new_id", "utc_now"]

MAX_GROUPS_PER_RESOURCE = 200
"""A resource may be a direct member of at most this many groups (``docs/table-layout.md``)."""


def new_id() -> str:
    """A fresh resource id: a UUID4 string (RFC 7643 §3.1: ``id`` is assigned by the service provider)."""
    return str(uuid.uuid4())


def utc_now() -> str:
    """The current time as an RFC 3339 UTC string with milliseconds (RFC 7643 §3.1 ``meta.created``)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def dedupe_members(members: Iterable[Member]) -> list[Member]:
    """``members`` without repeated ids, first occurrence kept, order preserved."""
    seen: dict[str, Member] = {}
    for member in members:
        seen.setdefault(member.value, member)
    return list(seen.values())


def check_members_allowed(resource_type: ResourceKind, members: Sequence[Member]) -> None:
    """Only groups have members (RFC 7643 §4.2); passing members for a user is a programming error."""
    if resource_type != "Group" and members:
        raise ValueError("only a Group has members")
