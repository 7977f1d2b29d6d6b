"""How the directory's transactions are sent: lost answers resent, events stamped, late sends rebuilt.

:class:`_DirectoryCommits` is the sending half of :class:`scim.store.tables.TableStore` (its
reads are :mod:`scim.store.directory_reads`, its member PATCHes :mod:`scim.store.directory_members`):

- :meth:`~_DirectoryCommits._submit` sends one entity-group transaction (learn.microsoft.com,
  "Performing entity group transactions"), again when its request or answer was lost, and maps
  a failure to the operation that failed (:class:`scim.store.operations._Op`);
- :meth:`~_DirectoryCommits._commit` stamps a transaction with its commit time
  (:class:`~scim.store.event_timing.EventClock`) and builds it again with a fresh stamp when it
  could not be sent within :data:`~scim.store.event_timing.MAX_SEND_DELAY` of it (the pipeline
  policy of :mod:`scim.store.event_policy` refuses the late attempt), so that an event commits
  within the feed's horizon of its stamp or never (``docs/events.md``);
- :meth:`~_DirectoryCommits._event_op` is the insert of one event row (``e|{stamp}|{id}``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.data.tables import TableTransactionError

from scim.core.events import event_document
from scim.store import keys
from scim.store.azure_client import _TIMEOUT, SUBMIT_ATTEMPTS, _io, _remaining, _TableOwner
from scim.store.azure_errors import store_error
from scim.store.base import EventIntent, StoredResource, StoreUnavailable
from scim.store.entities import MAX_ENTITY_BYTES, MAX_PROPERTIES, _entity_bytes, _event_entity
from scim.store.event_policy import TICKET_OPTION
from scim.store.event_timing import STAMP_ATTEMPTS, EventClock, SendTicket, StaleStamp, stamp_time
from scim.store.operations import _Op, _OpFailed
from scim.store.transactions import submit_transaction

_Build = Callable[[int], list[_Op]]
"""Builds a transaction for a stamp (the commit time, microseconds since the epoch)."""


class _DirectoryCommits(_TableOwner):
    """Sends the directory's transactions; ``_clock`` stamps them (one per store: per process)."""

    _clock: EventClock

    def _now(self) -> str:
        """The time of a change without an event (a membership's ``lastModified``): from the
        store's clock, so that a resource's ``lastModified`` never goes back within the process
        after an event stamped ahead of the wall clock (1 ms after a previous change)."""
        return stamp_time(self._clock.stamp())

    async def _submit(self, ops: Sequence[_Op]) -> Sequence[Mapping[str, Any]]:
        """One entity-group transaction; a failed one raises :class:`_OpFailed` naming the operation.

        A transaction whose request or response was lost (connection refused or reset, read
        timeout: azure-core does not retry a POST for those) is sent again, at most
        :data:`SUBMIT_ATTEMPTS` times with back-off, inside the operation's budget. Sending one
        twice is safe: every transaction of this store either is idempotent (membership upserts,
        flag merges) or fails on its first operation if the earlier attempt committed, and the
        caller recognises that (``_OpFailed.retried``): the insert of a fresh resource id (409,
        see :meth:`create`), an ETag-guarded write of the resource (412/404: read again). An
        event row never commits twice: it is in the same transaction as that first operation.

        A transaction with an event row sent too late after its stamp raises :class:`StaleStamp`
        (not sent; ``sent`` if an earlier attempt may have reached storage): see :meth:`_commit`.
        """
        retried = False
        for attempt in range(1, SUBMIT_ATTEMPTS + 1):
            try:
                return await _io(lambda: self._send(ops))
            except _OpFailed as failed:
                failed.retried = failed.retried or retried
                raise
            except StaleStamp as stale:
                stale.sent = stale.sent or retried
                raise
            except StoreUnavailable as exc:
                delay = 0.2 * 2 ** (attempt - 1) * random.uniform(0.5, 1.0)
                lost = isinstance(exc.__cause__, (ServiceRequestError, ServiceResponseError))
                if not lost or attempt == SUBMIT_ATTEMPTS or _remaining() <= delay:
                    raise
                retried = True
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _send(self, ops: Sequence[_Op]) -> Sequence[Mapping[str, Any]]:
        if len(ops) == 1 and ops[0].kind == "update":
            # One update (a PATCH that moves no index row, without an event): the same atomic,
            # guarded write without a $batch envelope, whose multipart encoding costs the most CPU.
            try:
                return [dict(await self._table.update_entity(ops[0].entity, **ops[0].options, **_TIMEOUT))]
            except HttpResponseError as exc:
                raise _OpFailed(ops[0], store_error(exc, ops[0]), exc.status_code) from exc
        stamp = next((keys.event_stamp(op.entity["RowKey"]) for op in ops if op.role == "event"), None)
        ticket = SendTicket(stamp, self._clock.wall)
        options = {TICKET_OPTION: ticket, **_TIMEOUT}
        try:
            return await submit_transaction(self._table, [op.as_tuple() for op in ops], **options)
        except TableTransactionError as exc:
            op = ops[exc.index] if 0 <= exc.index < len(ops) else None
            failed = _OpFailed(op, store_error(exc, op), exc.status_code)
            failed.retried = ticket.attempts > 1  # azure-core sent it again (after a 500/503/504)
            raise failed from exc

    async def _commit(self, build: _Build, not_before: int = 0) -> tuple[list[_Op], Sequence[Mapping[str, Any]]]:
        """Stamp, build and submit a transaction; build it again with a fresh stamp when it could
        not be sent within MAX_SEND_DELAY of its stamp (at most :data:`STAMP_ATTEMPTS` times).

        ``not_before``: the earliest stamp (1 ms after the resource's previous change). Returns
        the operations that committed and their results. A failure after an attempt that may
        have reached storage has ``retried`` set, as :meth:`_submit`'s own resends do.
        """
        sent = False
        for _ in range(STAMP_ATTEMPTS):
            ops = build(self._clock.stamp(not_before))
            _mark_previous(ops, not_before)
            try:
                return ops, await self._submit(ops)
            except StaleStamp as stale:
                sent = sent or stale.sent
            except _OpFailed as failed:
                failed.retried = failed.retried or sent
                raise
        raise StoreUnavailable("storage did not take the write in time; try again")

    def _event_op(
        self, tenant: str, pk: str, event: EventIntent, kind: str, event_id: str, stamp: int, subject: StoredResource
    ) -> _Op:
        """The insert of the event row (a taken RowKey fails the transaction, never overwrites)."""
        document = event_document(
            id=event_id, type=kind, tenant=tenant, time=stamp_time(stamp), obj=event.render(subject)
        )
        return _Op("create", _event_entity(pk, stamp, document), role="event")


PREVIOUS = "prev"
"""The event row's property holding :attr:`scim.store.base.StoredEvent.previous` (a digit string)."""


def _mark_previous(ops: list[_Op], not_before: int) -> None:
    """Record on the event row the millisecond of the resource's previous change: ``not_before``
    is 1 ms after it (:func:`scim.store.event_timing.floor_after`). Left out when the row is at
    the entity limits already (the deliverer then does without it)."""
    if not_before <= 0:
        return
    for op in ops:
        if op.role == "event":
            op.entity[PREVIOUS] = str(not_before - 1000)
            if len(op.entity) > MAX_PROPERTIES or _entity_bytes(op.entity) > MAX_ENTITY_BYTES:
                del op.entity[PREVIOUS]
