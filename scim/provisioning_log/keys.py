"""The order of the provisioning log: the key of each row, and the key ranges of windows and pages.

Both implementations keep a tenant's rows under these keys and read them as ranges of them
(:mod:`scim.provisioning_log.memory` in a sorted list, :mod:`scim.provisioning_log.tables` as
the RowKeys of the tenant's partition), so they order, window and page alike:

- ``a|{inv}|{cid}``: every entry; ``f|{inv}|{cid}``: a failed entry once more, so that failures
  are read without reading successes;
- ``x|{inv}|{writer}``: one writer's (process's) count of unauthenticated requests in the
  period starting at that time;
- ``h|{inv}|{series}``: one series' tally of the entries of the hour starting at that time
  (:class:`~scim.provisioning_log.entries.HourTally`);
- ``{inv}`` is the time inverted (``10^17 - µs since epoch``, 17 digits), so ascending keys are
  newest first; entries of the same time are in correlation-id order.

A cursor is the key of the last entry of a page: the next page is the keys after it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from scim.provisioning_log.entries import LogEntry, parse_time

__all__ = ["count_key", "entry_key", "hour_key", "inverted", "purge_range", "time_of", "window"]

_INVERT = 10**17


def inverted(moment: datetime) -> str:
    """``moment`` as 17 digits that sort later times first."""
    micros = int(moment.timestamp() * 1_000_000)
    return f"{_INVERT - micros:017d}"


def time_of(key: str) -> datetime:
    """The time of a row from its key (``kind|{inv}|...``): :func:`inverted` undone."""
    micros = _INVERT - int(key.split("|", 2)[1])
    return _EPOCH + timedelta(microseconds=micros)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def entry_key(kind: str, entry: LogEntry) -> str:
    """The key of ``entry`` among the ``kind`` rows (``a`` every entry, ``f`` failures)."""
    return f"{kind}|{inverted(parse_time(entry.time))}|{entry.correlation_id}"


def count_key(bucket: datetime, writer: str) -> str:
    """The key of ``writer``'s count of unauthenticated requests in the period starting at ``bucket``."""
    return f"x|{inverted(bucket)}|{writer}"


def hour_key(hour: datetime, series: str) -> str:
    """The key of ``series``' tally of the hour starting at ``hour``."""
    return f"h|{inverted(hour)}|{series}"


def window(kind: str, since: datetime | None, until: datetime | None, cursor: str | None) -> tuple[str, str]:
    """Exclusive key bounds ``(low, high)`` of the ``kind`` rows with ``since <= time < until``
    (either end open when None), after ``cursor`` when given."""
    # Newest first: a row at time t has key kind|inv(t)|...; later times sort first. A row at
    # ``until`` sorts before kind|inv(until)|~ (excluded), one at ``since`` before kind|inv(since)}.
    low = f"{kind}|{inverted(until)}|~" if until else f"{kind}|"
    high = f"{kind}|{inverted(since)}}}" if since else f"{kind}}}"
    return (max(low, cursor) if cursor else low), high


def purge_range(kind: str, older_than: datetime) -> tuple[str, str]:
    """Exclusive key bounds ``(low, high)`` of the ``kind`` rows whose time is ``older_than`` or older."""
    return f"{kind}|{inverted(older_than)}", f"{kind}}}"
