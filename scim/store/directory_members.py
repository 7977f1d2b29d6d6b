"""Member PATCHes of the directory: adding and removing group members without reading the member list.

:class:`_DirectoryMembers` is the membership half of :class:`scim.store.tables.TableStore`
(RFC 7644 §3.5.2, how Entra adds and removes group members one at a time), per
``docs/table-layout.md`` ("Operations and their storage round trips", "Why membership is stored
this way"): k members are ⌈k/49⌉ independent transactions, up to 4 at a time, each a merge on
the group (existence check, new version) and per member an upsert/delete of the ``m|{g}|{m}``
row and a merge of the ``m_{g}`` flag onto the member, which fails if the member does not
exist. Concurrent changes commute, and the cost does not depend on the size of the group.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from azure.data.tables import UpdateMode

from scim.store import MAX_GROUPS_PER_RESOURCE, dedupe_members, keys
from scim.store.azure_client import _TIMEOUT, _budgeted, _io
from scim.store.base import (
    EntityTooLarge,
    Member,
    ResourceNotFound,
    StoreUnavailable,
    TooManyGroups,
    UnknownMembers,
    VersionMismatch,
)
from scim.store.directory_reads import _DirectoryReads
from scim.store.entities import _etag, _live_flags
from scim.store.operations import (
    MAX_ATTEMPTS,
    MAX_TRANSACTION_OPS,
    _batches,
    _guarded,
    _in_parallel,
    _link_ops,
    _merge,
    _Op,
    _OpFailed,
    _raise_first,
    _row,
    _unlink_ops,
)

MEMBERS_PER_TRANSACTION = (MAX_TRANSACTION_OPS - 1) // 2  # 49: 1 group merge + 2 ops per member


class _DirectoryMembers(_DirectoryReads):
    """Membership changes of the ``{prefix}directory`` table; the transactions are sent by
    :meth:`scim.store.tables.TableStore._submit`."""

    if TYPE_CHECKING:

        async def _submit(self, ops: Sequence[_Op]) -> Sequence[Mapping[str, Any]]: ...

        def _now(self) -> str: ...

    @_budgeted
    async def add_members(self, tenant: str, group_id: str, members: Sequence[Member]) -> None:
        """RFC 7644 §3.5.2.1: ⌈k/49⌉ transactions, whatever the size of the group (rule 7)."""
        await self._ready()
        pk = keys.partition_key(tenant)
        flag = await self._group_flag(pk, group_id, members)
        wanted = dedupe_members(members)
        if any(m.value == group_id for m in wanted):  # not its own member (error path: check it exists)
            await self._read(pk, keys.resource_key("Group", group_id), ["RowKey"])
            raise UnknownMembers([group_id])
        batches = list(_batches(wanted, MEMBERS_PER_TRANSACTION))
        outcomes = await _in_parallel([self._add_batch(pk, group_id, flag, batch) for batch in batches])
        unknown = [
            (batch, outcome)
            for batch, outcome in zip(batches, outcomes, strict=True)
            if isinstance(outcome, _OpFailed) and isinstance(outcome.error, UnknownMembers)
        ]
        if unknown:
            raise await self._unknown(pk, [m for batch, _ in unknown for m in batch], unknown[0][1].op) from None
        _raise_first(outcomes)

    async def _group_flag(self, pk: str, group_id: str, members: Sequence[Any]) -> str:
        """The group's flag name; ResourceNotFound if the id cannot name a group (or, with no
        members to change, if the group does not exist)."""
        flag = keys.group_flag(group_id)
        if flag is None:
            raise ResourceNotFound(f"Group {group_id}")
        if not members:
            await self._read(pk, keys.resource_key("Group", group_id), ["RowKey"])
        return flag

    async def _add_batch(self, pk: str, group_id: str, flag: str, batch: Sequence[Member]) -> None:
        """One transaction: merge on the group + per member an upsert and a flag merge."""
        for _ in range(MAX_ATTEMPTS):
            now = self._now()
            target = _merge(_row(pk, keys.resource_key("Group", group_id), lastModified=now), "target", group_id)
            try:
                await self._submit([target, *(op for m in batch for op in _link_ops(pk, group_id, flag, m, now))])
                return
            except _OpFailed as failed:
                if not (
                    isinstance(failed.error, EntityTooLarge) and failed.op is not None and failed.op.role == "member"
                ):
                    raise
                member = next(m for m in batch if m.value == failed.op.subject)
                await self._compact(pk, member, flag)
        raise StoreUnavailable(f"Group {group_id}: members kept changing; try again")

    async def _compact(self, pk: str, member: Member, flag: str) -> None:
        """The member hit the 252-property limit: drop its tombstones, or TooManyGroups at 200 live groups."""
        try:
            entity = await self._read(pk, keys.resource_key(member.type, member.value))
        except ResourceNotFound:
            raise UnknownMembers([member.value]) from None
        live = _live_flags(entity)
        if flag not in live and len(live) >= MAX_GROUPS_PER_RESOURCE:
            raise TooManyGroups(member.value)
        kept = {name: value for name, value in entity.items() if not keys.flag_group_id(name) or value is True}
        with contextlib.suppress(VersionMismatch):
            await _io(
                lambda: self._table.update_entity(kept, mode=UpdateMode.REPLACE, **_guarded(_etag(entity)), **_TIMEOUT)
            )

    @_budgeted
    async def remove_members(self, tenant: str, group_id: str, member_ids: Sequence[str]) -> None:
        """RFC 7644 §3.5.2.2: ⌈k/49⌉ transactions; non-members and deleted members are skipped.

        A member is first assumed to be a user; if its membership row exists but no user entity
        does, it is retried as a group.
        """
        await self._ready()
        pk = keys.partition_key(tenant)
        flag = await self._group_flag(pk, group_id, member_ids)
        pending = [Member(i) for i in dict.fromkeys(member_ids)]
        _raise_first(
            await _in_parallel(
                [self._remove_batch(pk, group_id, flag, list(b)) for b in _batches(pending, MEMBERS_PER_TRANSACTION)]
            )
        )

    async def _remove_batch(self, pk: str, group_id: str, flag: str, batch: list[Member]) -> None:
        """One transaction removing ``batch``; members that are not (or no longer) in the group
        make it fail, and are dropped before it is sent again.

        The first such failure in a batch of more than two reads the batch's membership rows
        (concurrently: one round trip of latency) and keeps only those that exist, with the
        member type they record. Without it, a batch of 49 members that a previous, interrupted
        attempt of the same PATCH had already removed (Entra retrying after a 503) would need 49
        transactions, one per absent member, and might never finish within the budget.
        """
        checked = len(batch) <= 2
        while batch:
            now = self._now()
            target = _merge(_row(pk, keys.resource_key("Group", group_id), lastModified=now), "target", group_id)
            try:
                await self._submit([target, *(op for m in batch for op in _unlink_ops(pk, group_id, flag, m, now))])
                return
            except _OpFailed as failed:
                absent = isinstance(failed.error, (ResourceNotFound, UnknownMembers))
                if not checked and absent and failed.op is not None and failed.op.role in ("membership", "member"):
                    checked = True
                    batch = await self._memberships(pk, group_id, batch)
                    continue
                batch = _without_failed(batch, failed)

    async def _memberships(self, pk: str, group_id: str, batch: Sequence[Member]) -> list[Member]:
        """The members of ``batch`` that have a membership row in the group, typed as the row says."""
        rows = await asyncio.gather(
            *(self._read_or_none(pk, keys.membership_key(group_id, m.value), ["RowKey", "type"]) for m in batch)
        )
        return [
            Member(m.value, row.get("type") or "User") for m, row in zip(batch, rows, strict=True) if row is not None
        ]


def _without_failed(batch: list[Member], failed: _OpFailed) -> list[Member]:
    """The batch of a member removal after the failure of one operation (see ``remove_members``).

    No membership row: not a member, dropped. No user entity: retried as a group, then dropped.
    The group itself missing: ResourceNotFound.
    """
    op = failed.op
    if op is None or op.role == "target" or not isinstance(failed.error, (ResourceNotFound, UnknownMembers)):
        raise failed.error
    rest = [m for m in batch if m.value != op.subject]
    if op.role == "member":
        failed_member = next(m for m in batch if m.value == op.subject)
        if failed_member.type == "User":
            rest.append(Member(failed_member.value, "Group"))
    return rest
