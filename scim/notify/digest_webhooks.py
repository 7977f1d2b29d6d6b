"""The failure digest's webhook section (issue 12): endpoints failing or disabled (pure, no I/O).

The notifier (:func:`scim.notify.notifier.webhook_issues`) picks the endpoints serving a tenant
that failed, or were disabled, in the digest's window; :func:`webhook_section` turns them into
cleaned, capped rows (:data:`MAX_WEBHOOK_ROWS`; the disabled ones first, then by the time they
started failing), which :mod:`scim.notify.digest` shows in both parts with
:func:`webhook_advice`. A URL is shown without its query (:func:`shown_url`: it may carry a key);
a signing secret is never read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from scim.notify.render import DETAIL_LIMIT, FIELD_LIMIT, clean_line, html_table, more, plural
from scim.webhooks import WebhookEndpoint

__all__ = ["MAX_WEBHOOK_ROWS", "WebhookRow", "WebhookSection", "shown_url", "webhook_advice", "webhook_section"]

MAX_WEBHOOK_ROWS = 20  # webhook endpoints listed


@dataclass(frozen=True)
class WebhookRow:
    """One endpoint as the digest shows it (every value cleaned)."""

    id: str
    url: str
    disabled: bool
    disabled_at: str | None
    disabled_reason: str | None
    failing_since: str | None
    last_error_at: str | None
    last_error: str | None

    def state(self) -> str:
        if self.disabled:
            at = f" {self.disabled_at}" if self.disabled_at else ""
            return f"DISABLED{at}: {self.disabled_reason or '(no reason given)'}"
        return f"failing since {self.failing_since or 'unknown'}"

    def error(self) -> str:
        if not self.last_error and not self.last_error_at:
            return "(none recorded)"
        return f"{self.last_error_at or 'unknown time'}: {self.last_error or '(no detail)'}"


@dataclass(frozen=True)
class WebhookSection:
    """The endpoints a digest reports: the rows shown, how many more, and the counts."""

    rows: tuple[WebhookRow, ...] = ()
    more: int = 0
    failing: int = 0
    disabled: int = 0

    def __bool__(self) -> bool:
        return bool(self.failing or self.disabled)

    def counts(self) -> str:
        """e.g. ``1 endpoint disabled, 2 endpoints failing``; "" if none."""
        counts = []
        if self.disabled:
            counts.append(f"{plural(self.disabled, 'endpoint')} disabled")
        if self.failing:
            counts.append(f"{plural(self.failing, 'endpoint')} failing")
        return ", ".join(counts)

    def text(self) -> list[str]:
        """The plain-text lines of the section (none when there is no endpoint)."""
        if not self.rows:
            return []
        lines = ["", "Webhook endpoints failing or disabled"]
        for w in self.rows:
            lines.append(f"  - {w.id} {w.url}")
            lines.append(f"    {w.state()}")
            if w.disabled and w.failing_since:
                lines.append(f"    failing since {w.failing_since}")
            lines.append(f"    last error {w.error()}")
        if self.more:
            lines.append(f"  {more(self.more)}")
        return lines

    def html(self) -> list[str]:
        """The HTML parts of the section (none when there is no endpoint)."""
        if not self.rows:
            return []
        rows = [(w.id, w.url, w.state(), w.failing_since or "", w.error()) for w in self.rows]
        parts = [
            "<h3>Webhook endpoints failing or disabled</h3>",
            html_table(("Endpoint", "URL", "State", "Failing since", "Last error"), rows),
        ]
        if self.more:
            parts.append(f"<p>{more(self.more)}</p>")
        return parts


def webhook_section(endpoints: Sequence[WebhookEndpoint]) -> WebhookSection:
    """The endpoints cleaned, the disabled ones first, then by the time they started failing."""
    rows = [
        WebhookRow(
            id=clean_line(e.id, FIELD_LIMIT),
            url=shown_url(e.url),
            disabled=not e.enabled,
            disabled_at=clean_line(e.disabled_at, FIELD_LIMIT) if e.disabled_at else None,
            disabled_reason=clean_line(e.disabled_reason, DETAIL_LIMIT) if e.disabled_reason else None,
            failing_since=clean_line(e.failing_since, FIELD_LIMIT) if e.failing_since else None,
            last_error_at=clean_line(e.last_error_at, FIELD_LIMIT) if e.last_error_at else None,
            last_error=clean_line(e.last_error, DETAIL_LIMIT) if e.last_error else None,
        )
        for e in endpoints
    ]
    rows.sort(key=lambda r: (not r.disabled, r.disabled_at or "", r.failing_since or "", r.id))
    disabled = sum(1 for e in endpoints if not e.enabled)
    return WebhookSection(
        rows=tuple(rows[:MAX_WEBHOOK_ROWS]),
        more=max(0, len(rows) - MAX_WEBHOOK_ROWS),
        failing=len(endpoints) - disabled,
        disabled=disabled,
    )


def webhook_advice(disabled: bool, retention_days: int | None) -> tuple[str, ...]:
    """What to do about failing or disabled webhook endpoints."""
    kept = f" for {plural(retention_days, 'day')} (EVENTS_RETENTION_DAYS)" if retention_days else ""
    advice = [
        "Webhook endpoints: `python -m scim.admin webhook list` shows each endpoint's state and last"
        " error. Fix the receiver (it must answer 2xx): a failing endpoint is retried for about three"
        " days, then disabled."
    ]
    if disabled:
        advice.append(
            "A disabled endpoint receives nothing until `python -m scim.admin webhook enable ID`"
            f" (once the receiver works): it resumes where it stopped, as events are kept{kept}."
        )
    return tuple(advice)


def shown_url(url: str) -> str:
    """A webhook URL as an email shows it: scheme, host, port and path, cleaned and capped.

    The query is replaced by ``?…``: it may carry a key (Azure Functions' ``?code=``, a
    receiver's token), and an email travels far. User info is never shown (the registry refuses
    it anyway), nor a fragment. ``python -m scim.admin webhook list`` shows the whole URL.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "(an unparsable URL)"
    if ":" in host:
        host = f"[{host}]"
    shown = f"{parts.scheme}://{host}{f':{port}' if port is not None else ''}{parts.path}"
    if parts.query:
        shown += "?…"
    return clean_line(shown, FIELD_LIMIT)
