"""The tenant page's activity chart and failure ratio (pure: numbers in, drawing out).

Requests and failures per hour over the last 7 days, drawn as server-side SVG (bars, no script,
no library): :func:`activity` places the hourly counts :mod:`scim.portal.logs` read from the
provisioning log (:meth:`~scim.provisioning_log.ProvisioningLog.activity`) in their hours,
:func:`draw` lays out the bars the template renders. The failure ratio of the last 24 hours is
set against the threshold Entra quarantines a job at (docs/ENTRA.md §6: above 40 % failures),
with a warning from :data:`WARN_RATIO` on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from scim.provisioning_log import HourCount

__all__ = [
    "DAYS",
    "HOURS",
    "QUARANTINE_RATIO",
    "WARN_RATIO",
    "Activity",
    "Chart",
    "activity",
    "draw",
    "hour_starts",
]

DAYS = 7
HOURS = DAYS * 24
QUARANTINE_RATIO = 0.40
"""Entra quarantines a provisioning job above this share of failed requests (docs/ENTRA.md §6)."""
WARN_RATIO = 0.30
"""From this share on, the page warns that the job is near quarantine."""

_BAR = 4
_LEFT = 44
_TOP = 10
_PLOT_HEIGHT = 150
_BOTTOM = 28


def hour_starts(now: datetime) -> list[datetime]:
    """The starts of the :data:`HOURS` hours that end with the current one, oldest first."""
    current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return [current - timedelta(hours=HOURS - 1 - i) for i in range(HOURS)]


@dataclass(frozen=True)
class Hour:
    start: datetime
    requests: int
    failures: int


@dataclass(frozen=True)
class Activity:
    """Requests and failures per hour, oldest first, and the ratio of the last 24 hours."""

    hours: tuple[Hour, ...]

    @property
    def requests(self) -> int:
        return sum(h.requests for h in self.hours)

    @property
    def failures(self) -> int:
        return sum(h.failures for h in self.hours)

    @property
    def day_requests(self) -> int:
        return sum(h.requests for h in self.hours[-24:])

    @property
    def day_failures(self) -> int:
        return sum(h.failures for h in self.hours[-24:])

    @property
    def day_ratio(self) -> float | None:
        """Failed share of the last 24 hours' requests (None without requests)."""
        return self.day_failures / self.day_requests if self.day_requests else None

    @property
    def level(self) -> str:
        """``quarantine`` above 40 %, ``warning`` from 30 %, else ``ok`` (or ``none``: no requests)."""
        ratio = self.day_ratio
        if ratio is None:
            return "none"
        if ratio > QUARANTINE_RATIO:
            return "quarantine"
        return "warning" if ratio >= WARN_RATIO else "ok"

    def days(self) -> list[Hour]:
        """Per calendar day (UTC), oldest first, for the table beside the chart (the first and
        the last day are partial: the 7 days end with the current hour)."""
        days: dict[date, list[Hour]] = {}
        for hour in self.hours:
            days.setdefault(hour.start.date(), []).append(hour)
        return [
            Hour(hours[0].start, sum(h.requests for h in hours), sum(h.failures for h in hours))
            for hours in days.values()
        ]


def activity(starts: Sequence[datetime], counts: Iterable[HourCount]) -> Activity:
    """Per hour of ``starts``: its requests and failures from ``counts`` (hours without a count
    are 0, counts of other hours are left out; a failure is a request too, so an hour never
    shows more failures than requests)."""
    index = {start: i for i, start in enumerate(starts)}
    requests, failures = [0] * len(starts), [0] * len(starts)
    for count in counts:
        i = index.get(count.hour)
        if i is not None:
            requests[i] += count.requests
            failures[i] += count.failures
    return Activity(tuple(Hour(s, max(r, f), f) for s, r, f in zip(starts, requests, failures, strict=True)))


@dataclass(frozen=True)
class Bar:
    x: int
    width: int
    requests_y: float
    requests_height: float
    failures_y: float
    failures_height: float
    label: str


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True)
class DayMark:
    x: int
    label: str


@dataclass(frozen=True)
class Chart:
    """What the template draws: the canvas size, bars, the y axis ticks and the day marks."""

    width: int
    height: int
    left: int
    top: int
    plot_width: int
    plot_height: int
    baseline: float
    bars: tuple[Bar, ...]
    ticks: tuple[Tick, ...]
    days: tuple[DayMark, ...]


def _scale_max(peak: int) -> int:
    """A round top of the y axis at or above ``peak`` (1, 2, 5 x 10^n)."""
    top = 1
    while True:
        for step in (1, 2, 5):
            if step * top >= peak:
                return step * top
        top *= 10


def draw(data: Activity) -> Chart:
    """Lay out one bar per hour (requests, with the hour's failures over them in red), and a
    mark at each midnight (UTC)."""
    peak = _scale_max(max([h.requests for h in data.hours] + [1]))
    baseline = _TOP + _PLOT_HEIGHT

    def height(n: int) -> float:
        return round(n / peak * _PLOT_HEIGHT, 2)

    bars = []
    for i, hour in enumerate(data.hours):
        rh, fh = height(hour.requests), height(hour.failures)
        when = hour.start.strftime("%Y-%m-%d %H:00")
        bars.append(
            Bar(
                x=_LEFT + i * _BAR,
                width=_BAR - 1,
                requests_y=round(baseline - rh, 2),
                requests_height=rh,
                failures_y=round(baseline - fh, 2),
                failures_height=fh,
                label=f"{when} UTC: {hour.requests} requests, {hour.failures} failures",
            )
        )
    ticks = tuple(Tick(round(baseline - height(v), 2), f"{v:,}") for v in dict.fromkeys((0, peak // 2, peak)))
    days = tuple(
        DayMark(_LEFT + i * _BAR, hour.start.strftime("%a %d"))
        for i, hour in enumerate(data.hours)
        if hour.start.hour == 0
    )
    plot_width = len(data.hours) * _BAR
    return Chart(
        width=_LEFT + plot_width + 8,
        height=baseline + _BOTTOM,
        left=_LEFT,
        top=_TOP,
        plot_width=plot_width,
        plot_height=_PLOT_HEIGHT,
        baseline=baseline,
        bars=tuple(bars),
        ticks=ticks,
        days=days,
    )
