"""What every log line and every storage call of a request can see: its correlation id and its
count of storage round trips, in one context variable (:func:`begin_request`).

The correlation id (``X-Correlation-ID``) is minted when a request arrives, before it is handled,
so every log record made while it is handled carries it as ``record.correlation_id`` (a
``LogRecord`` factory installed when this module is imported: one context-variable read per
record; ``""`` outside a request). Formatters can show it (``%(correlation_id)s``), and the Azure
Monitor log exporter sends it as a custom dimension of each log line (``customDimensions
.correlation_id``).

Storage round trips are counted by :class:`scim.telemetry.storage.StorageCallCounter`, a
per-call policy of the runtime's Table client (:func:`scim.functions.runtime.build_runtime`):
each HTTP request to storage made in the request's context (its concurrent reads included, as
asyncio tasks copy the context) adds one to the request's count. Background work (the
provisioning log writer, webhook delivery) runs in a context of its own
(:func:`scim.telemetry.instruments.background_context`) and is not counted.

Nothing here imports OpenTelemetry or the Azure SDK (this module is on the import path of
``function_app``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any

__all__ = ["RequestScope", "begin_request", "correlation_id", "end_request", "note_storage_call"]


class RequestScope:
    """One request's correlation id and its count of storage round trips so far."""

    __slots__ = ("_token", "correlation_id", "storage_calls")

    def __init__(self, correlation_id: str) -> None:
        self.correlation_id = correlation_id
        self.storage_calls = 0
        self._token: Token[RequestScope | None] | None = None


_REQUEST: ContextVar[RequestScope | None] = ContextVar("scim_request", default=None)


def begin_request(correlation_id: str) -> RequestScope:
    """Enter a request's scope (in the current context); :func:`end_request` leaves it."""
    scope = RequestScope(correlation_id)
    scope._token = _REQUEST.set(scope)
    return scope


def end_request(scope: RequestScope) -> None:
    """Leave ``scope`` (the context is as before :func:`begin_request`)."""
    if scope._token is not None:
        _REQUEST.reset(scope._token)
        scope._token = None


def correlation_id() -> str:
    """The correlation id of the request being handled, or ``""`` outside a request."""
    scope = _REQUEST.get()
    return scope.correlation_id if scope is not None else ""


def note_storage_call() -> None:
    """Count one storage round trip for the request being handled (none outside a request)."""
    scope = _REQUEST.get()
    if scope is not None:
        scope.storage_calls += 1


def _install_record_factory() -> None:
    """Give every ``LogRecord`` a ``correlation_id`` attribute (``""`` outside a request), on
    top of whatever factory is in place (once: importing this module again changes nothing)."""
    previous: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()
    if getattr(previous, "_scim_correlation", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        scope = _REQUEST.get()
        record.correlation_id = scope.correlation_id if scope is not None else ""
        return record

    factory._scim_correlation = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


_install_record_factory()
