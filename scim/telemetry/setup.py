"""Turning telemetry on: the Azure Monitor OpenTelemetry distro, configured once, on first use.

:func:`configure_once` runs on the first invocation (:func:`scim.functions.runtime.get_runtime`),
not when ``function_app`` is imported: loading the distro and the OpenTelemetry SDK and
configuring them takes about 0.5 s, which the cold-start budget (importing ``function_app`` in
under 0.5 s, ``bench``) cannot hold. Without ``APPLICATIONINSIGHTS_CONNECTION_STRING`` it does
nothing but read that setting: no provider, no exporter thread, and the OpenTelemetry API is not
even imported (:mod:`scim.telemetry.instruments` is then a ``None`` check). A configuration that
fails is logged and leaves telemetry off: it never fails a request.

What the configuration is, and why (checked in the sources named):

- ``configure_azure_monitor(connection_string=..., credential=..., logger_name="scim", ...)``
  (azure-monitor-opentelemetry 1.8, ``azure/monitor/opentelemetry/_configure.py``; README at
  github.com/Azure/azure-sdk-for-python, ``sdk/monitor/azure-monitor-opentelemetry``) sets the
  global tracer, meter and logger providers with Azure Monitor exporters (a batch span
  processor, a metric reader every 60 s, a batch log processor: background threads), and, for
  its ``azure_sdk`` instrumentation, ``azure.core.settings.tracing_implementation`` so that every
  Azure SDK call makes spans under the current one (our storage child spans). Its other
  instrumentations (django, fastapi, flask, httpx, psycopg2, requests, urllib, urllib3) are
  turned off: the app uses none of them, and they would trace the exporter's and the managed
  identity's own HTTP calls. Live metrics are off (a poll every few seconds from each instance
  of a serverless app). Sampling is the distro's default: rate-limited, 5 traces a second per
  process (``OTEL_TRACES_SAMPLER``/``OTEL_TRACES_SAMPLER_ARG`` change it); metrics are never sampled.
- ``logger_name="scim"``: the app's log lines (loggers ``scim.*``) go to Application Insights
  with the trace context of the request (``operation_Id``) and its correlation id
  (``customDimensions.correlation_id``, :mod:`scim.telemetry.context`); the Azure SDK's and the
  host's are left to the host.
- Identity-based ingestion: ``infra/`` sets ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING`` to
  ``ClientId=<managed identity client id>;Authorization=AAD``. The credential is that
  ``azure.identity.ManagedIdentityCredential(client_id=...)`` (synchronous: the exporters send
  from their own threads), passed as ``credential=``, one for all three exporters. (The exporter
  would build the same from that setting by itself: azure-monitor-opentelemetry-exporter,
  ``export/_base.py``, ``_get_authentication_credential``.)
- ``OTEL_EXPERIMENTAL_RESOURCE_DETECTORS`` defaults to ``azure_functions`` (what the Functions
  Python worker sets before it configures the distro, ``azure_functions_worker/otel.py``): the
  distro's default includes the VM detector, an HTTP call to the instance metadata service.
- The Functions Python worker can configure the distro itself: with the app setting
  ``PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true`` it calls ``configure_azure_monitor()`` at
  worker start (connection string from the setting, logger from
  ``PYTHON_APPLICATIONINSIGHTS_LOGGER_NAME``, no ``credential``), and before each async
  invocation attaches the host's trace context (``context.trace_context``);
  ``PYTHON_ENABLE_OPENTELEMETRY=true`` only attaches the context
  (github.com/Azure/azure-functions-python-worker, ``azure_functions_worker/otel.py``
  ``initialize_azure_monitor``/``configure_opentelemetry``, ``dispatcher.py``; its issue 1881:
  that setting alone crashes every async invocation on the Python 3.13 worker). Neither is
  needed and ``infra/`` should set neither: the worker's configuration happens at start-up
  (the cold start pays it) and the app links its request spans to the host's invocation itself,
  from the invocation's ``context.trace_context`` (the documented pattern: ``extract`` of
  ``{"traceparent": trace_parent, "tracestate": trace_state}`` as the span's parent;
  learn.microsoft.com, "Use OpenTelemetry with Azure Functions", Python). Should
  ``PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY`` be true all the same, the app does not
  configure the distro a second time (its providers are set once per process): it only adds its
  instruments to the worker's providers.
- Keeping entity keys out of storage spans: azure-core's span of an HTTP request carries its URL
  (``http.url``/``url.full``), whose query values it redacts but not its path, and a Table
  entity's path holds its PartitionKey and RowKey, where our index rows keep userNames and
  emails. :func:`table_url` cuts the URL to the scheme, host and table; :class:`ScrubbedSpan`
  (azure-core's ``OpenTelemetrySpan`` with that one change) replaces the distro's span type.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, MutableMapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from scim.telemetry import instruments

__all__ = [
    "AUTHENTICATION_SETTING",
    "CONNECTION_SETTING",
    "LOGGER_NAME",
    "configure_once",
    "managed_identity_client_id",
    "table_url",
]

logger = logging.getLogger("scim.telemetry")

CONNECTION_SETTING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
"""Telemetry is on when this app setting is present (and not empty)."""
AUTHENTICATION_SETTING = "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"
"""``ClientId=<client id>;Authorization=AAD``: ingestion as that managed identity."""
WORKER_SETTING = "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"
"""When true, the Functions Python worker has configured the distro itself."""
LOGGER_NAME = "scim"
"""The logger whose records (and its children's) the distro exports."""
_DISABLED_INSTRUMENTATIONS = (
    "django",
    "fastapi",
    "flask",
    "httpx",
    "httpx2",
    "psycopg2",
    "requests",
    "urllib",
    "urllib3",
)
_URL_KEYS = frozenset({"http.url", "url.full"})
_TABLE_PATH = re.compile(r"[/A-Za-z0-9$]*")

_checked = False


def configure_once(environ: MutableMapping[str, str] | None = None) -> bool:
    """Configure telemetry if ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set, the first time
    only; whether telemetry is on."""
    global _checked
    if _checked:
        return instruments.active() is not None
    _checked = True
    env = os.environ if environ is None else environ
    connection = (env.get(CONNECTION_SETTING) or "").strip()
    if not connection:
        return False
    try:
        _configure(connection, env)
    except Exception as exc:  # noqa: BLE001 - telemetry must never stop the app
        instruments.uninstall()
        logger.warning("telemetry is off: configuring Azure Monitor failed (%s)", type(exc).__name__)
        return False
    return True


def _configure(connection: str, env: MutableMapping[str, str]) -> None:
    if (env.get(WORKER_SETTING) or "").strip().lower() not in ("true", "1"):
        from azure.monitor.opentelemetry import configure_azure_monitor

        env.setdefault("OTEL_EXPERIMENTAL_RESOURCE_DETECTORS", "azure_functions")
        options: dict[str, Any] = {
            "connection_string": connection,
            "logger_name": LOGGER_NAME,
            "enable_live_metrics": False,
            "instrumentation_options": {name: {"enabled": False} for name in _DISABLED_INSTRUMENTATIONS},
        }
        client_id = managed_identity_client_id(env.get(AUTHENTICATION_SETTING))
        if client_id is not None:
            from azure.identity import ManagedIdentityCredential

            options["credential"] = ManagedIdentityCredential(client_id=client_id or None)
        configure_azure_monitor(**options)
    _scrub_storage_spans()
    instruments.install()


def managed_identity_client_id(authentication: str | None) -> str | None:
    """The managed identity's client id of ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING``
    (``ClientId=...;Authorization=AAD``, keys in any case and order); ``""`` for AAD without a
    client id (the system-assigned identity); None when not AAD (or unset)."""
    if not authentication:
        return None
    pairs: Mapping[str, str] = {
        key.strip().lower(): value.strip()
        for key, _, value in (part.partition("=") for part in authentication.split(";") if part.strip())
    }
    if pairs.get("authorization", "").lower() != "aad":
        return None
    return pairs.get("clientid", "")


def table_url(url: str) -> str:
    """``url`` of a Table storage request without what follows the table's name: no entity
    keys (``(PartitionKey='...',RowKey='...')``), no query; ``/`` for a path of another shape."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        if parts.port is not None:
            host = f"{host}:{parts.port}"
    except ValueError:
        return ""
    path = parts.path.split("(", 1)[0]
    if not _TABLE_PATH.fullmatch(path):
        path = "/"
    return urlunsplit((parts.scheme, host, path, "", ""))


def _scrub_storage_spans() -> None:
    """Make the Azure SDK's spans (when the distro turned them on) :class:`ScrubbedSpan`\\ s."""
    from azure.core.settings import settings

    if settings.tracing_implementation() is not None:
        settings.tracing_implementation = scrubbed_span_type()


def scrubbed_span_type() -> type[Any]:
    """azure-core's ``OpenTelemetrySpan`` whose URL attributes are :func:`table_url`\\ s."""
    global _scrubbed
    if _scrubbed is None:
        from azure.core.tracing.ext.opentelemetry_span import OpenTelemetrySpan

        class ScrubbedSpan(OpenTelemetrySpan):
            """An Azure SDK span whose URL keeps no entity key (see the module docstring)."""

            def add_attribute(self, key: str, value: str | int) -> None:
                if key in _URL_KEYS and isinstance(value, str):
                    value = table_url(value)
                super().add_attribute(key, value)

        _scrubbed = ScrubbedSpan
    return _scrubbed


_scrubbed: type[Any] | None = None
