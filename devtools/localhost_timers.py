"""The app's timers as :mod:`devtools.localhost` runs them: the ``timerTrigger`` functions with
their interval (:func:`schedule_interval`: the fixed-interval NCRONTABs and ``hh:mm:ss``
TimeSpans, ``%NAME%`` read from the environment), and :class:`TimerRunner`, the host's part
that runs each one every interval from start-up (``run_on_startup`` ones at once too), never two
runs of one timer at once, until the host stops.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func
import azure.functions.timer as func_timer

from devtools.localhost_http import _Context
from devtools.localhost_routes import _functions, _wants_context

__all__ = ["Timer", "TimerRunner", "UnknownTimer", "schedule_interval", "timer_functions"]

log = logging.getLogger("devtools.localhost")  # the host's one logger

_SETTING = re.compile(r"%([^%]+)%")
_NUMBER = re.compile(r"\d+")
_EVERY = re.compile(r"\*/(\d+)")
_TIMESPAN = re.compile(r"(\d+):(\d{2}):(\d{2})")


class UnknownTimer(ValueError):
    """A timer interval given for a function the app has no timer of, or not positive."""


@dataclass(frozen=True)
class Timer:
    """One timer-triggered function as the host sees it."""

    function_name: str
    schedule: str  # as declared (``%NAME%`` not yet resolved)
    interval: float | None  # seconds between runs; None: a schedule this host does not run
    handler: Callable[..., Any]
    trigger_arg: str
    run_on_startup: bool = False
    wants_context: bool = False


def schedule_interval(schedule: str, environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between the runs of a timer ``schedule``, when it is a fixed interval; else None.

    ``%NAME%`` is first replaced by the setting ``NAME`` of ``environ`` (None when unset, as the
    Functions host refuses to start then). Read: a ``hh:mm:ss`` TimeSpan, and the six-field
    NCRONTABs (seconds first) that repeat at a fixed interval: ``*/N * * * * *`` (N seconds),
    ``S */N * * * *`` (N minutes), ``S M */N * * *`` (N hours), ``S * * * * *`` (every minute),
    ``S M * * * *`` (every hour) and ``S M H * * *`` (every day), where S, M and H are numbers.
    """
    environ = os.environ if environ is None else environ
    missing = False

    def setting(m: re.Match[str]) -> str:
        nonlocal missing
        value = environ.get(m[1])
        missing = missing or not value
        return value or ""

    text = _SETTING.sub(setting, schedule).strip()
    if missing or not text:
        return None
    span = _TIMESPAN.fullmatch(text)
    if span:
        seconds = int(span[1]) * 3600 + int(span[2]) * 60 + int(span[3])
        return float(seconds) if seconds > 0 else None
    fields = text.split()
    if len(fields) != 6 or fields[3:] != ["*", "*", "*"]:
        return None
    sec, minute, hour = fields[:3]

    def every(field: str) -> int | None:
        m = _EVERY.fullmatch(field)
        return int(m[1]) if m and int(m[1]) > 0 else None

    def number(field: str) -> bool:
        return _NUMBER.fullmatch(field) is not None

    if every(sec) and minute == "*" and hour == "*":
        return float(every(sec) or 0)
    if not number(sec):
        return None
    if minute == "*" and hour == "*":
        return 60.0
    if every(minute) and hour == "*":
        return 60.0 * (every(minute) or 0)
    if not number(minute):
        return None
    if hour == "*":
        return 3600.0
    if every(hour):
        return 3600.0 * (every(hour) or 0)
    return 86400.0 if number(hour) else None


def timer_functions(app: func.FunctionApp, environ: Mapping[str, str] | None = None) -> list[Timer]:
    """The app's timer-triggered functions, with their interval (:func:`schedule_interval`)."""
    timers: list[Timer] = []
    for fn in _functions(app):
        trigger = fn.get_trigger()
        if trigger is None or trigger.get_binding_name() != "timerTrigger":
            continue
        handler = fn.get_user_function()
        schedule = str(getattr(trigger, "schedule", "") or "")
        timers.append(
            Timer(
                function_name=fn.get_function_name() or handler.__name__,
                schedule=schedule,
                interval=schedule_interval(schedule, environ),
                handler=handler,
                trigger_arg=trigger.name,
                run_on_startup=bool(getattr(trigger, "run_on_startup", False)),
                wants_context=_wants_context(handler),
            )
        )
    return timers


class TimerRunner:
    """Runs :attr:`timers` while the host serves (:class:`devtools.localhost.LocalFunctionsHost`
    is one): each at its interval from start-up, cancelled when the host stops."""

    root: Path
    timers: list[Timer]
    _timer_tasks: list[asyncio.Task[None]]

    def _start_timers(self) -> None:
        if self._timer_tasks:
            return
        for timer in self.timers:
            if timer.interval is None:
                log.warning(
                    "timer %s: schedule %r is not a fixed interval this host can run (or names an unset "
                    "setting): not run; serve the app with `func start` to run it",
                    timer.function_name,
                    timer.schedule,
                )
                continue
            task = asyncio.create_task(self._timer_loop(timer, timer.interval), name=f"timer {timer.function_name}")
            self._timer_tasks.append(task)

    async def _stop_timers(self) -> None:
        """Cancel the timers (a run in progress too)."""
        tasks, self._timer_tasks = self._timer_tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _timer_loop(self, timer: Timer, interval: float) -> None:
        """Run ``timer`` every ``interval`` seconds until cancelled; never two runs at once."""
        loop = asyncio.get_running_loop()
        if timer.run_on_startup:
            await self.run_timer(timer)
        next_at = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            await self.run_timer(timer)
            next_at += interval
            now = loop.time()
            if next_at <= now:  # the run overran: the occurrences it covered are skipped
                next_at += ((now - next_at) // interval + 1) * interval

    async def run_timer(self, timer: Timer) -> bool:
        """One run of ``timer`` (its handler gets a ``TimerRequest``); False if it raised (logged)."""
        started = time.perf_counter()
        kwargs: dict[str, Any] = {timer.trigger_arg: func_timer.TimerRequest(past_due=False)}
        if timer.wants_context:
            kwargs["context"] = _Context(timer.function_name, str(self.root))
        try:
            if inspect.iscoroutinefunction(timer.handler):
                await timer.handler(**kwargs)
            else:
                result = await asyncio.to_thread(timer.handler, **kwargs)
                if inspect.isawaitable(result):
                    await result
        except Exception:
            log.exception("timer %s raised; it runs again at its next time", timer.function_name)
            return False
        log.debug("timer %s ran in %.1f ms", timer.function_name, (time.perf_counter() - started) * 1000)
        return True
