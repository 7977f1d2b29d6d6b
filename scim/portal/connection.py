"""Test connection: what Entra will see when the admin clicks **Test connection**.

Entra's test is one request, ``GET /Users?filter=userName eq "<random guid>"`` with the Secret
Token as a bearer (docs/ENTRA.md §2, README "Connecting Microsoft Entra ID"), and it succeeds on
200 with an empty ListResponse. The portal sends that very request to the tenant's SCIM endpoint
in-process (the adapter passes a :data:`Probe` that calls the SCIM function with a synthetic
request: no network), and :func:`verdict` says in words what Entra will report.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["LIST_RESPONSE", "Probe", "ProbeResult", "Verdict", "check_connection", "entra_test_filter", "verdict"]

LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"


@dataclass(frozen=True)
class ProbeResult:
    """The SCIM endpoint's answer: status and parsed JSON body (None when it had none)."""

    status: int
    body: Any = None


Probe = Callable[[str, str, str], Awaitable[ProbeResult]]
"""``probe(tenant, token, filter)``: ``GET /scim/{tenant}/Users?filter=...`` with the token as a bearer."""


@dataclass(frozen=True)
class Verdict:
    """``ok``: Entra's test will succeed; ``headline`` and ``detail`` say it for the admin."""

    ok: bool
    status: int
    headline: str
    detail: str


def entra_test_filter() -> str:
    """The filter of Entra's test request: a user that certainly does not exist."""
    return f'userName eq "{uuid.uuid4()}"'


def verdict(result: ProbeResult) -> Verdict:
    """What Entra will report for the endpoint's answer ``result``."""
    status, body = result.status, result.body if isinstance(result.body, dict) else {}
    if status == 200 and LIST_RESPONSE in (body.get("schemas") or []) and body.get("totalResults") == 0:
        return Verdict(
            True,
            status,
            "Test connection will succeed.",
            "The service answered Entra's test request with 200 and an empty list, as Entra expects. "
            "Paste this Secret Token in Entra under Admin Credentials, click Test connection, then Save.",
        )
    if status == 401:
        return Verdict(
            False,
            status,
            "Entra will report invalid credentials.",
            "This Secret Token does not work for this Tenant URL: it is mistyped, revoked, expired, or was "
            "replaced (Regenerate token makes every other token fail at once, Rotate token after its overlap). "
            "Paste the current Secret Token, or make a new one.",
        )
    if status in (500, 502, 503, 504):
        return Verdict(
            False,
            status,
            "Entra's test would fail now: the service is temporarily unavailable.",
            f"The service answered {status}. Try again in a minute; if it persists, tell your provider.",
        )
    detail = body.get("detail")
    said = f": {detail}" if isinstance(detail, str) and detail else ""
    return Verdict(
        False,
        status,
        "Entra will report an error.",
        f"The service answered {status} to Entra's test request instead of 200 with an empty list{said}.",
    )


async def check_connection(probe: Probe, tenant: str, token: str) -> Verdict:
    """Send Entra's test request for ``tenant`` with ``token`` and say what Entra will see."""
    return verdict(await probe(tenant, token, entra_test_filter()))
