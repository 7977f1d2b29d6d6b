"""The webhook retry schedule and the meaning of an answer (:mod:`scim.core.delivery_schedule`)."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from scim.core.delivery_schedule import (
    DELAYS,
    JITTER,
    MAX_ATTEMPTS,
    RETRY_AFTER_CAP,
    RETRY_WINDOW,
    WINDOW_MAX,
    WINDOW_MIN,
    WINDOW_WORST,
    Outcome,
    classify,
    delay_bounds,
    is_redirect,
    next_attempt,
    parse_retry_after,
)

T0 = datetime(2026, 12, 1, 18, 0, 0, tzinfo=UTC)
S, M, H = timedelta(seconds=1), timedelta(minutes=1), timedelta(hours=1)


class Fixed(random.Random):
    """A "random" source that always draws ``value`` (0: the band's bottom, 1: its top)."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


# -- the schedule --------------------------------------------------------------------------------

SCHEDULE = [
    # failed attempt, least wait, most wait (20 % above)
    (1, 5 * S, 6 * S),
    (2, 5 * M, 6 * M),
    (3, 30 * M, 36 * M),
    (4, 2 * H, 2.4 * H),
    (5, 5 * H, 6 * H),
    (6, 10 * H, 12 * H),
    (7, 10 * H, 12 * H),
    (8, 10 * H, 12 * H),
    (9, 10 * H, 12 * H),
    (10, 10 * H, 12 * H),
]


@pytest.mark.parametrize(("attempt", "low", "high"), SCHEDULE)
def test_each_retry_comes_within_its_band(attempt: int, low: timedelta, high: timedelta) -> None:
    assert delay_bounds(attempt) == (low, high)
    assert next_attempt(attempt, T0, rng=Fixed(0.0)) == T0 + low
    assert next_attempt(attempt, T0, rng=Fixed(1.0)) == T0 + high
    rng = random.Random(attempt)
    waits = [next_attempt(attempt, T0, rng=rng) - T0 for _ in range(2000)]  # type: ignore[operator]
    assert all(low <= w <= high for w in waits)
    # Full jitter over the band: spread over all of it, evenly (each quarter holds about a quarter).
    quarters = [
        sum(1 for w in waits if low + (high - low) * q / 4 <= w < low + (high - low) * (q + 1) / 4) for q in range(4)
    ]
    assert all(400 <= n <= 600 for n in quarters), quarters


def test_the_issue_example_is_the_schedule_minimum() -> None:
    assert [d.total_seconds() for d in DELAYS] == [5, 300, 1800, 7200, 18000, *[36000] * 5]
    assert MAX_ATTEMPTS == 11 and JITTER == 0.2


@pytest.mark.parametrize("attempt", [MAX_ATTEMPTS, MAX_ATTEMPTS + 1, 1000])
def test_after_the_last_attempt_the_engine_gives_up(attempt: int) -> None:
    assert next_attempt(attempt, T0) is None
    assert delay_bounds(attempt) is None


def test_a_seeded_source_gives_the_same_schedule() -> None:
    def chain(seed: int) -> list[datetime]:
        rng, at, times = random.Random(seed), T0, []
        for attempt in range(1, MAX_ATTEMPTS):
            nxt = next_attempt(attempt, at, rng=rng)
            assert nxt is not None
            times.append(nxt)
            at = nxt
        assert next_attempt(MAX_ATTEMPTS, at, rng=rng) is None
        return times

    assert chain(42) == chain(42)
    assert chain(42) != chain(43)


@pytest.mark.parametrize("seed", range(20))
def test_the_whole_window_is_about_three_days(seed: int) -> None:
    rng, at = random.Random(seed), T0
    for attempt in range(1, MAX_ATTEMPTS):
        at = next_attempt(attempt, at, rng=rng)  # type: ignore[assignment]
    assert WINDOW_MIN <= at - T0 <= WINDOW_MAX


def test_the_window_bounds() -> None:
    assert WINDOW_MIN.total_seconds() == 207305  # 57.6 h
    assert WINDOW_MAX == WINDOW_MIN * 1.2  # 69.1 h
    assert timedelta(days=2.25) < WINDOW_MIN < WINDOW_MAX < WINDOW_WORST <= RETRY_WINDOW == timedelta(days=3)
    # The worst a receiver can do: a capped Retry-After on every answer, and every draw at the top.
    at = T0
    for attempt in range(1, MAX_ATTEMPTS):
        at = next_attempt(attempt, at, timedelta(days=365), rng=Fixed(1.0))  # type: ignore[assignment]
    assert at - T0 == WINDOW_WORST
    # Attempts themselves add at most their timeout (15 s) each: still inside three days.
    assert WINDOW_WORST + MAX_ATTEMPTS * 15 * S < RETRY_WINDOW


# -- Retry-After -----------------------------------------------------------------------------------

RETRY_AFTER = [
    # failed attempt, Retry-After, draw, the wait
    (1, None, 0.0, 5 * S),
    (1, timedelta(0), 0.0, 5 * S),  # "Retry-After: 0" is no faster than the schedule
    (1, 3 * S, 0.5, 5.5 * S),  # shorter than the draw: the draw
    (1, 30 * S, 0.0, 30 * S),  # longer: honoured
    (1, 30 * M, 1.0, 30 * M),
    (1, RETRY_AFTER_CAP, 0.0, H),
    (1, 2 * H, 0.0, H),  # capped
    (1, timedelta(days=365), 0.0, H),
    (2, 10 * M, 0.0, 10 * M),
    (3, 40 * M, 0.0, 40 * M),
    (4, 30 * M, 0.0, 2 * H),  # the later steps are longer than any honoured Retry-After
    (6, 3 * H, 0.5, 11 * H),
]


@pytest.mark.parametrize(("attempt", "retry_after", "draw", "wait"), RETRY_AFTER)
def test_retry_after_lengthens_a_wait_never_shortens_it(
    attempt: int, retry_after: timedelta | None, draw: float, wait: timedelta
) -> None:
    assert next_attempt(attempt, T0, retry_after, rng=Fixed(draw)) == T0 + wait


def test_retry_after_does_not_revive_a_finished_schedule() -> None:
    assert next_attempt(MAX_ATTEMPTS, T0, timedelta(seconds=10)) is None


NOW = datetime(2026, 12, 1, 18, 0, 0, tzinfo=UTC)
HEADERS = [
    (None, None),
    ("120", 2 * M),
    (" 7 ", 7 * S),
    ("0", timedelta(0)),
    ("000000000000000000000000042", 42 * S),
    ("9" * 5000, timedelta(seconds=10**12)),  # absurd: as good as forever (and capped later)
    ("Tue, 01 Dec 2026 18:05:00 GMT", 5 * M),  # IMF-fixdate
    ("Tuesday, 01-Dec-26 18:00:30 GMT", 30 * S),  # RFC 850
    ("Tue Dec  1 19:00:00 2026", H),  # asctime
    ("Tue, 01 Dec 2026 17:00:00 GMT", timedelta(0)),  # past: now
    ("Tue, 01 Dec 2026 18:00:10 -0000", 10 * S),
    ("-5", None),
    ("1.5", None),
    ("", None),
    ("soon", None),
    ("٣", None),  # a non-ASCII digit is no delay-seconds
    ("Tue, 41 Dec 2026 18:00:00 GMT", None),
]


@pytest.mark.parametrize(("header", "wait"), HEADERS)
def test_retry_after_is_seconds_or_an_http_date(header: str | None, wait: timedelta | None) -> None:
    assert parse_retry_after(header, NOW) == wait


def test_an_http_date_is_read_against_an_aware_now_in_any_zone() -> None:
    now = NOW.astimezone(timezone(timedelta(hours=2)))
    assert parse_retry_after("Tue, 01 Dec 2026 18:01:00 GMT", now) == M


# -- the answer ------------------------------------------------------------------------------------

CLASSIFIED = [
    *((status, Outcome.SUCCESS) for status in (200, 201, 202, 204, 299)),
    (410, Outcome.GONE),
    *(
        (status, Outcome.RETRY)
        for status in (100, 199, 300, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 409, 413, 429)
    ),
    *((status, Outcome.RETRY) for status in (500, 501, 502, 503, 504, 599, 0, 600, 999)),
    (TimeoutError(), Outcome.RETRY),
    (ConnectionRefusedError(111, "Connection refused"), Outcome.RETRY),
    (ConnectionResetError(), Outcome.RETRY),
    (OSError("Name or service not known"), Outcome.RETRY),
    (ValueError("refused webhook URL"), Outcome.RETRY),  # the SSRF check at connection time
]


@pytest.mark.parametrize(("answer", "outcome"), CLASSIFIED, ids=repr)
def test_classify(answer: int | Exception, outcome: Outcome) -> None:
    assert classify(answer) is outcome


@pytest.mark.parametrize("answer", [True, False, None, "200", 200.0, asyncio.CancelledError(), KeyboardInterrupt()])
def test_what_is_no_answer_is_refused(answer: object) -> None:
    with pytest.raises(TypeError):
        classify(answer)  # type: ignore[arg-type]


def test_redirects_are_named() -> None:
    assert [s for s in (200, 299, 300, 302, 308, 399, 400) if is_redirect(s)] == [300, 302, 308, 399]


@pytest.mark.parametrize("attempt", [0, -1, True])
def test_attempts_are_numbered_from_one(attempt: int) -> None:
    with pytest.raises(ValueError, match="numbered from 1"):
        next_attempt(attempt, T0)


def test_the_failure_time_is_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_attempt(1, datetime(2026, 12, 1, 18, 0, 0))
