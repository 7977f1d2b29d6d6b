"""Member PATCHes of the directory: adding and removing group members without reading the member list.

:class:`_DirectoryMembers` is the membership half of :class:`scim.store.tables.TableStore`
(RFC 7644 §3.5.2, how Entra adds and removes group members one at a time), per
``docs/table-layout.md`` ("Operations and their storage round trips", "Why membership is stored
this way"): k members are ⌈k/49⌉ independent transactions, up to 4 at a time, each a merge on
the group (existence check, new version), per member an insert/delete of the ``m|{g}|{m}`` row
and a merge of the ``m_{g}`` flag onto the member, which fails if the member does not exist,
and one row holding the transaction's membership events (``docs/events.md``, "Membership
events"). The insert fails for a member already in the group and the delete for one not in it:
such members are dropped and the rest sent again, so only real changes commit, with their
events. Concurrent changes commute, and the cost does not depend on the size of the group.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from azure.data.tables import UpdateMode

from scim.core.events import GROUP_MEMBER_ADDED, GROUP_MEMBER_REMOVED, membership_document, new_event_id
from scim.store import MAX_GROUPS_PER_RESOURCE, dedupe_members, keys
from scim.store.azure_client import _TIMEOUT, _budgeted, _io
from scim.store.base import (
    EntityTooLarge,
    Member,
    MembershipEventIntent,
    ResourceNotFound,
    StoreUnavailable,
    TooManyGroups,
    UnknownMembers,
    VersionMismatch,
)
from scim.store.directory_commits import _Build
from scim.store.directory_reads import _DirectoryReads
from scim.store.entities import _etag, _events_entity, _live_flags
from scim.store.event_timing import floor_after, stamp_time
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

MEMBERS_PER_TRANSACTION = (MAX_TRANSACTION_OPS - 2) // 2  # 49: 1 group merge + 2 ops per member + 1 event row


@dataclass
class _Change:
    """One member PATCH's membership change of a group: ``kind`` is the event type
    (``group.member_added``/``removed``); ``event`` the caller's intent (None: no events)."""

    tenant: str
    pk: str
    group_id: str
    flag: str
    kind: str
    event: MembershipEventIntent | None
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def floor(self) -> int:
        """The earliest stamp: 1 ms after the group's change the caller last saw."""
        return floor_after(self.event.not_before) if self.event is not None else 0

    def event_id(self, member: Member) -> str:
        """The member's event id, the same for every attempt (only one of them can commit)."""
        return self.ids.setdefault(member.value, new_event_id())


class _DirectoryMembers(_DirectoryReads):
    """Membership changes of the ``{prefix}directory`` table; the transactions are sent by
    :meth:`scim.store.tables.TableStore._submit`."""

    if TYPE_CHECKING:

        async def _submit(self, ops: Sequence[_Op]) -> Sequence[Mapping[str, Any]]: ...

        async def _commit(
            self, build: _Build, not_before: int = 0
        ) -> tuple[list[_Op], Sequence[Mapping[str, Any]]]: ...

    @_budgeted
    async def add_members(
        self, tenant: str, group_id: str, members: Sequence[Member], *, event: MembershipEventIntent | None = None
    ) -> None:
        """RFC 7644 §3.5.2.1: ⌈k/49⌉ transactions, whatever the size of the group (rule 7), each
        with the ``group.member_added`` events of the members it really added (rule 10)."""
        await self._ready()
        pk = keys.partition_key(tenant)
        flag = await self._group_flag(pk, group_id, members)
        wanted = dedupe_members(members)
        if any(m.value == group_id for m in wanted):  # not its own member (error path: check it exists)
            await self._read(pk, keys.resource_key("Group", group_id), ["RowKey"])
            raise UnknownMembers([group_id])
        batches = list(_batches(wanted, MEMBERS_PER_TRANSACTION))
        change = _Change(tenant, pk, group_id, flag, GROUP_MEMBER_ADDED, event)
        outcomes = await _in_parallel([self._add_batch(change, list(batch)) for batch in batches])
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

    async def _add_batch(self, change: _Change, batch: list[Member]) -> None:
        """One transaction: merge on the group, per member an insert of its ``m|`` row and a flag
        merge, and the row of the events.

        A member already in the group fails its insert (409): a re-add, which changes nothing and
        gives no event; it is dropped and the rest sent again. The first such failure in a batch
        of more than two, and any after a resend (the earlier attempt may have committed all of
        it), reads the batch's membership rows instead (one round trip of latency) and keeps the
        members without one. So a resent transaction never commits its events twice: its
        inserts conflict.
        """
        checked = len(batch) <= 2
        for _ in range(MAX_ATTEMPTS):
            if not batch:
                return
            try:
                await self._commit(self._member_build(change, batch), change.floor)
                return
            except _OpFailed as failed:
                op = failed.op
                if op is not None and op.role == "membership" and failed.status == 409:
                    if not checked or failed.retried:
                        checked = True
                        present = {m.value for m in await self._memberships(change.pk, change.group_id, batch)}
                        batch = [m for m in batch if m.value not in present]
                    else:
                        batch = [m for m in batch if m.value != op.subject]
                    continue
                if not (isinstance(failed.error, EntityTooLarge) and op is not None and op.role == "member"):
                    raise
                member = next(m for m in batch if m.value == op.subject)
                await self._compact(change.pk, member, change.flag)
        raise StoreUnavailable(f"Group {change.group_id}: members kept changing; try again")

    def _member_build(self, change: _Change, batch: Sequence[Member]) -> _Build:
        """The builder of one membership transaction of ``batch`` (adds or removes) for a stamp."""
        make = _link_ops if change.kind == GROUP_MEMBER_ADDED else _unlink_ops
        members = list(batch)

        def build(stamp: int) -> list[_Op]:
            now = stamp_time(stamp)
            group = _row(change.pk, keys.resource_key("Group", change.group_id), lastModified=now)
            ops = [_merge(group, "target", change.group_id)]
            ops += [op for m in members for op in make(change.pk, change.group_id, change.flag, m, now)]
            if change.event is not None:
                ops.append(self._membership_event_op(change, stamp, members))
            return ops

        return build

    def _membership_event_op(self, change: _Change, stamp: int, members: Sequence[Member]) -> _Op:
        """The insert of the row holding the events of one membership transaction."""
        assert change.event is not None
        time = stamp_time(stamp)
        documents = [
            membership_document(
                id=change.event_id(m), type=change.kind, tenant=change.tenant, time=time, data=change.event.data(m)
            )
            for m in members
        ]
        return _Op("create", _events_entity(change.pk, stamp, new_event_id(), documents), role="event")

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
    async def remove_members(
        self, tenant: str, group_id: str, member_ids: Sequence[str], *, event: MembershipEventIntent | None = None
    ) -> None:
        """RFC 7644 §3.5.2.2: ⌈k/49⌉ transactions; non-members and deleted members are skipped.
        Each commits the ``group.member_removed`` events of the members it removed (rule 10).

        A member is first assumed to be a user; if its membership row exists but no user entity
        does, it is retried as a group.
        """
        await self._ready()
        pk = keys.partition_key(tenant)
        flag = await self._group_flag(pk, group_id, member_ids)
        pending = [Member(i) for i in dict.fromkeys(member_ids)]
        change = _Change(tenant, pk, group_id, flag, GROUP_MEMBER_REMOVED, event)
        _raise_first(
            await _in_parallel(
                [self._remove_batch(change, list(b)) for b in _batches(pending, MEMBERS_PER_TRANSACTION)]
            )
        )

    async def _remove_batch(self, change: _Change, batch: list[Member]) -> None:
        """One transaction removing ``batch``; members that are not (or no longer) in the group
        make it fail, and are dropped before it is sent again: only the members it really
        removes have an event (a resent transaction whose earlier attempt committed fails on its
        first delete, so its events never commit twice).

        The first such failure in a batch of more than two reads the batch's membership rows
        (concurrently: one round trip of latency) and keeps only those that exist, with the
        member type they record. Without it, a batch of 49 members that a previous, interrupted
        attempt of the same PATCH had already removed (Entra retrying after a 503) would need 49
        transactions, one per absent member, and might never finish within the budget.
        """
        checked = len(batch) <= 2
        while batch:
            try:
                await self._commit(self._member_build(change, batch), change.floor)
                return
            except _OpFailed as failed:
                absent = isinstance(failed.error, (ResourceNotFound, UnknownMembers))
                if not checked and absent and failed.op is not None and failed.op.role in ("membership", "member"):
                    checked = True
                    batch = await self._memberships(change.pk, change.group_id, batch)
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
