"""The directory's events read back and purged: the ``e|{stamp:016d}|{id}`` rows (``docs/events.md``).

:class:`_DirectoryEvents` is the event half of :class:`scim.store.tables.TableStore`; the rows are
written by its writes, in the same transaction as the change they describe. Feed order is RowKey
order: the stamp (commit time in microseconds, fixed width), then the event id (or the row id of
a member PATCH transaction's row, which holds its events as a list, in their order). Reading a
page is one range query (learn.microsoft.com, "Querying tables and entities": at most 1,000 entities a
page), whatever the position, so a page costs O(page).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from scim.store import keys
from scim.store.azure_client import _TIMEOUT, _budgeted, _io, _TableOwner
from scim.store.base import StoredEvent, StoreUnavailable
from scim.store.directory_commits import PREVIOUS
from scim.store.directory_reads import _FILTER_AFTER, _FILTER_RANGE, MAX_PAGE, _first_rows
from scim.store.entities import _json_from
from scim.store.operations import MAX_ATTEMPTS, MAX_TRANSACTION_OPS, _batches


class _DirectoryEvents(_TableOwner):
    """Reads and purges of the directory's event rows."""

    if TYPE_CHECKING:

        async def _delete_rows(self, pk: str, row_keys: Sequence[str]) -> bool: ...

    @_budgeted
    async def read_events(self, tenant: str, *, after: str | None, before: int, limit: int) -> list[StoredEvent]:
        """One range query: from the row of ``after`` (:func:`scim.store.keys.event_row_after`)
        to ``e|{before:016d}``, ``limit`` rows a page (one more when ``after`` is inside a row,
        whose rest may be empty), expanded into their events (:func:`_expand`)."""
        if limit < 1:
            raise ValueError("limit must be positive")
        await self._ready()
        lo, inclusive = keys.event_row_after(after or "")
        hi = keys.event_bound(before)
        if lo >= hi:
            return []
        params = {"pk": keys.partition_key(tenant), "lo": lo, "hi": hi}
        rows_wanted = min(limit + 1 if inclusive else limit, MAX_PAGE)
        pager: Any = self._table.query_entities(
            _FILTER_RANGE if inclusive else _FILTER_AFTER, parameters=params, results_per_page=rows_wanted, **_TIMEOUT
        ).by_page()
        rows: list[Mapping[str, Any]] = await _io(lambda: _first_rows(pager))
        return _expand(rows, after)[:limit]

    async def purge_events(self, tenant: str, *, older_than: int) -> int:
        """Pages of 1,000 event RowKeys stamped before ``older_than``, each deleted by concurrent
        transactions of 100, until a query finds none; returns how many were deleted.

        Not bound to one operation's time budget (a retention run may have much to delete); a
        failure leaves the rest for the next run."""
        await self._ready()
        pk = keys.partition_key(tenant)
        params = {"pk": pk, "lo": keys.EVENT_PREFIX, "hi": keys.event_bound(older_than)}
        deleted = stalls = 0
        while stalls < MAX_ATTEMPTS:
            pager: Any = self._table.query_entities(
                _FILTER_RANGE, parameters=params, select=["RowKey"], results_per_page=MAX_PAGE, **_TIMEOUT
            ).by_page()
            rows = [row["RowKey"] for row in await _io(functools.partial(_first_rows, pager))]
            if not rows:
                return deleted
            batches = list(_batches(rows, MAX_TRANSACTION_OPS))
            outcomes = await asyncio.gather(*(self._delete_rows(pk, b) for b in batches), return_exceptions=True)
            failure = next((o for o in outcomes if isinstance(o, BaseException)), None)
            if failure is not None:
                raise failure
            done = sum(len(b) for b, ok in zip(batches, outcomes, strict=True) if ok)
            deleted += done
            stalls = 0 if done else stalls + 1
        raise StoreUnavailable(f"events of tenant {tenant} kept changing while being purged")


def _expand(rows: Sequence[Mapping[str, Any]], after: str | None) -> list[StoredEvent]:
    """The events of event rows, in feed order, after ``after``: a row holds one event (its
    position is the RowKey without ``e|``) or the list of a member PATCH transaction's events
    (positions ``…|{index:03d}``, :func:`scim.store.keys.row_event_positions`)."""
    events: list[StoredEvent] = []
    for row in rows:
        value = _json_from(row)
        previous = row.get(PREVIOUS)
        before = int(previous) if isinstance(previous, str) and previous.isdigit() else 0
        if isinstance(value, list):
            positions = keys.row_event_positions(row["RowKey"], len(value))
            events += [
                StoredEvent(p, e, before) for p, e in zip(positions, value, strict=True) if after is None or p > after
            ]
        else:
            events.append(StoredEvent(keys.event_position(row["RowKey"]), value, before))
    return events
