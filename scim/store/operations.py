"""The operations of the directory's entity-group transactions, and what their failure means.

A transaction (learn.microsoft.com: "Performing entity group transactions") holds at most 100
operations on one partition and happens entirely or not at all; when it fails, the service
names the failing operation. :class:`_Op` is one operation with its role in the change, so that
:class:`_OpFailed` (and :func:`scim.store.azure_errors.store_error`) can say what the failure
means. The builders write the rows of ``docs/table-layout.md`` ("Row kinds inside a tenant's
partition"): index rows (``U|``/``G|``, ``X|``), and both directions of a membership (the
``m|{g}|{m}`` row and the ``m_{g}`` flag merged onto the member). :func:`_in_parallel` runs the
independent transactions of one member PATCH.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from azure.core import MatchConditions
from azure.data.tables import UpdateMode

from scim.store import keys
from scim.store.base import IndexTerms, Member, ResourceKind, StoreError

# Azure Table Storage limits (learn.microsoft.com: "Understanding the Table service data model").
MAX_TRANSACTION_OPS = 100
MAX_ATTEMPTS = 10  # ETag-guarded writes retried after a concurrent membership change

_NO_TERMS = IndexTerms()


@dataclass(frozen=True)
class _Op:
    """One operation of a transaction, with what its failure means.

    ``role``: ``resource`` (insert of the resource), ``guard`` (ETag-guarded write of the
    resource), ``target`` (merge on the group of a member PATCH), ``unique`` / ``index``
    (index rows), ``membership`` (an ``m|`` row), ``member`` (the flag merge on a member),
    ``parent`` (merge on a group the deleted resource was in), ``event`` (insert of an event
    row, ``docs/events.md``). ``subject``: the attribute of a
    unique row, the member id of a membership/member op, the group id of a parent op.
    """

    kind: str
    entity: dict[str, Any]
    options: Mapping[str, Any] = field(default_factory=dict)
    role: str = "index"
    subject: str = ""

    def as_tuple(self) -> tuple[Any, ...]:
        return (self.kind, self.entity, dict(self.options))


class _OpFailed(Exception):
    """A transaction failed at ``op``; ``error`` is the store error it maps to."""

    def __init__(self, op: _Op | None, error: StoreError, status: int | None = None) -> None:
        super().__init__(str(error))
        self.op = op
        self.error = error
        self.status = status
        self.committed = False  # an earlier transaction of the same operation committed
        self.retried = False  # this transaction was sent again after a lost request or response


def _row(pk: str, rk: str, **properties: Any) -> dict[str, Any]:
    return {"PartitionKey": pk, "RowKey": rk, **properties}


def _guarded(etag: str) -> dict[str, Any]:
    return {"etag": etag, "match_condition": MatchConditions.IfNotModified}


def _merge(entity: dict[str, Any], role: str, subject: str = "", etag: str | None = None) -> _Op:
    options: dict[str, Any] = {"mode": UpdateMode.MERGE}
    if etag is not None:
        options.update(_guarded(etag))
    return _Op("update", entity, options, role, subject)


def _delete(pk: str, rk: str, role: str = "index", subject: str = "", etag: str | None = None) -> _Op:
    return _Op("delete", _row(pk, rk), _guarded(etag) if etag else {}, role, subject)


def _index_ops(
    pk: str, resource_type: ResourceKind, id: str, new: IndexTerms, old: IndexTerms = _NO_TERMS
) -> list[_Op]:
    """Index rows to insert (unique: must not exist) and delete to go from ``old`` to ``new``."""
    ops: list[_Op] = []
    for attribute, key in new.unique.items():
        if old.unique.get(attribute) != key:
            rk = keys.unique_key(resource_type, attribute, key)
            ops.append(_Op("create", _row(pk, rk, id=id), role="unique", subject=attribute))
    for attribute, key in old.unique.items():
        if new.unique.get(attribute) != key:
            ops.append(_delete(pk, keys.unique_key(resource_type, attribute, key)))
    for attribute, key in sorted(new.multi - old.multi):
        ops.append(
            _Op("upsert", _row(pk, keys.multi_key(resource_type, attribute, key, id)), {"mode": UpdateMode.REPLACE})
        )
    for attribute, key in sorted(old.multi - new.multi):
        ops.append(_delete(pk, keys.multi_key(resource_type, attribute, key, id)))
    return ops


def _link_ops(pk: str, group_id: str, flag: str, member: Member, now: str) -> list[_Op]:
    """Add one membership: insert ``m|{g}|{m}`` (409 if the member is in the group already: a
    re-add, which changes nothing), merge ``m_{g}=true`` onto the member."""
    extra = {"display": member.display} if member.display else {}
    row = _row(pk, keys.membership_key(group_id, member.value), type=member.type, **extra)
    flag_row = _row(pk, keys.resource_key(member.type, member.value), lastModified=now, **{flag: True})
    return [
        _Op("create", row, role="membership", subject=member.value),
        _merge(flag_row, "member", member.value),
    ]


def _unlink_ops(pk: str, group_id: str, flag: str, member: Member, now: str) -> list[_Op]:
    """Remove one membership: delete ``m|{g}|{m}``, merge ``m_{g}=false`` (tombstone) onto the member."""
    flag_row = _row(pk, keys.resource_key(member.type, member.value), lastModified=now, **{flag: False})
    return [
        _delete(pk, keys.membership_key(group_id, member.value), "membership", member.value),
        _merge(flag_row, "member", member.value),
    ]


def _parent_ops(pk: str, group_id: str, member_id: str, now: str) -> list[_Op]:
    """Drop the deleted resource from a group it was in: delete the row, bump the group's version."""
    return [
        _delete(pk, keys.membership_key(group_id, member_id), "membership", group_id),
        _merge(_row(pk, keys.resource_key("Group", group_id), lastModified=now), "parent", group_id),
    ]


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


PARALLEL_PARTS = 4
"""Transactions of one member PATCH sent at once (a 100-member PATCH is 3: one round trip of latency)."""


async def _in_parallel(parts: Sequence[Coroutine[Any, Any, None]]) -> list[BaseException | None]:
    """Run the transactions of one operation, at most :data:`PARALLEL_PARTS` at a time; each
    part's outcome (None or its exception). The parts of a member PATCH are independent and
    commute (membership upserts/deletes, flag merges, an unconditional merge on the group), and
    each is idempotent, so Entra's retry after a partial failure converges (docs/ENTRA.md §5)."""
    if len(parts) == 1:
        try:
            await parts[0]
            return [None]
        except Exception as exc:  # noqa: BLE001 - reported to the caller
            return [exc]
    gate = asyncio.Semaphore(PARALLEL_PARTS)

    async def run(part: Coroutine[Any, Any, None]) -> None:
        async with gate:
            await part

    results = await asyncio.gather(*(run(p) for p in parts), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, Exception):
            raise result  # cancellation and the like
    return [r if isinstance(r, BaseException) else None for r in results]


def _raise_first(outcomes: Sequence[BaseException | None]) -> None:
    """Raise the first part's failure, as a store error."""
    failure = next((o for o in outcomes if o is not None), None)
    if isinstance(failure, _OpFailed):
        raise failure.error from None
    if failure is not None:
        raise failure
