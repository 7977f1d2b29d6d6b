"""Telemetry of storage calls: a request's count of round trips, and why a call failed.

- :class:`StorageCallCounter`: the per-call policy :func:`scim.functions.runtime.build_runtime`
  gives the runtime's Table client; each HTTP request to storage adds one to the count of the
  request being handled (:func:`scim.telemetry.context.note_storage_call`: one context-variable
  read), which :mod:`scim.functions.http_adapter` records as ``scim.request.storage_calls``. It
  is attached like :class:`scim.store.roundtrips.RoundTripCounter` (``raw_request_hook``), so it
  sees every attempt, retries included.
- :func:`unavailable_reason`: the ``scim.reason`` of ``scim.storage.unavailable`` for a failed
  storage call (:func:`scim.store.azure_client._io`).

The storage *spans* are the Azure SDK's own (azure-core's OpenTelemetry tracing, which the
Azure Monitor distro turns on), made children of the request's span by the OpenTelemetry
context; :mod:`scim.telemetry.setup` only keeps entity keys out of their URL attribute.
"""

from __future__ import annotations

from typing import Any

from azure.core.exceptions import (
    HttpResponseError,
    ServiceRequestTimeoutError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.policies import SansIOHTTPPolicy

from scim.telemetry.context import note_storage_call

__all__ = ["StorageCallCounter", "unavailable_reason"]

_THROTTLED = frozenset({429, 503})
_TIMED_OUT = frozenset({408, 504})


class StorageCallCounter(SansIOHTTPPolicy[Any, Any]):
    """Counts each storage request in the count of the request being handled, if any."""

    def on_request(self, request: PipelineRequest[Any]) -> None:
        note_storage_call()


def unavailable_reason(exc: BaseException) -> str:
    """``throttled`` (storage answered 429 or 503), ``timeout`` (no answer in time: 408, 504, a
    read or connection timeout, the store's time budget), or ``unreachable`` (anything else:
    connection refused or reset, another 5xx), from ``exc`` and its causes."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, HttpResponseError) and current.status_code is not None:
            if current.status_code in _THROTTLED:
                return "throttled"
            if current.status_code in _TIMED_OUT:
                return "timeout"
            return "unreachable"
        if isinstance(current, (TimeoutError, ServiceRequestTimeoutError, ServiceResponseTimeoutError)):
            return "timeout"
        current = current.__cause__ or current.__context__
    return "unreachable"
