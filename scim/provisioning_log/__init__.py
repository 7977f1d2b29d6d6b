"""The provisioning log: the outcome of every authenticated SCIM request, per tenant, and a count
of the unauthenticated ones (README "Provisioning log").

- :mod:`scim.provisioning_log.entries`: what an entry is (:class:`LogEntry`, :class:`LogPage`),
  times, periods of counts, hourly tallies and counts (:class:`HourTally`, :class:`HourCount`),
  the constants of writing; pure.
- :mod:`scim.provisioning_log.keys`: the order of the log (row keys, windows, cursors), shared
  by both implementations.
- :mod:`scim.provisioning_log.base`: the interface (:class:`ProvisioningLog`) and its rules.
- :mod:`scim.provisioning_log.memory`: :class:`MemoryProvisioningLog` (tests, the memory runtime).
- :mod:`scim.provisioning_log.tables`: ``TableProvisioningLog`` on Azure Table Storage (or
  Azurite), imported by the caller when needed: the Azure SDK is slow to import.
- :mod:`scim.provisioning_log.writer`: :class:`LogWriter`, which batches writes in the background.

Both implementations pass the same contract tests (``tests/log_contract.py``).
"""

from __future__ import annotations

from scim.provisioning_log.base import ProvisioningLog
from scim.provisioning_log.entries import (
    BUCKET_SECONDS,
    COUNT_WINDOW,
    FLUSH_WINDOW,
    MAX_TEXT,
    HourCount,
    HourTally,
    LogEntry,
    LogPage,
    bucket_of,
    entries_as_json,
    format_time,
    hour_of,
    parse_since,
    parse_time,
)
from scim.provisioning_log.memory import MemoryProvisioningLog
from scim.provisioning_log.writer import LogWriter

__all__ = [
    "BUCKET_SECONDS",
    "COUNT_WINDOW",
    "FLUSH_WINDOW",
    "MAX_TEXT",
    "HourCount",
    "HourTally",
    "LogEntry",
    "LogPage",
    "LogWriter",
    "MemoryProvisioningLog",
    "ProvisioningLog",
    "bucket_of",
    "entries_as_json",
    "format_time",
    "hour_of",
    "parse_since",
    "parse_time",
]
