"""The app's spans and metrics (README "Operations: telemetry"), in one place.

While telemetry is off (no ``APPLICATIONINSIGHTS_CONNECTION_STRING``: :mod:`scim.telemetry.setup`)
nothing is installed: every function here is a ``None`` check, and OpenTelemetry is not even
imported. :func:`install` makes the :class:`Instruments` from a tracer provider and a meter
provider: the global ones the Azure Monitor distro sets (:func:`scim.telemetry.setup.configure_once`),
or a test's own (the SDK's in-memory exporter and reader: no global state), and
:func:`uninstall` removes them.

**Metrics** (meter ``scim``; Log Analytics' ``AppMetrics`` table shows each as ``Name`` with its
attributes in ``Properties``: ``infra/``'s alert rules and workbook query these names):

=============================  =========  ======  ==================================================
name                           kind       unit    attributes
=============================  =========  ======  ==================================================
``scim.requests``              counter            ``scim.tenant``, ``scim.operation``,
                                                  ``http.response.status_code`` (int)
``scim.request.duration``      histogram  ms      the same
``scim.request.storage_calls`` histogram  {call}  ``scim.tenant``, ``scim.operation``
``scim.storage.unavailable``   counter            ``scim.reason``: ``throttled`` (429/503),
                                                  ``timeout``, ``unreachable`` (anything else)
``scim.log.dropped``           counter            ``scim.tenant``
``scim.webhook.deliveries``    counter            ``scim.tenant``, ``scim.outcome`` (``delivered``,
                                                  ``failed``)
``scim.webhook.backlog_age``   histogram  s       ``scim.tenant``
``scim.digest.emails``         counter            ``scim.outcome`` (``sent``, ``failed``)
=============================  =========  ======  ==================================================

``scim.tenant`` is a tenant's validated name, ``(invalid)`` for a name that is not one (never the
caller's text) and ``(unknown)`` for a valid name no tenant has (so that a stranger spraying
names cannot grow the number of series); ``scim.operation`` is the method and the endpoint
without ids (``POST /Users``, ``GET /Users/{id}``: :func:`scim.functions.http_adapter._route_kind`).

``scim.webhook.backlog_age`` is the age of the oldest event waiting for an endpoint of the tenant
(0 when none), recorded at each pass of a tenant's deliverer and by the delivery timer's check
of each tenant (every 10 s): a histogram, so that an instance that stopped delivering exports
nothing rather than its last value (Azure Monitor exports histograms with delta temporality, a
synchronous gauge cumulatively). Alert on its ``Max``.

**Spans** (tracer ``scim``): one per SCIM request (kind SERVER, named after its operation;
attributes ``scim.tenant``, ``scim.operation``, ``scim.correlation_id``, ``http.request.method``,
``http.route``, ``http.response.status_code``; status ERROR on a 5xx), a child of the Functions
host's invocation when the host passes its trace context; under it the Azure SDK's spans of the
storage calls (:mod:`scim.telemetry.storage`). ``scim.webhook.deliver`` (CLIENT: ``scim.tenant``,
``scim.outcome``, ``http.response.status_code``) for each delivery attempt,
``scim.email.send`` (CLIENT: ``scim.email.transport``, ``scim.outcome``) for each email,
``scim.notify`` for a digest timer run. No attribute holds a userName, an email, a token, a
URL, a resource id, a query or a body.

**Background work** (the provisioning log writer, webhook delivery) runs in
:func:`background_context`: a fresh context (no request's correlation id or storage count), in
which the Azure SDK's storage spans are dropped (their parent is a span that is not sampled), so
that a deliverer polling the feed does not fill Application Insights, nor use up the distro's
rate-limited sampling (5 traces a second by default) that requests need. Its own spans
(deliveries, emails) start new traces (:func:`span`).
"""

from __future__ import annotations

import contextvars
import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, TracerProvider
    from opentelemetry.util.types import AttributeValue

__all__ = [
    "CORRELATION_ID",
    "INVALID_TENANT",
    "METER_NAME",
    "OPERATION",
    "OUTCOME",
    "REASON",
    "STATUS_CODE",
    "TENANT",
    "UNKNOWN_TENANT",
    "Instruments",
    "active",
    "background_context",
    "digest_email",
    "install",
    "log_dropped",
    "quiet",
    "set_attributes",
    "span",
    "storage_unavailable",
    "uninstall",
    "webhook_backlog_age",
    "webhook_delivery",
]

METER_NAME = TRACER_NAME = "scim"
TENANT = "scim.tenant"
OPERATION = "scim.operation"
STATUS_CODE = "http.response.status_code"
CORRELATION_ID = "scim.correlation_id"
REASON = "scim.reason"
OUTCOME = "scim.outcome"
INVALID_TENANT = "(invalid)"
"""``scim.tenant`` of a request whose tenant name is not a valid one."""
UNKNOWN_TENANT = "(unknown)"
"""``scim.tenant`` of a request to a valid name that no tenant has."""

Kind = Literal["internal", "client", "server"]


class Instruments:
    """The tracer and the metric instruments, from the given providers."""

    def __init__(self, tracer_provider: TracerProvider, meter_provider: MeterProvider) -> None:
        from opentelemetry import context as otel_context
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._otel_context = otel_context
        self._trace = trace
        self._propagator = TraceContextTextMapPropagator()
        self._kinds = {
            "internal": trace.SpanKind.INTERNAL,
            "client": trace.SpanKind.CLIENT,
            "server": trace.SpanKind.SERVER,
        }
        self.tracer = tracer_provider.get_tracer(TRACER_NAME)
        meter = meter_provider.get_meter(METER_NAME)
        self.requests = meter.create_counter("scim.requests", description="SCIM requests answered")
        self.request_duration = meter.create_histogram(
            "scim.request.duration", unit="ms", description="Time to answer a SCIM request"
        )
        self.storage_calls = meter.create_histogram(
            "scim.request.storage_calls", unit="{call}", description="Storage round trips of a SCIM request"
        )
        self.storage_unavailable = meter.create_counter(
            "scim.storage.unavailable", description="Storage calls that failed (throttled, timed out, unreachable)"
        )
        self.log_dropped = meter.create_counter(
            "scim.log.dropped", description="Provisioning log entries the writer could not write"
        )
        self.webhook_deliveries = meter.create_counter(
            "scim.webhook.deliveries", description="Webhook delivery attempts, delivered or failed"
        )
        self.webhook_backlog_age = meter.create_histogram(
            "scim.webhook.backlog_age", unit="s", description="Age of the oldest event waiting for a webhook endpoint"
        )
        self.digest_emails = meter.create_counter("scim.digest.emails", description="Failure digests sent or failed")
        # The parent of background work's spans: valid, local and not sampled, so samplers
        # (parent-based, as the SDK's default and the distro's are) drop its children.
        quiet_span = trace.NonRecordingSpan(
            trace.SpanContext(
                trace_id=random.getrandbits(128) | 1,
                span_id=random.getrandbits(64) | 1,
                is_remote=False,
                trace_flags=trace.TraceFlags(trace.TraceFlags.DEFAULT),
            )
        )
        self._quiet_span = quiet_span
        self._quiet_context = trace.set_span_in_context(quiet_span, otel_context.Context())

    # ---- requests -----------------------------------------------------------------------------

    @contextmanager
    def request_span(
        self, operation: str, route: str, correlation_id: str, trace_parent: str | None, trace_state: str | None
    ) -> Iterator[Span]:
        """The span of one SCIM request, current while it is handled: a child of the host's
        invocation when ``trace_parent`` (W3C ``traceparent``, from the invocation's
        ``trace_context``) is given, else of the current context."""
        parent = None
        if trace_parent:
            carrier = {"traceparent": trace_parent}
            if trace_state:
                carrier["tracestate"] = trace_state
            parent = self._propagator.extract(carrier)
        method = operation.partition(" ")[0]
        attributes: dict[str, AttributeValue] = {
            OPERATION: operation,
            CORRELATION_ID: correlation_id,
            "http.request.method": method,
            "http.route": route,
        }
        with self.tracer.start_as_current_span(
            operation,
            context=parent,
            kind=self._trace.SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as current:
            yield current

    def request_done(
        self,
        current: Span | None,
        *,
        tenant: str,
        operation: str,
        status: int,
        elapsed_ms: float,
        storage_calls: int,
    ) -> None:
        """Record one answered request: its metrics, and its span's last attributes."""
        attributes: dict[str, AttributeValue] = {TENANT: tenant, OPERATION: operation, STATUS_CODE: status}
        self.requests.add(1, attributes)
        self.request_duration.record(elapsed_ms, attributes)
        self.storage_calls.record(storage_calls, {TENANT: tenant, OPERATION: operation})
        if current is not None and current.is_recording():
            current.set_attributes({TENANT: tenant, STATUS_CODE: status})
            if status >= 500:
                current.set_status(self._trace.Status(self._trace.StatusCode.ERROR))

    # ---- spans of other work ------------------------------------------------------------------

    @contextmanager
    def span(self, name: str, attributes: Mapping[str, AttributeValue] | None, kind: Kind) -> Iterator[Span]:
        """A span current for the block: a child of the current span, or the root of a new
        trace in background work (whose current span is the quiet one)."""
        context = self._otel_context.Context() if self._trace.get_current_span() is self._quiet_span else None
        with self.tracer.start_as_current_span(
            name,
            context=context,
            kind=self._kinds[kind],
            attributes=dict(attributes or {}),
            record_exception=False,
            set_status_on_exception=False,
        ) as current:
            yield current

    @contextmanager
    def quiet(self) -> Iterator[None]:
        """Within the block, spans (the Azure SDK's included) are not sampled, but for
        :meth:`span`'s, which start new traces."""
        token = self._otel_context.attach(self._quiet_context)
        try:
            yield
        finally:
            self._otel_context.detach(token)

    def attach_quiet(self) -> None:
        """Make the current context quiet for good (in a fresh context of background work)."""
        self._otel_context.attach(self._quiet_context)

    def failed(self, current: Span) -> None:
        """Mark ``current`` failed (status ERROR)."""
        if current.is_recording():
            current.set_status(self._trace.Status(self._trace.StatusCode.ERROR))


_active: Instruments | None = None


def active() -> Instruments | None:
    """The installed instruments, or None while telemetry is off."""
    return _active


def install(
    *, tracer_provider: TracerProvider | None = None, meter_provider: MeterProvider | None = None
) -> Instruments:
    """Make the instruments from these providers (default: the global ones) and use them from now on."""
    global _active
    from opentelemetry import metrics, trace

    _active = Instruments(
        tracer_provider if tracer_provider is not None else trace.get_tracer_provider(),
        meter_provider if meter_provider is not None else metrics.get_meter_provider(),
    )
    return _active


def uninstall() -> None:
    """Stop recording (tests): back to telemetry off."""
    global _active
    _active = None


# ---- what the rest of the app calls (each a None check while telemetry is off) -------------------


def storage_unavailable(reason: str) -> None:
    """A storage call failed: ``reason`` is ``throttled``, ``timeout`` or ``unreachable``."""
    if _active is not None:
        _active.storage_unavailable.add(1, {REASON: reason})


def log_dropped(tenant: str, entries: int) -> None:
    """The provisioning log writer dropped ``entries`` entries of ``tenant``."""
    if _active is not None and entries > 0:
        _active.log_dropped.add(entries, {TENANT: tenant})


def webhook_delivery(tenant: str, delivered: bool) -> None:
    """One delivery attempt of an event of ``tenant`` to an endpoint."""
    if _active is not None:
        _active.webhook_deliveries.add(1, {TENANT: tenant, OUTCOME: "delivered" if delivered else "failed"})


def webhook_backlog_age(tenant: str, seconds: float) -> None:
    """The oldest event of ``tenant`` waiting for an endpoint is ``seconds`` old (0: none waits)."""
    if _active is not None:
        _active.webhook_backlog_age.record(max(0.0, seconds), {TENANT: tenant})


def digest_email(sent: bool) -> None:
    """A failure digest was sent, or its send failed."""
    if _active is not None:
        _active.digest_emails.add(1, {OUTCOME: "sent" if sent else "failed"})


@contextmanager
def span(
    name: str, attributes: Mapping[str, AttributeValue] | None = None, kind: Kind = "internal"
) -> Iterator[Span | None]:
    """:meth:`Instruments.span`, or nothing (None) while telemetry is off."""
    if _active is None:
        yield None
        return
    with _active.span(name, attributes, kind) as current:
        yield current


def set_attributes(current: Span | None, attributes: Mapping[str, AttributeValue], *, failed: bool = False) -> None:
    """Add ``attributes`` to a span of :func:`span` (nothing for None); ``failed``: status ERROR."""
    if current is None or not current.is_recording():
        return
    current.set_attributes(dict(attributes))
    if failed and _active is not None:
        _active.failed(current)


@contextmanager
def quiet() -> Iterator[None]:
    """:meth:`Instruments.quiet`, or nothing while telemetry is off."""
    if _active is None:
        yield
        return
    with _active.quiet():
        yield


def background_context() -> contextvars.Context:
    """A fresh context for a background task (``loop.create_task(..., context=...)``): no
    request's correlation id, storage count or storage deadline, and quiet spans."""
    context = contextvars.Context()
    if _active is not None:
        context.run(_active.attach_quiet)
    return context
