"""What :mod:`devtools.localhost` reads before serving: ``host.json``'s route prefix,
``local.settings.json``'s ``Values`` (into the environment, never overriding it, as ``func``
does), the app (``module:attribute``), and the host's own request body limit
(:func:`host_body_limit`) and default timeouts.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path

import azure.functions as func

from devtools.localhost_routes import DEFAULT_ROUTE_PREFIX

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_HEAD_TIMEOUT",
    "PROJECT_ROOT",
    "host_body_limit",
    "load_app",
    "load_local_settings",
    "read_route_prefix",
]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
APP_MAX_BODY_BYTES = 1024 * 1024  # SCIM_MAX_BODY_BYTES's default (scim.settings)
HOST_BODY_FACTOR = 4  # the host's limit, when not set, is this many times the app's
DEFAULT_HEAD_TIMEOUT = 15.0  # seconds to send a request line and headers
DEFAULT_BODY_TIMEOUT = 30.0  # seconds to send a request body


def read_route_prefix(root: str | os.PathLike[str] = PROJECT_ROOT) -> str:
    """``extensions.http.routePrefix`` of ``root/host.json``; "api" if unset or no host.json."""
    path = Path(root) / "host.json"
    if not path.is_file():
        return DEFAULT_ROUTE_PREFIX
    data = json.loads(path.read_text(encoding="utf-8-sig"))
    prefix = ((data.get("extensions") or {}).get("http") or {}).get("routePrefix")
    return DEFAULT_ROUTE_PREFIX if prefix is None else str(prefix)


def load_local_settings(
    root: str | os.PathLike[str] = PROJECT_ROOT, environ: MutableMapping[str, str] | None = None
) -> list[str]:
    """Copy ``Values`` of ``root/local.settings.json`` into the environment, never overriding.

    Returns the names set. A missing file is fine (nothing is set).
    """
    environ = os.environ if environ is None else environ
    path = Path(root) / "local.settings.json"
    if not path.is_file():
        return []
    values = json.loads(path.read_text(encoding="utf-8-sig")).get("Values") or {}
    added = []
    for key, value in values.items():
        if key not in environ and value is not None:
            environ[key] = str(value)
            added.append(key)
    return added


def load_app(spec: str) -> func.FunctionApp:
    """Import ``module:attribute`` (default attribute ``app``) and return the FunctionApp."""
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    app: func.FunctionApp = getattr(module, attr or "app")
    if not hasattr(app, "get_functions"):
        raise TypeError(f"{spec} is not an azure.functions.FunctionApp")
    return app


def _positive_int(name: str, value: str | None) -> int | None:
    raw = (value or "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) <= 0:
        raise ValueError(f"{name} must be a positive whole number of bytes, not {raw!r}")
    return int(raw)


def host_body_limit(environ: Mapping[str, str] | None = None) -> int:
    """The host's largest request body, in bytes.

    ``FUNCTIONS_REQUEST_BODY_SIZE_LIMIT`` (the Azure Functions host's own setting) when set, else
    :data:`HOST_BODY_FACTOR` times the app's ``SCIM_MAX_BODY_BYTES`` (1 MiB by default: 4 MiB).
    Bodies between the two limits reach the app, which answers its own SCIM 413.
    """
    environ = os.environ if environ is None else environ
    host = _positive_int("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", environ.get("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT"))
    if host is not None:
        return host
    app = _positive_int("SCIM_MAX_BODY_BYTES", environ.get("SCIM_MAX_BODY_BYTES"))
    return HOST_BODY_FACTOR * (app or APP_MAX_BODY_BYTES)
