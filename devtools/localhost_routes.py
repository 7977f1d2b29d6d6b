"""The app's HTTP routes as :mod:`devtools.localhost` serves them: the functions of a
``FunctionApp`` (:meth:`azure.functions.FunctionApp.get_functions`, callable more than once here),
the ``httpTrigger`` ones as :class:`Route` s in the order they are tried, and the route templates
this host supports (:func:`compile_route`: literal segments, ``{name}`` and a last ``{*name}``;
anything else is :class:`UnsupportedRoute`).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func

__all__ = ["DEFAULT_ROUTE_PREFIX", "Route", "UnsupportedRoute", "compile_route", "http_routes"]

DEFAULT_ROUTE_PREFIX = "api"

# one whole route segment: a literal, {name} or {*name}
_SEGMENT = re.compile(r"\{(?P<star>\*?)(?P<name>[A-Za-z_][A-Za-z0-9_]*)\}|[^{}]+")


class UnsupportedRoute(ValueError):
    """A route template this host does not serve (it is not the Functions host)."""


def compile_route(template: str, function_name: str = "?") -> tuple[re.Pattern[str], tuple[int, ...]]:
    """The regex over the (still percent-encoded) path for ``template``, and its precedence.

    Supported: literal segments, ``{name}`` and a last ``{*name}``; anything else raises
    :class:`UnsupportedRoute`. Precedence, per segment: 0 literal, 1 parameter, 2 catch-all
    (lower is tried first).
    """
    segments = template.strip("/").split("/") if template.strip("/") else []
    regex, precedence, names = "", [], set()
    for index, segment in enumerate(segments):
        m = _SEGMENT.fullmatch(segment)
        name = m["name"] if m else None
        sep = "/" if index else ""
        if m is None or (m["star"] and index < len(segments) - 1) or (name and name in names):
            raise UnsupportedRoute(
                f"function {function_name!r}: route {template!r} is not supported by devtools.localhost "
                f"(segment {segment!r}): it serves literal segments, {{name}} and a last {{*name}} "
                "only; change the route or serve the app with `func start`"
            )
        if name is None:
            regex += sep + re.escape(segment)
            precedence.append(0)
        elif m["star"]:  # matches the empty remainder too ("scim/t" and "scim/t/")
            regex += f"(?:{sep}(?P<{name}>.*))?"
            precedence.append(2)
        else:
            regex += f"{sep}(?P<{name}>[^/]+)"
            precedence.append(1)
        names.add(name)
    return re.compile(regex + "/?", re.IGNORECASE), tuple(precedence)


@dataclass(frozen=True)
class Route:
    """One HTTP-triggered function as the host sees it."""

    function_name: str
    template: str  # full template, route prefix included, no leading slash
    methods: frozenset[str] | None  # None: every method
    handler: Callable[..., Any]
    trigger_arg: str
    regex: re.Pattern[str] = field(repr=False)
    precedence: tuple[int, ...] = field(repr=False)
    wants_context: bool = False


def _value(enum_or_str: Any) -> str:
    return str(getattr(enum_or_str, "value", enum_or_str))


def _functions(app: func.FunctionApp) -> list[Any]:
    """``app.get_functions()`` (which validates the app), callable more than once."""
    # get_functions() records the names it saw and raises on a second call ("does not have a
    # unique function name"); clear that record for our call and put it back after, so the same
    # app can be served (or indexed by the real worker) again.
    seen, app.functions_bindings = getattr(app, "functions_bindings", None), None
    try:
        return list(app.get_functions())
    finally:
        app.functions_bindings = seen


def _wants_context(handler: Callable[..., Any]) -> bool:
    try:
        return "context" in inspect.signature(handler).parameters
    except (TypeError, ValueError):
        return False


def http_routes(app: func.FunctionApp, route_prefix: str = DEFAULT_ROUTE_PREFIX) -> list[Route]:
    """The app's HTTP-triggered functions, in the order they are tried.

    From ``app.get_functions()`` (which validates the app): for each function whose trigger is
    an ``httpTrigger``, its ``route`` (the function name when unset) under ``route_prefix``,
    ``methods``, the argument that receives the request and the user function.
    """
    routes: list[Route] = []
    for fn in _functions(app):
        trigger = fn.get_trigger()
        if trigger is None or trigger.get_binding_name() != "httpTrigger":
            continue
        handler = fn.get_user_function()
        name = fn.get_function_name() or handler.__name__
        route = str(getattr(trigger, "route", None) or name).strip("/")
        route = "/".join(p for p in (route_prefix.strip("/"), route) if p)
        regex, precedence = compile_route(route, name)
        methods = getattr(trigger, "methods", None)
        wants_context = _wants_context(handler)
        routes.append(
            Route(
                function_name=name,
                template=route,
                methods=frozenset(_value(m).upper() for m in methods) if methods else None,
                handler=handler,
                trigger_arg=trigger.name,
                regex=regex,
                precedence=precedence,
                wants_context=wants_context,
            )
        )
    routes.sort(key=lambda r: r.precedence)  # stable: registration order among equals
    return routes
