"""Secret Token expiry warnings in the failure digest (issue 13): which are due, and how the
digest shows them (pure, no I/O).

The rule (:func:`due_warnings`, at ``now``, over the tenant's active tokens):

1. **Which tokens.** Those without ``retires``: a token in a rotation's overlap is being
   replaced on purpose, so it is not warned about. Exception: when *every* active token is in
   an overlap (the token that replaced them was revoked), the newest of them is what Entra most
   likely holds, and nothing replaces it: it is watched, and it ends when it stops working (the
   earlier of its expiry and the end of its overlap).
2. **Which warning.** A watched token that ends (``expires``; never: no warning) within 14 days
   and has not ended gets the 14-day warning, within 3 days the 3-day warning: the smallest
   threshold it is within decides, and the warning is due if no warning of that threshold or a
   smaller one was sent (``warned``). So a token issued expiring in 2 days gets the 3-day
   warning only, and one warned at 3 days is never warned at 14.

The notifier (:mod:`scim.notify.notifier`) sends the due warnings in the tenant's digest (alone
if there is nothing else to say) and records each with
:meth:`~scim.tenants.TenantRegistry.mark_warned` once the email is sent, so each is sent once.
The section names the token, when it ends (UTC), how long is left, its last use, and how to
rotate without downtime (``token rotate NAME --overlap 24h``) or cut at once
(``token regenerate NAME``).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from scim.credentials import SecretToken, format_epoch
from scim.notify.render import FIELD_LIMIT, clean_line, esc, html_table, plural

__all__ = [
    "OVERLAP",
    "WARNING_DAYS",
    "TokenWarning",
    "due_warnings",
    "format_left",
    "subject_phrase",
    "warnings_html",
    "warnings_text",
]

WARNING_DAYS = (3, 14)
"""The warnings, in days before a token ends, smallest first."""
OVERLAP = "24h"
"""The overlap the advice suggests for ``token rotate``."""
_DAY = 86400


@dataclass(frozen=True)
class TokenWarning:
    """A warning due: token ``token_id`` ends at ``ends`` (epoch seconds), ``left`` seconds after
    ``now``; ``days`` is the warning (14 or 3, what ``mark_warned`` records once it is sent);
    ``retiring``: it ends with its rotation overlap, and no newer token replaces it."""

    token_id: str
    days: int
    ends: int
    left: int
    last_used: int | None = None
    retiring: bool = False

    @property
    def verb(self) -> str:
        """``expires``, or ``stops working`` for a token whose overlap ends."""
        return "stops working" if self.retiring else "expires"


def due_warnings(tokens: Iterable[SecretToken], now: datetime) -> tuple[TokenWarning, ...]:
    """The expiry warnings due at ``now`` for a tenant's ``tokens`` (see the module docstring),
    the soonest first."""
    seconds = int(now.timestamp())
    live = [t for t in tokens if t.ends is None or t.ends > seconds]
    watched = [t for t in live if t.retires is None]
    if not watched and live:
        watched = [max(live, key=lambda t: (t.created, t.id))]
    due = []
    for token in watched:
        ends = token.ends
        if ends is None:
            continue
        left = ends - seconds
        days = next((d for d in WARNING_DAYS if left <= d * _DAY), None)
        if days is not None and (token.warned is None or token.warned > days):
            due.append(TokenWarning(token.id, days, ends, left, token.last_used, token.retires is not None))
    return tuple(sorted(due, key=lambda w: (w.ends, w.token_id)))


def format_left(seconds: int) -> str:
    """A time left, to the nearest day from 2 days on (``10 days``), else to the nearest hour
    from 2 hours on (``36 hours``), else to the nearest minute (``1 minute``, at least)."""
    hours = (seconds + 1800) // 3600
    if hours >= 48:
        return plural((seconds + _DAY // 2) // _DAY, "day")
    minutes = (seconds + 30) // 60
    if minutes >= 120:
        return plural(hours, "hour")
    return plural(max(1, minutes), "minute")


def subject_phrase(warnings: Sequence[TokenWarning]) -> str:
    """What a subject says of the warnings: ``Secret Token expires in 13 days``; "" if none."""
    if not warnings:
        return ""
    first = min(warnings, key=lambda w: w.ends)
    if len(warnings) == 1:
        return f"Secret Token {first.verb} in {format_left(first.left)}"
    return f"{len(warnings)} Secret Tokens expire, the first in {format_left(first.left)}"


_RETIRING = "its rotation overlap ends, and no newer token replaces it"
_LISTING = "shows the tenant's tokens, their expiry and last use."


def _row(w: TokenWarning) -> tuple[str, str, str, str]:
    """Token id, when it ends (UTC), time left, last use: cleaned."""
    return (
        clean_line(w.token_id, FIELD_LIMIT),
        format_epoch(w.ends) or "",
        format_left(w.left) + (f": {_RETIRING}" if w.retiring else ""),
        format_epoch(w.last_used) or "never",
    )


@dataclass(frozen=True)
class _Steps:
    """How to rotate: the way without downtime (two steps), the immediate cut, the listing."""

    rotate: str
    rotate_note: str
    paste: str
    cut: str
    cut_note: str
    listing: str


def _steps(tenant: str) -> _Steps:
    return _Steps(
        rotate=f"python -m scim.admin token rotate {tenant} --overlap {OVERLAP}",
        rotate_note="It prints the Tenant URL and a new Secret Token; the current token keeps working for"
        f" the {OVERLAP} overlap. The new token gets the tenant's default lifetime (add --expires 90d to"
        " choose another).",
        paste="In the Microsoft Entra admin center, open the enterprise application's Provisioning tab,"
        " paste the new Secret Token under Admin Credentials (the Tenant URL stays the same), select"
        " Test Connection, then Save. Done within the overlap, no request fails.",
        cut=f"python -m scim.admin token regenerate {tenant}",
        cut_note="every other token fails at once, so Entra's job fails until the new Secret Token is pasted",
        listing=f"python -m scim.admin token list {tenant}",
    )


def _wrapped(text: str, indent: str) -> list[str]:
    return textwrap.wrap(text, 96, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False)


def warnings_text(warnings: Sequence[TokenWarning], tenant: str) -> list[str]:
    """The plain-text lines of the section (none when there is no warning); ``tenant`` cleaned."""
    if not warnings:
        return []
    lines = ["", "Secret Token expiring"]
    for w in warnings:
        token, ends, left, used = _row(w)
        lines.append(f"  - Token {token} {w.verb} {ends} (in {left}); last used {used}")
    steps = _steps(tenant)
    lines += ["", "  To rotate without downtime:", f"    1. {steps.rotate}"]
    lines += _wrapped(steps.rotate_note, "       ")
    paste = _wrapped(steps.paste, "       ")
    lines += ["    2. " + paste[0].lstrip(), *paste[1:]]
    lines += [f"  For an immediate cut instead: {steps.cut}"]
    lines += _wrapped(f"({steps.cut_note}).", "    ")
    lines += [f"  {steps.listing} {_LISTING}"]
    return lines


def warnings_html(warnings: Sequence[TokenWarning], tenant: str) -> list[str]:
    """The HTML parts of the section (none when there is no warning); ``tenant`` cleaned."""
    if not warnings:
        return []
    steps = _steps(tenant)
    return [
        "<h3>Secret Token expiring</h3>",
        html_table(("Token", "Ends (UTC)", "Left", "Last used"), [_row(w) for w in warnings]),
        "<p>To rotate without downtime:</p>",
        f"<ol><li><code>{esc(steps.rotate)}</code><br>{esc(steps.rotate_note)}</li><li>{esc(steps.paste)}</li></ol>",
        f"<p>For an immediate cut instead: <code>{esc(steps.cut)}</code> ({esc(steps.cut_note)}).</p>",
        f"<p><code>{esc(steps.listing)}</code> {esc(_LISTING)}</p>",
    ]
