"""Side-by-side peers and the workarounds they need.

A workaround is applied only where the peer would otherwise *refuse the request outright*
(a 4xx on a request Entra really sends); anything the peer accepts is sent exactly as Entra
sends it, and where it accepts but mis-handles it, the read-back check reports it.

scim2-server 0.8.3 (PyPI), checked by hand with Entra's bodies:

- ``manager-object``: ``PATCH {"op":"Add","path":"urn:…:enterprise:2.0:User:manager","value":"<id>"}``
  (Entra sends the manager as a bare id) answers 400 ``invalidValue`` ("Input should be a
  valid dictionary or instance of Manager"); sent as ``{"value": "<id>"}`` instead.
- ``group-schemas``: ``POST /Groups`` whose ``schemas`` lists Entra's
  ``http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group`` answers 400
  ``invalidSyntax`` ("Unknown extension schemas"); that URN is dropped from ``schemas``.
- ``remove-member-filter``: Entra's default-dialect member removal,
  ``{"op":"Remove","path":"members","value":[{"value":"<id>"}]}``, answers 400
  ``invalidValue`` ("a remove operation carries no value"); sent as
  ``{"op":"Remove","path":"members[value eq \"<id>\"]"}`` (the other dialect's form).

- ``pathless-filter-key``: the aadOptscim062020 path-less ``replace`` whose value holds
  ``"emails[type eq \"work\"].value"`` (as Microsoft documents it) answers 400 ``invalidValue``
  ("… is not declared by the resource schema"); that one key is sent as its own op with a
  ``path``, the other keys stay in the path-less op.

Accepted as sent (no workaround): ``"active": "False"`` strings, path-less ``replace`` with
dotted keys, ``Add`` on ``emails[type eq "work"].value``, the POST /Users body with ``meta``
and ``roles: []``. Cursor pagination answers 501, so the read-back pages with ``startIndex``.
"""

from __future__ import annotations

from typing import Any

from . import dataset as D
from .client import Client


def _manager_object(method: str, path: str, body: Any) -> Any:
    if method != "PATCH" or not isinstance(body, dict):
        return body
    ops = []
    for op in body.get("Operations", []):
        if op.get("path") == D.MANAGER_PATH and isinstance(op.get("value"), str) and op["value"]:
            op = {**op, "value": {"value": op["value"]}}
        ops.append(op)
    return {**body, "Operations": ops}


def _group_schemas(method: str, path: str, body: Any) -> Any:
    if method == "POST" and path == "/Groups" and isinstance(body, dict):
        return {**body, "schemas": [s for s in body.get("schemas", []) if s != D.AD_GROUP]}
    return body


def _remove_member_filter(method: str, path: str, body: Any) -> Any:
    if method != "PATCH" or not isinstance(body, dict):
        return body
    ops = []
    for op in body.get("Operations", []):
        if (
            str(op.get("op", "")).lower() == "remove"
            and op.get("path") == "members"
            and isinstance(op.get("value"), list)
        ):
            ops += [{"op": op["op"], "path": f'members[value eq "{m.get("value")}"]'} for m in op["value"]]
        else:
            ops.append(op)
    return {**body, "Operations": ops}


def _pathless_filter_key(method: str, path: str, body: Any) -> Any:
    if method != "PATCH" or not isinstance(body, dict):
        return body
    ops = []
    for op in body.get("Operations", []):
        value = op.get("value")
        if not op.get("path") and isinstance(value, dict) and any("[" in k for k in value):
            rest = {k: v for k, v in value.items() if "[" not in k}
            if rest:
                ops.append({**op, "value": rest})
            ops += [{"op": op.get("op", "replace"), "path": k, "value": v} for k, v in value.items() if "[" in k]
        else:
            ops.append(op)
    return {**body, "Operations": ops}


REWRITES: dict[str, Any] = {
    "pathless-filter-key": _pathless_filter_key,
    "manager-object": _manager_object,
    "group-schemas": _group_schemas,
    "remove-member-filter": _remove_member_filter,
}

QUIRKS: dict[str, tuple[str, ...]] = {
    "scim2-server": ("manager-object", "group-schemas", "remove-member-filter", "pathless-filter-key"),
}


def adapt_client(client: Client, quirks: tuple[str, ...]) -> None:
    """Wrap ``client.request`` with the body rewrites the quirks name."""
    if not quirks:
        return
    original = client.request

    async def request(label: str, method: str, path: str, *, body: Any = None, **kwargs: Any):  # type: ignore[no-untyped-def]
        for quirk in quirks:
            body = REWRITES[quirk](method, path, body)
        return await original(label, method, path, body=body, **kwargs)

    client.request = request  # type: ignore[method-assign]
