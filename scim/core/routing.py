"""Which handler answers a request: the SCIM endpoints (RFC 7644 §3.2) as a table of path shapes
and methods.

A path is what follows the Tenant URL, split on ``/`` (empty segments dropped). Its first
segment names the endpoint, case-insensitively (Entra and Postman vary the case); the rest is
matched by shape: nothing, a literal (``.search``), one resource id, or one or more segments
(discovery ids, which may contain ``/``, e.g. a schema URN). A known shape with another method
is 405, an unknown path 404, ``/Bulk`` and ``/Me`` 501 (not advertised in
ServiceProviderConfig). :meth:`scim.core.service.ScimService.handle` calls the handler named.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from scim.core.errors import MethodNotAllowed, NotFound, NotSupported
from scim.core.schema import GROUP, USER, ResourceType

__all__ = ["ROUTES", "Handler", "Route", "Target", "resolve"]

Handler = Literal[
    "list",
    "search",
    "create",
    "get",
    "replace",
    "patch",
    "delete",
    "search_all",
    "service_provider_config",
    "schemas",
    "resource_types",
]
"""The name of a :class:`~scim.core.service.ScimService` handler."""

ID = "{id}"
"""A path segment standing for exactly one resource id."""
REST = "{id...}"
"""A path segment standing for one or more segments (a discovery id)."""


@dataclass(frozen=True)
class Route:
    """One path shape and the handler of each method allowed on it.

    ``shape`` is the endpoint name (lower-case) then the remaining segments: literals, matched
    exactly, or :data:`ID` / :data:`REST`. ``not_allowed`` is the 405 detail, formatted with
    ``method``.
    """

    shape: tuple[str, ...]
    methods: Mapping[str, Handler]
    not_allowed: str
    rtype: ResourceType | None = None

    def matches(self, parts: list[str]) -> bool:
        if parts[0].lower() != self.shape[0]:
            return False
        rest, pattern = parts[1:], self.shape[1:]
        if pattern and pattern[-1] == REST:
            return len(rest) >= len(pattern)
        if len(rest) != len(pattern):
            return False
        return all(p in (ID, segment) for p, segment in zip(pattern, rest, strict=True))


@dataclass(frozen=True)
class Target:
    """A resolved request: the handler, the resource type of a ``/Users`` or ``/Groups`` route,
    and the segments after the endpoint name (``rest[0]`` is the resource id where there is one)."""

    handler: Handler
    rtype: ResourceType | None
    rest: tuple[str, ...]

    @property
    def resource_id(self) -> str:
        return self.rest[0]


def _only(method: str) -> str:
    return "{method} is not allowed here; use " + method + "."


def _resource_routes(rtype: ResourceType) -> list[Route]:
    name = rtype.endpoint.lstrip("/").lower()
    return [
        Route(
            (name,),
            {"GET": "list", "POST": "create"},
            "{method} " + rtype.endpoint + " is not allowed; use GET or POST.",
            rtype,
        ),
        Route((name, ".search"), {"POST": "search"}, _only("POST"), rtype),
        Route(
            (name, ID),
            {"GET": "get", "PUT": "replace", "PATCH": "patch", "DELETE": "delete"},
            "{method} is not allowed on a " + rtype.name + "; use GET, PUT, PATCH or DELETE.",
            rtype,
        ),
    ]


ROUTES: tuple[Route, ...] = (
    *_resource_routes(USER),
    *_resource_routes(GROUP),
    *(
        Route((alias,), {"GET": "service_provider_config"}, _only("GET"))
        for alias in ("serviceproviderconfig", "serviceproviderconfigs", "serviceconfiguration")
    ),
    Route(("schemas",), {"GET": "schemas"}, _only("GET")),
    Route(("schemas", REST), {"GET": "schemas"}, _only("GET")),
    Route(("resourcetypes",), {"GET": "resource_types"}, _only("GET")),
    Route(("resourcetypes", REST), {"GET": "resource_types"}, _only("GET")),
    Route((".search",), {"POST": "search_all"}, _only("POST")),
)
"""Every endpoint, first match wins (``/Users/.search`` before ``/Users/{id}``)."""

_RESOURCE_ENDPOINTS = {USER.endpoint.lstrip("/").lower(): USER, GROUP.endpoint.lstrip("/").lower(): GROUP}
_UNSUPPORTED = ("bulk", "me")


def resolve(method: str, path: str) -> Target:
    """The handler of ``method`` on ``path``; raises 404, 405 or 501 as RFC 7644 §3.12 asks."""
    parts = [p for p in path.split("/") if p]
    method = method.upper()
    if not parts:
        raise NotFound("Append /Users, /Groups, /Schemas, /ResourceTypes or /ServiceProviderConfig to the Tenant URL.")
    for route in ROUTES:
        if route.matches(parts):
            handler = route.methods.get(method)
            if handler is None:
                raise MethodNotAllowed(route.not_allowed.format(method=method))
            return Target(handler, route.rtype, tuple(parts[1:]))
    head = parts[0].lower()
    rtype = _RESOURCE_ENDPOINTS.get(head)
    if rtype is not None:
        raise NotFound(f"There is no SCIM endpoint {rtype.endpoint}/{'/'.join(parts[1:])[:100]}.")
    if head in _UNSUPPORTED:
        raise NotSupported(f"/{parts[0]} is not supported by this service provider (see ServiceProviderConfig).")
    raise NotFound(f"There is no SCIM endpoint /{'/'.join(parts)[:100]}.")
