"""When a webhook delivery is tried again, and what an answer means (issue 12, "Webhooks").

Pure (no I/O, no clock of its own): the delivery engine asks :func:`classify` what an attempt's
answer means and :func:`next_attempt` when to try again.

**The answer** (:func:`classify`):

- a ``2xx`` status is :attr:`Outcome.SUCCESS`;
- ``410 Gone`` is :attr:`Outcome.GONE`: the receiver says the endpoint is gone for good, so the
  engine disables the endpoint (and stops retrying);
- anything else is :attr:`Outcome.RETRY`: another ``4xx`` or ``5xx``, a ``1xx``, a status no
  server should send, a **redirect** (``3xx``: never followed, since the ``Location`` could name
  an address the SSRF policy refuses, :mod:`scim.webhooks.urls`; the operator registers the final
  URL), and every exception of an attempt (a timeout, a refused or reset connection, a TLS or DNS
  failure, a target the SSRF policy refuses at connection time: DNS may change back).

**The schedule** (:func:`next_attempt`): attempt 1 is the first delivery; after the n-th attempt
fails, attempt n+1 comes after :data:`DELAYS` ``[n-1]``, that is 5 s, 5 min, 30 min, 2 h, 5 h,
then 10 h five times (issue 12's example), each stretched by the jitter below. After attempt
:data:`MAX_ATTEMPTS` (11) fails there is none: the retry window is over, the engine gives up
on the event and disables the endpoint (with an email, the failure digest's). From the first
attempt to the last: at least :data:`WINDOW_MIN` (57.6 h, 2.4 days), at most :data:`WINDOW_MAX`
(69.1 h, 2.9 days) with the jitter, and even with every ``Retry-After`` at its cap at most
:data:`WINDOW_WORST` (71.4 h): "about three days", never more than :data:`RETRY_WINDOW`
(3 days, checked by a test; attempts themselves add at most 11 times the 15 s timeout).

**Jitter: full jitter over a band above each step.** The delay after the n-th failure is drawn
uniformly (every value of the band equally likely) from ``[DELAYS[n-1], DELAYS[n-1] * (1 +
JITTER)]``, :data:`JITTER` being 20 %. What it is for: when an endpoint goes down, every event
in flight to it fails within the same seconds; without jitter they would all come back at the
same instant at every step, a burst hitting the receiver just as it recovers. The band spreads
them over 1 s at the first retry, 1 min at the second, 2 h at the 10-hour steps. Why not the
textbook forms:

- *full jitter* over ``[0, step]`` (AWS's recommendation for clients competing for one
  server) may retry at once, and halves the window on average (1.5 days); here the table is a
  promise to the receiver: never sooner (a receiver down for maintenance is not hammered), and
  the window stays about three days whatever the draws;
- *decorrelated jitter* (uniform over ``[base, 3 * the previous delay]``, capped) needs the
  previous delay stored with every event and wanders, so neither the table nor the window holds.

Drawing above the table, not around it, is what keeps every retry no earlier than the schedule's
minimum; the band is narrow enough (20 %) that the worst case stays inside three days.

**Retry-After** (:func:`parse_retry_after`: delay-seconds or an HTTP-date, RFC 9110 §10.2.3)
can only **lengthen** a delay, never shorten it: the retry comes after the later of the drawn
delay and the receiver's ``Retry-After``, which is capped at :data:`RETRY_AFTER_CAP` (1 h; later
steps are longer than that anyway). So a receiver answering ``Retry-After: 0`` gets no faster
retries than the table, and one answering ``Retry-After: 604800`` cannot stretch the window
beyond :data:`WINDOW_WORST`.
"""

from __future__ import annotations

import enum
import random
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

__all__ = [
    "DELAYS",
    "JITTER",
    "MAX_ATTEMPTS",
    "RETRY_AFTER_CAP",
    "RETRY_WINDOW",
    "WINDOW_MAX",
    "WINDOW_MIN",
    "WINDOW_WORST",
    "Outcome",
    "classify",
    "delay_bounds",
    "is_redirect",
    "next_attempt",
    "parse_retry_after",
]

DELAYS: tuple[timedelta, ...] = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    *(timedelta(hours=10),) * 5,
)
"""The least wait after the 1st, 2nd, ... failed attempt (the schedule's minimum)."""
JITTER = 0.2
"""Each wait is drawn uniformly from ``[d, d * (1 + JITTER)]`` for ``d`` its :data:`DELAYS` entry."""
MAX_ATTEMPTS = len(DELAYS) + 1
"""Attempts of one event, the first included (11); after the last one fails, the engine gives up."""
RETRY_AFTER_CAP = timedelta(hours=1)
"""Longest ``Retry-After`` honoured; a longer one counts as this."""
RETRY_WINDOW = timedelta(days=3)
"""What the retry window never exceeds (the issue's "about three days")."""
WINDOW_MIN = sum(DELAYS, timedelta())
"""From the first attempt to the last, at the least (every draw at the bottom of its band)."""
WINDOW_MAX = WINDOW_MIN * (1 + JITTER)
"""From the first attempt to the last, at the most without ``Retry-After``."""
WINDOW_WORST = sum((max(d * (1 + JITTER), RETRY_AFTER_CAP) for d in DELAYS), timedelta())
"""From the first attempt to the last, at the most, every ``Retry-After`` at its cap."""

_RANDOM = random.Random()
"""The default source of jitter (not secret: it only spreads retries)."""


class Outcome(enum.Enum):
    """What an attempt's answer means for the event and the endpoint."""

    SUCCESS = "success"
    """Delivered (a 2xx): the event is done, the endpoint's last success is now."""
    RETRY = "retry"
    """Failed: try again at :func:`next_attempt` (or give up when it says None)."""
    GONE = "gone"
    """``410 Gone``: disable the endpoint, no retry."""


def is_redirect(status: int) -> bool:
    """Whether ``status`` is a redirect (3xx), which the sender reports and never follows."""
    return 300 <= status <= 399


def classify(answer: int | Exception) -> Outcome:
    """What an attempt's ``answer`` means: its HTTP status, or the exception it ended with.

    See the module docstring: 2xx success, 410 gone, everything else (other statuses, redirects,
    exceptions) retry. Raises :class:`TypeError` for anything else (a ``bool``, a cancellation:
    those are no answer of the receiver's)."""
    if isinstance(answer, bool) or not isinstance(answer, int | Exception):
        raise TypeError(f"an attempt's answer is an HTTP status or an exception, not {answer!r}")
    if isinstance(answer, Exception):
        return Outcome.RETRY
    if 200 <= answer <= 299:
        return Outcome.SUCCESS
    if answer == 410:
        return Outcome.GONE
    return Outcome.RETRY


def delay_bounds(attempt_number: int) -> tuple[timedelta, timedelta] | None:
    """The band the wait after failed attempt ``attempt_number`` is drawn from (before
    ``Retry-After``), or None when that attempt was the last."""
    if isinstance(attempt_number, bool) or not isinstance(attempt_number, int) or attempt_number < 1:
        raise ValueError(f"attempts are numbered from 1 (the first delivery), not {attempt_number!r}")
    if attempt_number >= MAX_ATTEMPTS:
        return None
    low = DELAYS[attempt_number - 1]
    return low, low * (1 + JITTER)


def next_attempt(
    attempt_number: int,
    failed_at: datetime,
    retry_after: timedelta | None = None,
    rng: random.Random = _RANDOM,
) -> datetime | None:
    """When to make attempt ``attempt_number + 1``, attempt ``attempt_number`` (1: the first
    delivery) having failed at ``failed_at`` (timezone-aware), or None: give up (the retry window
    is over).

    The wait is drawn from :func:`delay_bounds` with ``rng`` (full jitter over the band), and is
    at least ``retry_after`` (the receiver's ``Retry-After``, :func:`parse_retry_after`) capped
    at :data:`RETRY_AFTER_CAP`; a ``Retry-After`` shorter than the draw changes nothing."""
    if failed_at.tzinfo is None:
        raise ValueError("failed_at must be timezone-aware")
    bounds = delay_bounds(attempt_number)
    if bounds is None:
        return None
    low, high = bounds
    wait = low + (high - low) * rng.random()
    if retry_after is not None:
        wait = max(wait, min(retry_after, RETRY_AFTER_CAP))
    return failed_at + wait


def parse_retry_after(value: str | None, now: datetime) -> timedelta | None:
    """The wait a ``Retry-After`` header asks for, received at ``now`` (timezone-aware): its
    delay-seconds, or its HTTP-date minus ``now`` (zero when past). None when the header is
    missing or is neither form (ignored, as RFC 9110 lets a recipient do). Not capped here
    (:func:`next_attempt` caps it)."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        digits = text.lstrip("0") or "0"
        return timedelta(seconds=int(digits) if len(digits) <= 12 else 10**12)  # 30,000 years: infinite
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, the zone an HTTP-date is always in
        when = when.replace(tzinfo=UTC)
    return max(when - now, timedelta())
