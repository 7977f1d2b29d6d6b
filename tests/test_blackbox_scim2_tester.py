"""scim2-tester (RFC 7643/7644 compliance checks) against the app over HTTP, on a fresh tenant.

``check_server`` reads the discovery endpoints, builds the resource models from what the service
publishes, then runs CRUD, query and PATCH checks per resource type and attribute. Every result
is counted by status; a summary is printed at the end of the run (``tests/localhost_server.py``).
The test fails on any ERROR or CRITICAL result (violations of RFC MUSTs, or security issues).
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from typing import Any

import pytest

from tests.localhost_server import LocalServer, record_summary

httpx2 = pytest.importorskip("httpx2", reason="scim2-client's httpx2 engine: pip install 'scim2-client[httpx2]'")
from scim2_client.engines.httpx2 import SyncSCIMClient  # noqa: E402
from scim2_tester import CheckResult, Status, check_server  # noqa: E402

FAILING = (Status.ERROR, Status.CRITICAL)
REQUEST_TIMEOUT = 15.0


def _data_text(data: Any, limit: int = 1500) -> str:
    if data is None:
        return ""
    if hasattr(data, "model_dump"):
        with contextlib.suppress(Exception):  # best effort, for display only
            data = data.model_dump(mode="json", exclude_none=True)
    try:
        text = json.dumps(data, default=str)
    except (TypeError, ValueError):
        text = repr(data)
    return text if len(text) <= limit else text[:limit] + "..."


def _shorten(value: Any, keep: int = 16) -> Any:
    """``value`` with long strings cut (scim2-tester fills attributes with UUIDs): shows the shape."""
    if isinstance(value, str):
        return value if len(value) <= keep + 3 else value[:keep] + "..."
    if isinstance(value, list):
        return [_shorten(v, keep) for v in value]
    if isinstance(value, dict):
        return {k: v if k == "schemas" else _shorten(v, keep) for k, v in value.items()}
    return value


def _compact_json(text: str) -> str:
    try:
        return json.dumps(_shorten(json.loads(text)), separators=(",", ":"))
    except ValueError:
        return text


def _exchange(exc: BaseException, limit: int = 1500) -> list[str]:
    """The cause of a scim2-client error and the HTTP exchange it carries, when it has one."""
    lines = []
    if exc.__cause__ is not None:
        cause = " | ".join(line.strip() for line in str(exc.__cause__).splitlines() if line.strip())
        lines.append(f"    cause: {cause[:limit]}")
    response = getattr(exc, "source", None)
    request = getattr(response, "request", None)
    if request is not None and hasattr(response, "status_code"):
        content = (getattr(request, "content", b"") or b"").decode("utf-8", errors="replace")
        lines.append(f"    request: {request.method} {request.url} {content[:limit]}".rstrip())
        text = _compact_json(response.text)
        text = text if len(text) <= 2 * limit else text[: 2 * limit] + "..."
        lines.append(f"    response: {response.status_code} {text}".rstrip())
    return lines


def _describe(result: CheckResult) -> str:
    where = f"{result.resource_type}: " if result.resource_type else ""
    lines = [f"- [{result.status.name}] {where}{result.title}: {result.reason}"]
    data = result.data
    errors = [v for v in (data.values() if isinstance(data, dict) else [data]) if isinstance(v, BaseException)]
    for exc in errors:
        lines += _exchange(exc)
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if not isinstance(v, BaseException)}
    text = "" if isinstance(data, BaseException) else _data_text(data)
    if text:
        lines.append(f"    data: {text}")
    return "\n".join(lines)


def test_scim2_tester(local_server: LocalServer) -> None:
    creds = local_server.create_tenant("tester")
    with httpx2.Client(
        base_url=creds.url,
        headers={"Authorization": f"Bearer {creds.token}"},
        timeout=REQUEST_TIMEOUT,
    ) as http:
        client = SyncSCIMClient(http)
        results = check_server(client)

    counts = Counter(r.status for r in results)
    failing = [r for r in results if r.status in FAILING]
    lines = [f"tenant {creds.tenant}: {len(results)} checks"]
    lines += [f"{status.name:<10} {counts.get(status, 0)}" for status in Status]
    skipped = [r for r in results if r.status == Status.SKIPPED]
    if skipped:
        lines.append("skipped:")
        lines += [f"- {r.resource_type + ': ' if r.resource_type else ''}{r.title}: {r.reason}" for r in skipped]
    notable = [r for r in results if r.status in (Status.DEVIATION, *FAILING)]
    if notable:
        lines.append("deviations, errors and critical results:")
        lines += [_describe(r) for r in notable]
    summary = "\n".join(lines).replace(creds.token, "<token>")
    print(summary)
    record_summary("scim2-tester", summary)

    assert results, "scim2-tester ran no check"
    assert counts.get(Status.SUCCESS, 0) > 0, "no scim2-tester check succeeded"
    assert not failing, (
        f"{len(failing)} scim2-tester ERROR/CRITICAL result(s) (responses in the scim2-tester summary):\n"
        + "\n".join(f"- [{r.status.name}] {r.resource_type or ''} {r.title}: {r.reason}" for r in failing)
    )
