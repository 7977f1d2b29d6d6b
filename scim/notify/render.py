"""Text and HTML helpers shared by the operators' emails (pure, no I/O).

Every value an email shows that comes from data is first made one printable line of bounded
length (:func:`clean_line`), and HTML-escaped in the HTML part (:func:`esc`, :func:`html_table`).
Used by the failure digest (:mod:`scim.notify.digest` and its sections
:mod:`scim.notify.digest_webhooks` and :mod:`scim.notify.token_expiry`) and the webhook alert
(:mod:`scim.notify.webhook_alerts`).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

__all__ = ["DETAIL_LIMIT", "FIELD_LIMIT", "clean_line", "esc", "html_table", "more", "plural"]

DETAIL_LIMIT = 300  # characters of an error detail shown
FIELD_LIMIT = 200  # characters of a tenant, operation, id, subject or scimType shown


def clean_line(value: object, limit: int) -> str:
    """``value`` as one line of at most ``limit`` characters (whitespace and controls collapsed)."""
    text = str(value)[: limit * 4]
    if not text.isprintable():  # the slow path, for line breaks and control characters only
        text = "".join(c if c.isprintable() else " " for c in text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plural(n: int, noun: str) -> str:
    """``1 failure``, ``1,234 failures``."""
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def more(n: int) -> str:
    """The line that stands for the rows left out of a capped list."""
    return f"and {n:,} more"


def esc(value: object) -> str:
    """``value`` escaped for HTML text and attribute values."""
    return html.escape(str(value), quote=True)


def html_table(header: Sequence[str] | None, rows: Iterable[Sequence[object]]) -> str:
    """A table of escaped cells, with an optional header row."""
    head = "".join(f'<th style="text-align:left;padding:2px 8px">{esc(h)}</th>' for h in header or ())
    body = "".join(
        "<tr>" + "".join(f'<td style="padding:2px 8px">{esc(c)}</td>' for c in row) + "</tr>" for row in rows
    )
    return f'<table style="border-collapse:collapse">{f"<tr>{head}</tr>" if head else ""}{body}</table>'
