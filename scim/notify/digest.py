"""The failure digest: one email summing up a tenant's provisioning failures (pure, no I/O).

A timer emails each tenant's operators one digest of the failures since the last email
(docs/ENTRA.md §6: "our service emails the failures *it* sees"). The digest says what failed
(counts by operation and status), why (the most frequent errors, with their detail), to
whom (the affected resources) and what to do.

It raises an alert on the signals Entra quarantines a job for (docs/ENTRA.md §6):

- more than ``alert_ratio`` (40 %) of the requests failed, once there are at least
  ``alert_min_requests`` requests (Entra considers the ratio from 5,000 failures; a digest
  window is much smaller, so the floor only keeps a handful of requests from alerting);
- Entra's own credential failing: bad credentials quarantine the job at once. Anyone who
  knows a Tenant URL can send requests with a wrong token, so a 401 alone is no evidence;
  the caller (:mod:`scim.notify.notifier`) decides from the log that the tenant's requests
  went from succeeding to being refused (``credential_alert``), and rate-limits it.

It also lists the tenant's webhook endpoints (issue 12) that the caller found failing or
disabled in the window (:func:`scim.notify.notifier.webhook_issues` picks them): their id, URL
(:func:`shown_url`: without its query, which may carry a key), since when they fail, their last
error or why they were disabled, and what to do (the section: :mod:`scim.notify.digest_webhooks`).
And the Secret Token expiry warnings due (issue 13; the rule and the section:
:mod:`scim.notify.token_expiry`): which token, when it expires, its last use, how to rotate.
Such endpoints or warnings alone make a digest.

Every value that comes from data (tenant, operations, ids, subjects, details, URLs, errors) is
cleaned (control characters and line breaks collapsed, length capped: :mod:`scim.notify.render`)
and HTML-escaped in the HTML part. Lists are capped, so a burst of 10,000 failures still yields
a small email.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from scim.notify.digest_webhooks import MAX_WEBHOOK_ROWS, WebhookSection, shown_url, webhook_advice, webhook_section
from scim.notify.render import DETAIL_LIMIT, FIELD_LIMIT, clean_line, esc, html_table, more, plural
from scim.notify.token_expiry import TokenWarning, subject_phrase, warnings_html, warnings_text
from scim.webhooks import WebhookEndpoint

__all__ = [
    "DETAIL_LIMIT",
    "FIELD_LIMIT",
    "MAX_WEBHOOK_ROWS",
    "Digest",
    "Failure",
    "build_digest",
    "clean_line",
    "shown_url",
]

MAX_OPERATION_ROWS = 50  # rows of the "by operation and status" table


@dataclass(frozen=True)
class Failure:
    """One failed SCIM request, as recorded in the provisioning log."""

    time: str  # RFC 3339 UTC, e.g. "2026-11-26T10:00:00.123Z"
    operation: str  # e.g. "POST /Users", "PATCH /Groups/{id}"
    status: int  # HTTP status (>= 400)
    correlation_id: str
    resource_type: str | None = None  # "User" | "Group"
    resource_id: str | None = None
    scim_type: str | None = None
    detail: str | None = None
    subject: str | None = None  # e.g. the userName of a failed POST, when known


@dataclass(frozen=True)
class Digest:
    """One email: a one-line subject, a plain-text part and an HTML part."""

    subject: str
    text: str
    html: str
    alert: bool
    failures: int
    webhooks: int = 0  # webhook endpoints reported (failing or disabled)
    token_warnings: int = 0  # Secret Token expiry warnings carried


# -- the summary: what both parts show, cleaned and capped ---------------------------------


@dataclass(frozen=True)
class _OperationRow:
    count: int
    operation: str
    status: int


@dataclass(frozen=True)
class _ErrorGroup:
    count: int
    status: int
    scim_type: str | None
    detail: str | None
    correlation_id: str  # of the first failure of the group, to look it up in the logs


@dataclass(frozen=True)
class _Resource:
    label: str
    count: int
    last_status: int


@dataclass(frozen=True)
class _Summary:
    tenant: str
    tenant_url: str | None
    window_start: str
    window_end: str
    first: str | None
    last: str | None
    failures: int
    requests: int
    unauthenticated: int
    alerts: tuple[str, ...]
    operations: tuple[_OperationRow, ...]
    more_operations: int
    errors: tuple[_ErrorGroup, ...]
    more_errors: int
    resources: tuple[_Resource, ...]
    more_resources: int
    webhooks: WebhookSection
    tokens: tuple[TokenWarning, ...]
    advice: tuple[str, ...]

    @property
    def provisioning(self) -> bool:
        """Whether the provisioning part is shown: there is something to say about requests, or
        nothing else to say."""
        return _provisioning(self.failures, self.unauthenticated, bool(self.webhooks), bool(self.tokens))


def _provisioning(failures: int, unauthenticated: int, webhooks: bool, tokens: bool) -> bool:
    return bool(failures or unauthenticated or not (webhooks or tokens))


def build_digest(
    tenant: str,
    failures: Sequence[Failure],
    total_requests: int,
    *,
    window_start: str,
    window_end: str,
    tenant_url: str | None = None,
    alert_ratio: float = 0.4,
    alert_min_requests: int = 20,
    max_errors: int = 10,
    max_resources: int = 20,
    unauthenticated: int = 0,
    credential_alert: bool = False,
    webhooks: Sequence[WebhookEndpoint] = (),
    events_retention_days: int | None = None,
    token_warnings: Sequence[TokenWarning] = (),
) -> Digest:
    """The digest of ``failures`` among ``total_requests`` requests of ``tenant`` in a window.

    ``total_requests`` counts every authenticated request of the window, failed or not; it
    is raised to ``len(failures)`` if smaller (a failure is a request). ``unauthenticated``
    counts the requests refused for a missing or wrong token (401) in the window;
    ``credential_alert`` says they are evidence that Entra's own token fails. ``webhooks``:
    the endpoints serving the tenant to report (failing, or disabled, in the window; their
    secrets are never read); ``events_retention_days`` (``EVENTS_RETENTION_DAYS``) says how
    long a disabled endpoint's events wait for it; ``token_warnings``: the Secret Token expiry
    warnings due (:func:`scim.notify.token_expiry.due_warnings`).
    """
    summary = _summarize(
        tenant,
        failures,
        max(total_requests, len(failures)),
        window_start=window_start,
        window_end=window_end,
        tenant_url=tenant_url,
        alert_ratio=alert_ratio,
        alert_min_requests=alert_min_requests,
        max_errors=max_errors,
        max_resources=max_resources,
        unauthenticated=unauthenticated,
        credential_alert=credential_alert,
        webhooks=webhooks,
        events_retention_days=events_retention_days,
        tokens=token_warnings,
    )
    return Digest(
        subject=_subject(summary),
        text=_render_text(summary),
        html=_render_html(summary),
        alert=bool(summary.alerts),
        failures=summary.failures,
        webhooks=len(webhooks),
        token_warnings=len(summary.tokens),
    )


def _summarize(
    tenant: str,
    failures: Sequence[Failure],
    requests: int,
    *,
    window_start: str,
    window_end: str,
    tenant_url: str | None,
    alert_ratio: float,
    alert_min_requests: int,
    max_errors: int,
    max_resources: int,
    unauthenticated: int,
    credential_alert: bool,
    webhooks: Sequence[WebhookEndpoint],
    events_retention_days: int | None,
    tokens: Sequence[TokenWarning],
) -> _Summary:
    first, last = _first_and_last(f.time for f in failures)
    operations = _operation_rows(failures)
    errors = _error_groups(failures)
    resources = _resources(failures)
    hooks = webhook_section(webhooks)
    tenant = clean_line(tenant, FIELD_LIMIT)
    advice: tuple[str, ...] = ()
    if _provisioning(len(failures), unauthenticated, bool(webhooks), bool(tokens)):
        advice = _advice(tenant, {f.status for f in failures} | ({401} if credential_alert else set()))
    return _Summary(
        tenant=tenant,
        tenant_url=clean_line(tenant_url, FIELD_LIMIT) if tenant_url else None,
        window_start=clean_line(window_start, FIELD_LIMIT),
        window_end=clean_line(window_end, FIELD_LIMIT),
        first=first,
        last=last,
        failures=len(failures),
        requests=requests,
        unauthenticated=unauthenticated,
        alerts=_alerts(failures, requests, alert_ratio, alert_min_requests, unauthenticated if credential_alert else 0),
        operations=tuple(operations[:MAX_OPERATION_ROWS]),
        more_operations=max(0, len(operations) - MAX_OPERATION_ROWS),
        errors=tuple(errors[:max_errors]),
        more_errors=max(0, len(errors) - max_errors),
        resources=tuple(resources[:max_resources]),
        more_resources=max(0, len(resources) - max_resources),
        webhooks=hooks,
        tokens=tuple(sorted(tokens, key=lambda w: (w.ends, w.token_id))),
        advice=advice + (webhook_advice(bool(hooks.disabled), events_retention_days) if webhooks else ()),
    )


def _first_and_last(times: Iterable[str]) -> tuple[str | None, str | None]:
    """The earliest and latest of RFC 3339 ``times``, as given; unparsable ones are skipped."""
    first: tuple[datetime, str] | None = None
    last: tuple[datetime, str] | None = None
    for raw in times:
        try:
            moment = datetime.fromisoformat(raw)
        except (TypeError, ValueError):
            continue
        if moment.tzinfo is None:
            continue  # naive times can't be compared with aware ones
        if first is None or moment < first[0]:
            first = (moment, raw)
        if last is None or moment > last[0]:
            last = (moment, raw)
    return (
        clean_line(first[1], FIELD_LIMIT) if first else None,
        clean_line(last[1], FIELD_LIMIT) if last else None,
    )


def _operation_rows(failures: Sequence[Failure]) -> list[_OperationRow]:
    """Failures counted by (operation, status), most frequent first."""
    counts = Counter((f.operation, f.status) for f in failures)
    rows = [_OperationRow(n, clean_line(op, FIELD_LIMIT), status) for (op, status), n in counts.items()]
    rows.sort(key=lambda r: (-r.count, r.operation, r.status))
    return rows


_ID = re.compile(r"\b[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\b")


def _generic(detail: str) -> str:
    """A detail with resource ids replaced by ``{id}``, so "User <id> not found." groups as one error."""
    return _ID.sub("{id}", detail)


def _error_groups(failures: Sequence[Failure]) -> list[_ErrorGroup]:
    """Failures grouped by status, scimType and (truncated, id-free) detail, most frequent first."""
    raw: Counter[tuple[int, str | None, str | None]] = Counter()
    example: dict[tuple[int, str | None, str | None], str] = {}
    for f in failures:  # count the raw values first: each distinct one is cleaned once
        key = (f.status, f.scim_type, f.detail)
        raw[key] += 1
        example.setdefault(key, f.correlation_id)
    counts: Counter[tuple[int, str | None, str | None]] = Counter()
    first: dict[tuple[int, str | None, str | None], str] = {}
    for (status, scim_type, detail), n in raw.items():
        key = (
            status,
            clean_line(scim_type, FIELD_LIMIT) if scim_type else None,
            clean_line(_generic(detail), DETAIL_LIMIT) if detail else None,
        )
        counts[key] += n
        first.setdefault(key, example[(status, scim_type, detail)])
    groups = [
        _ErrorGroup(n, status, scim_type, detail, clean_line(first[(status, scim_type, detail)], FIELD_LIMIT))
        for (status, scim_type, detail), n in counts.items()
    ]
    groups.sort(key=lambda g: (-g.count, g.status, g.scim_type or "", g.detail or ""))
    return groups


def _resources(failures: Sequence[Failure]) -> list[_Resource]:
    """The affected resources (by id, else by subject), most failures first, then first seen."""
    counts: dict[tuple[str | None, str], int] = {}
    subjects: dict[tuple[str | None, str], str] = {}
    statuses: dict[tuple[str | None, str], int] = {}
    for f in failures:
        name = f.resource_id or f.subject
        if not name:
            continue
        key = (f.resource_type, name)
        counts[key] = counts.get(key, 0) + 1
        statuses[key] = f.status
        if f.resource_id and f.subject:
            subjects.setdefault(key, f.subject)
    order = sorted(counts, key=lambda k: -counts[k])  # stable: ties keep first-seen order
    return [_Resource(_resource_label(k[0], k[1], subjects.get(k)), counts[k], statuses[k]) for k in order]


def _resource_label(resource_type: str | None, name: str, subject: str | None) -> str:
    label = (
        f"{clean_line(resource_type, 20)} {clean_line(name, FIELD_LIMIT)}"
        if resource_type
        else clean_line(name, FIELD_LIMIT)
    )
    return f"{label} ({clean_line(subject, FIELD_LIMIT)})" if subject else label


def _alerts(
    failures: Sequence[Failure], requests: int, ratio: float, min_requests: int, refused: int
) -> tuple[str, ...]:
    """Why Entra is about to quarantine the job, if it is (docs/ENTRA.md §6); empty when not.

    ``refused``: requests refused for their token, counted only when they are evidence that
    Entra's own token fails (see the module docstring).
    """
    alerts = []
    if requests >= min_requests and requests and len(failures) / requests > ratio:
        threshold = f"{ratio * 100:g} %"
        share = _percent(len(failures) / requests * 100, above=ratio * 100)
        alerts.append(f"{share} of {requests:,} requests failed (Entra quarantines a job above {threshold}).")
    if refused:
        alerts.append(
            f"{plural(refused, 'request')} refused for a wrong or missing token (401) and none accepted,"
            " after requests were accepted in the hour before: Entra's Secret Token no longer matches,"
            " and Entra quarantines the job at once on bad credentials."
        )
    return tuple(alerts)


def _percent(value: float, *, above: float | None = None) -> str:
    """``value`` % to one decimal ("62 %", "3.6 %"), or more (up to 3) to stay visibly above ``above``."""
    text = ""
    for decimals in range(1, 4):
        text = f"{value:.{decimals}f}".rstrip("0").rstrip(".")
        if above is None or float(text) > above:
            break
    return f"{text} %"


def _advice(tenant: str, statuses: set[int]) -> tuple[str, ...]:
    """What the operators should do, given the statuses seen."""
    advice = [
        "Open the provisioning logs of the enterprise application in the Microsoft Entra admin center;"
        " look up the correlation ids above in this service's logs."
    ]
    if 401 in statuses:
        advice.append(
            "401: the Secret Token in Entra no longer matches. Regenerate it with"
            f" `python -m scim.admin token regenerate {tenant}`, paste it into the Secret Token field"
            " in Entra and test the connection."
        )
    if 404 in statuses:
        advice.append(
            "404: Entra referred to an object this service doesn't have; Entra may treat this as a"
            " SCIM-compliance error and quarantine the job."
        )
    if 409 in statuses:
        advice.append("409: another object already holds a unique value (userName, displayName); remove the duplicate.")
    if any(s >= 500 for s in statuses):
        advice.append("5xx: the service failed; its logs hold the errors under the correlation ids above.")
    return tuple(advice)


# -- rendering ------------------------------------------------------------------------------


def _subject(s: _Summary) -> str:
    prefix = "ALERT: " if s.alerts else ""
    hooks = s.webhooks.counts()
    tokens = f"; {subject_phrase(s.tokens)}" if s.tokens else ""
    if not s.provisioning:
        if not hooks:
            return f"SCIM tenant {s.tenant}: {subject_phrase(s.tokens)}"
        return f"SCIM webhooks: {hooks} for tenant {s.tenant}{tokens}"
    extra = (f"; webhooks: {hooks}" if hooks else "") + tokens
    if not s.failures and s.unauthenticated:
        return f"{prefix}SCIM provisioning: {plural(s.unauthenticated, 'request')} refused (wrong or missing token) for tenant {s.tenant}{extra}"
    return f"{prefix}SCIM provisioning: {plural(s.failures, 'failure')} for tenant {s.tenant}{extra}"


def _render_text(s: _Summary) -> str:
    lines: list[str] = [f"ALERT: {a}" for a in s.alerts]
    if lines:
        lines.append("")
    lines.append(f"{_title(s)} for tenant {s.tenant}")
    if s.tenant_url:
        lines.append(f"Tenant URL: {s.tenant_url}")
    if s.provisioning or s.webhooks:
        lines += ["", f"Window:   {s.window_start} to {s.window_end}"]
    if s.provisioning:
        lines += _provisioning_text(s)
    lines += s.webhooks.text()
    lines += warnings_text(s.tokens, s.tenant)
    if s.advice:
        lines += ["", "What to do"]
        lines += [f"  - {a}" for a in s.advice]
    return "\n".join(lines) + "\n"


def _title(s: _Summary) -> str:
    if s.provisioning:
        return "SCIM provisioning failures"
    if s.webhooks:
        return "SCIM webhook endpoints failing or disabled"
    return "SCIM Secret Token expiring"


def _provisioning_text(s: _Summary) -> list[str]:
    lines = [
        f"Failures: first {s.first or 'unknown'}, last {s.last or 'unknown'}",
        f"Total:    {_totals(s)}",
    ]
    if s.unauthenticated:
        lines.append(f"Refused:  {_refused(s)}")
    lines += ["", "By operation and status", f"  {'Count':>7}  {'Status':>6}  Operation"]
    lines += [f"  {r.count:>7,}  {r.status:>6}  {r.operation}" for r in s.operations]
    if s.more_operations:
        lines.append(f"  {more(s.more_operations)}")
    lines += ["", "Most frequent errors"]
    for e in s.errors:
        lines.append(f"  {e.count:>7,} x {_error_title(e)}: {e.detail or '(no detail)'}")
        lines.append(f"            e.g. correlation id {e.correlation_id}")
    if s.more_errors:
        lines.append(f"  {more(s.more_errors)} kinds of error")
    lines += ["", "Affected resources"]
    lines += [f"  - {r.label}: {plural(r.count, 'failure')}, last {r.last_status}" for r in s.resources]
    if not s.resources:
        lines.append("  (none identified)")
    if s.more_resources:
        lines.append(f"  {more(s.more_resources)}")
    return lines


def _totals(s: _Summary) -> str:
    share = f" ({_percent(s.failures / s.requests * 100)})" if s.requests else ""
    return f"{plural(s.failures, 'failure')} of {plural(s.requests, 'request')}{share}"


def _refused(s: _Summary) -> str:
    return f"{plural(s.unauthenticated, 'request')} with a missing or wrong token (401, not in the totals)"


def _error_title(e: _ErrorGroup) -> str:
    return f"{e.status} {e.scim_type}" if e.scim_type else str(e.status)


def _render_html(s: _Summary) -> str:
    parts = ['<!DOCTYPE html><html><body style="font-family:sans-serif">']
    parts += [f'<p style="color:#a4262c"><strong>ALERT:</strong> {esc(a)}</p>' for a in s.alerts]
    parts.append(f"<h2>{esc(_title(s))} for tenant {esc(s.tenant)}</h2>")
    if s.tenant_url:
        parts.append(f"<p>Tenant URL: <code>{esc(s.tenant_url)}</code></p>")
    if s.provisioning:
        parts += _provisioning_html(s)
    elif s.webhooks:
        parts.append(html_table(None, [("Window", f"{s.window_start} to {s.window_end}")]))
    parts += s.webhooks.html()
    parts += warnings_html(s.tokens, s.tenant)
    if s.advice:
        parts.append("<h3>What to do</h3>")
        parts.append("<ul>" + "".join(f"<li>{esc(a)}</li>" for a in s.advice) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _provisioning_html(s: _Summary) -> list[str]:
    parts = [
        html_table(
            None,
            [
                ("Window", f"{s.window_start} to {s.window_end}"),
                ("Failures", f"first {s.first or 'unknown'}, last {s.last or 'unknown'}"),
                ("Total", _totals(s)),
                *([("Refused", _refused(s))] if s.unauthenticated else []),
            ],
        )
    ]
    parts.append("<h3>By operation and status</h3>")
    parts.append(
        html_table(("Count", "Status", "Operation"), [(f"{r.count:,}", r.status, r.operation) for r in s.operations])
    )
    if s.more_operations:
        parts.append(f"<p>{more(s.more_operations)}</p>")
    parts.append("<h3>Most frequent errors</h3>")
    rows = [(f"{e.count:,}", _error_title(e), e.detail or "(no detail)", e.correlation_id) for e in s.errors]
    parts.append(html_table(("Count", "Error", "Detail", "e.g. correlation id"), rows))
    if s.more_errors:
        parts.append(f"<p>{more(s.more_errors)} kinds of error</p>")
    parts.append("<h3>Affected resources</h3>")
    items = "".join(f"<li>{esc(r.label)}: {plural(r.count, 'failure')}, last {r.last_status}</li>" for r in s.resources)
    parts.append(f"<ul>{items}</ul>" if items else "<p>(none identified)</p>")
    if s.more_resources:
        parts.append(f"<p>{more(s.more_resources)}</p>")
    return parts
