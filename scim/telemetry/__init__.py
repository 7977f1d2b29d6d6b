"""Telemetry: OpenTelemetry traces and metrics to Application Insights, through the Azure Monitor
distro (``azure-monitor-opentelemetry``), on only when ``APPLICATIONINSIGHTS_CONNECTION_STRING``
is set (README "Operations: telemetry").

- :mod:`scim.telemetry.context`: what every log line and storage call of a request can see,
  at no cost and with or without telemetry: the request's correlation id (on every log record,
  as ``correlation_id``) and its count of storage round trips;
- :mod:`scim.telemetry.instruments`: the spans and the metrics (names and attributes: the
  contract with the alert rules and the workbook in ``infra/``); nothing but a ``None`` check
  while telemetry is off;
- :mod:`scim.telemetry.setup`: the configuration, done once, on the first invocation (not at
  import: the distro and the SDK cost about 0.5 s to load, past the cold-start budget);
- :mod:`scim.telemetry.storage`: the per-call policy that counts a request's storage round trips,
  and the Azure SDK span that keeps entity keys (userNames, emails) out of its URL attribute.

Importing this package, :mod:`~scim.telemetry.context` or :mod:`~scim.telemetry.instruments`
loads neither OpenTelemetry nor the Azure SDK (``tests/test_telemetry.py`` checks it).
"""
