"""The failure digest (scim.notify.digest): content, escaping, alerts (docs/ENTRA.md §6) and bounds."""

from __future__ import annotations

import re
import time

from scim.notify.digest import DETAIL_LIMIT, MAX_WEBHOOK_ROWS, Digest, Failure, build_digest, shown_url
from scim.webhooks import DISABLED, WebhookEndpoint

WINDOW = {"window_start": "2026-11-26T10:00:00Z", "window_end": "2026-11-26T10:10:00Z"}


def _conflict(n: int, second: int) -> Failure:
    return Failure(
        time=f"2026-11-26T10:00:{second:02d}.{n:03d}Z",
        operation="POST /Users",
        status=409,
        correlation_id=f"corr-409-{n}",
        resource_type="User",
        scim_type="uniqueness",
        detail="userName is already taken",
        subject=f"user{n}@contoso.com",
    )


def _failures() -> list[Failure]:
    """3 409s on POST /Users, 2 400s on PATCH /Users/{id}, 1 404 on PATCH /Groups/{id}."""
    return [
        _conflict(1, 30),
        Failure(
            "2026-11-26T10:07:59Z",  # the last one, without fraction (sorts before ".xxxZ" as text)
            "PATCH /Users/{id}",
            400,
            "corr-400-a",
            "User",
            "2819c223-7f76-453a-919d-413861904646",
            "invalidValue",
            "Attribute 'active' must be a boolean",
        ),
        _conflict(2, 12),
        Failure(
            "2026-11-26T10:00:05.250Z",  # the first one
            "PATCH /Groups/{id}",
            404,
            "corr-404",
            "Group",
            "e9e30dba-f08f-4109-8486-d5c6a331660a",
            detail="Resource e9e30dba-f08f-4109-8486-d5c6a331660a not found",
        ),
        Failure(
            "2026-11-26T10:03:00.5Z",
            "PATCH /Users/{id}",
            400,
            "corr-400-b",
            "User",
            "2819c223-7f76-453a-919d-413861904646",
            "invalidValue",
            "Attribute 'active' must be a boolean",
        ),
        _conflict(3, 40),
    ]


def _digest(failures: list[Failure], total: int = 200, **kwargs: object) -> Digest:
    return build_digest("contoso", failures, total, **WINDOW, **kwargs)  # type: ignore[arg-type]


def _section(text: str, title: str) -> str:
    """The lines of a text section, up to the next blank line."""
    return text.split(f"\n{title}\n", 1)[1].split("\n\n", 1)[0]


def test_counts_by_operation_and_status_most_frequent_first() -> None:
    d = _digest(_failures(), tenant_url="https://scim.example.net/scim/contoso")
    assert d.failures == 6 and not d.alert
    assert d.subject == "SCIM provisioning: 6 failures for tenant contoso"
    assert "tenant contoso" in d.text and "https://scim.example.net/scim/contoso" in d.text
    rows = [line.split(None, 2) for line in _section(d.text, "By operation and status").splitlines()[1:]]
    assert rows == [["3", "409", "POST /Users"], ["2", "400", "PATCH /Users/{id}"], ["1", "404", "PATCH /Groups/{id}"]]
    assert "6 failures of 200 requests (3 %)" in d.text


def test_window_and_first_and_last_failure_times() -> None:
    d = _digest(_failures())
    assert "2026-11-26T10:00:00Z to 2026-11-26T10:10:00Z" in d.text
    assert "first 2026-11-26T10:00:05.250Z, last 2026-11-26T10:07:59Z" in d.text


def test_top_errors_grouped_with_count_and_detail() -> None:
    d = _digest(_failures(), max_errors=2)
    errors = _section(d.text, "Most frequent errors")
    assert re.search(r"3 x 409 uniqueness: userName is already taken\n\s+e\.g\. correlation id corr-409-1", errors)
    assert "2 x 400 invalidValue: Attribute 'active' must be a boolean" in errors
    assert "404" not in errors.split("and 1 more")[0]  # the third group is left out
    assert errors.rstrip().endswith("and 1 more kinds of error")


def test_affected_resources_capped_with_and_n_more() -> None:
    failures = [_conflict(n, n % 60) for n in range(30)]
    d = _digest(failures, max_resources=5)
    resources = _section(d.text, "Affected resources").splitlines()
    assert resources[:5] == [f"  - User user{n}@contoso.com: 1 failure, last 409" for n in range(5)]
    assert resources[5:] == ["  and 25 more"]
    assert "and 25 more" in d.html


def test_resources_by_id_carry_the_subject_and_most_failures_come_first() -> None:
    extra = Failure("2026-11-26T10:09:00Z", "PATCH /Users/{id}", 400, "c", "User", "u-1", subject="x@y")
    failures = [*_failures(), extra]
    resources = _section(_digest(failures).text, "Affected resources").splitlines()
    assert resources[0] == "  - User 2819c223-7f76-453a-919d-413861904646: 2 failures, last 400"
    assert "  - User u-1 (x@y): 1 failure, last 400" in resources


def test_hostile_data_is_escaped_in_html() -> None:
    hostile = '<script>alert("x")</script>'
    failure = Failure(
        "2026-11-26T10:00:01Z",
        f"POST /Users{hostile}",
        400,
        f"corr{hostile}",
        "User",
        f"id{hostile}",
        f"invalidValue{hostile}",
        f"bad value {hostile}\r\nBcc: victim@example.com",
        subject=f"<img src=x onerror=alert(1)>{hostile}",
    )
    d = build_digest(
        f"evil{hostile}",
        [failure],
        10,
        window_start=f"2026-11-26T10:00:00Z{hostile}",
        window_end="2026-11-26T10:10:00Z",
        tenant_url=f"https://x/{hostile}",
    )
    assert "<script" not in d.html and "<img" not in d.html
    assert d.html.count("&lt;script&gt;") >= 8
    assert "\n" not in d.subject and "\r" not in d.subject
    assert 'bad value <script>alert("x")</script> Bcc: victim@example.com' in d.text  # one line in the text


def test_details_are_truncated() -> None:
    failure = Failure("2026-11-26T10:00:01Z", "POST /Users", 400, "c", detail="x" * 5000)
    d = _digest([failure])
    assert "x" * DETAIL_LIMIT not in d.text
    assert "x" * (DETAIL_LIMIT - 1) + "…" in d.text


def test_alert_above_40_percent_with_enough_requests() -> None:
    failures = [_conflict(n, n % 60) for n in range(87)]
    d = _digest(failures, total=140)
    assert d.alert
    assert d.subject == "ALERT: SCIM provisioning: 87 failures for tenant contoso"
    assert d.text.startswith("ALERT: 62.1 % of 140 requests failed (Entra quarantines a job above 40 %).")
    assert "<strong>ALERT:</strong> 62.1 % of 140 requests failed" in d.html


def test_no_alert_at_40_percent_or_under_the_minimum_of_requests() -> None:
    assert not _digest([_conflict(n, n) for n in range(8)], total=20).alert  # exactly 40 %
    assert _digest([_conflict(n, n) for n in range(9)], total=20).alert  # 45 % of 20
    small = _digest([_conflict(n, n) for n in range(10)], total=19)  # 53 %, but only 19 requests
    assert not small.alert
    assert not small.subject.startswith("ALERT") and not small.text.startswith("ALERT")


def test_refused_tokens_alert_only_on_evidence_that_entras_token_fails() -> None:
    """A 401 alone proves nothing (anyone may send one): it is reported, not alerted, unless the
    caller found evidence that Entra's own token fails (``credential_alert``)."""
    conflict = _conflict(1, 1)
    calm = _digest([conflict], total=1000, unauthenticated=30)
    assert not calm.alert and not calm.subject.startswith("ALERT")
    assert "Refused:  30 requests with a missing or wrong token (401, not in the totals)" in calm.text
    assert "token regenerate" not in calm.text
    alert = _digest([], total=0, unauthenticated=3, credential_alert=True)
    assert (
        alert.alert
        and alert.subject == "ALERT: SCIM provisioning: 3 requests refused (wrong or missing token) for tenant contoso"
    )
    assert alert.text.startswith("ALERT: 3 requests refused for a wrong or missing token (401) and none accepted")
    assert "python -m scim.admin token regenerate contoso" in alert.text
    assert (
        "<strong>ALERT:</strong> 3 requests refused" in alert.html and "<td" in alert.html and "Refused" in alert.html
    )


def test_burst_of_10000_failures_stays_bounded() -> None:
    failures = [
        Failure(
            time=f"2026-11-26T10:{n // 1000:02d}:{n % 60:02d}.{n % 1000:03d}Z",
            operation=("POST /Users", "PATCH /Users/{id}", "PATCH /Groups/{id}")[n % 3],
            status=(400, 409, 500, 404)[n % 4],
            correlation_id=f"{n:032x}",
            resource_type="User",
            resource_id=f"{n:08d}-0000-0000-0000-000000000000",
            scim_type="invalidValue",
            detail=f"failure number {n} " + "y" * 2000,
            subject=f"user{n}@contoso.com",
        )
        for n in range(10_000)
    ]
    started = time.perf_counter()
    d = _digest(failures, total=12_000)
    elapsed = time.perf_counter() - started
    assert len(d.text.encode()) < 64 * 1024
    assert len(d.html.encode()) < 128 * 1024
    assert d.failures == 10_000 and d.alert
    assert "10,000 failures of 12,000 requests" in d.text
    assert "and 9,980 more" in d.text
    assert elapsed < 5, f"digest of 10,000 failures took {elapsed:.2f} s"


# ---- webhook endpoints failing or disabled (issue 12) -------------------------------------------


def _endpoint(n: int, url: str = "https://hooks.example.com/scim", **fields: str) -> WebhookEndpoint:
    defaults = {
        "failing_since": "2026-11-26T09:40:00.000Z",
        "last_error": "HTTP 503 Service Unavailable",
        "last_error_at": "2026-11-26T10:05:00.000Z",
    }
    return WebhookEndpoint(
        id=f"ep_{n:032x}",
        url=url,
        tenants=None,
        events=None,
        created="2026-11-20T00:00:00.000Z",
        secret="whsec-signing-secret",
        previous_secret="whsec-previous-secret",
        **{**defaults, **fields},  # type: ignore[arg-type]
    )


def _gone(n: int) -> WebhookEndpoint:
    return _endpoint(
        n,
        "https://old.example.net/hook",
        state=DISABLED,
        disabled_reason="the receiver answered 410 Gone",
        disabled_at="2026-11-26T10:06:00.000Z",
        last_error="HTTP 410 Gone",
        last_error_at="2026-11-26T10:06:00.000Z",
    )


def test_webhook_endpoints_alone_make_a_digest_with_what_to_do() -> None:
    failing = _endpoint(1, "https://hooks.example.com/scim?code=fn-key-5ecret")
    d = _digest([], total=0, webhooks=[failing, _gone(2)], events_retention_days=30)
    assert d.failures == 0 and d.webhooks == 2 and not d.alert
    assert d.subject == "SCIM webhooks: 1 endpoint disabled, 1 endpoint failing for tenant contoso"
    assert d.text.startswith("SCIM webhook endpoints failing or disabled for tenant contoso\n")
    assert "By operation and status" not in d.text and "Entra admin center" not in d.text
    section = _section(d.text, "Webhook endpoints failing or disabled").splitlines()
    assert section == [
        f"  - ep_{2:032x} https://old.example.net/hook",  # disabled ones first
        "    DISABLED 2026-11-26T10:06:00.000Z: the receiver answered 410 Gone",
        "    failing since 2026-11-26T09:40:00.000Z",
        "    last error 2026-11-26T10:06:00.000Z: HTTP 410 Gone",
        f"  - ep_{1:032x} https://hooks.example.com/scim?…",
        "    failing since 2026-11-26T09:40:00.000Z",
        "    last error 2026-11-26T10:05:00.000Z: HTTP 503 Service Unavailable",
    ]
    advice = _section(d.text, "What to do")
    assert "`python -m scim.admin webhook list`" in advice and "fix the receiver" in advice.lower()
    assert "`python -m scim.admin webhook enable ID`" in advice and "resumes where it stopped" in advice
    assert "30 days (EVENTS_RETENTION_DAYS)" in advice
    assert "<h3>Webhook endpoints failing or disabled</h3>" in d.html and f"ep_{2:032x}" in d.html
    for secret in ("fn-key-5ecret", "whsec-signing-secret", "whsec-previous-secret"):
        assert secret not in d.text and secret not in d.html and secret not in d.subject


def test_a_failing_endpoint_without_a_disabled_one_gets_no_enable_advice() -> None:
    d = _digest([], total=0, webhooks=[_endpoint(1)])
    assert d.subject == "SCIM webhooks: 1 endpoint failing for tenant contoso"
    assert "webhook list" in d.text and "webhook enable" not in d.text


def test_webhooks_join_the_provisioning_digest() -> None:
    d = _digest(_failures(), webhooks=[_gone(1)])
    assert d.subject == "SCIM provisioning: 6 failures for tenant contoso; webhooks: 1 endpoint disabled"
    assert d.text.startswith("SCIM provisioning failures for tenant contoso\n")
    assert "By operation and status" in d.text and "Webhook endpoints failing or disabled" in d.text
    advice = _section(d.text, "What to do")
    assert "Entra admin center" in advice and "webhook enable ID" in advice


def test_webhook_data_is_cleaned_and_escaped() -> None:
    hostile = '<script>alert("x")</script>'
    endpoint = _endpoint(
        1,
        f"https://hooks.example.com/{hostile}",
        state=DISABLED,
        disabled_reason=f"gone {hostile}\r\nBcc: victim@example.com",
        disabled_at="2026-11-26T10:06:00.000Z",
        last_error=f"HTTP 500 {hostile}\n" + "e" * 5000,
    )
    d = _digest([], total=0, webhooks=[endpoint])
    assert "<script" not in d.html and "&lt;script&gt;" in d.html
    assert 'gone <script>alert("x")</script> Bcc: victim@example.com' in d.text  # one line
    assert "e" * DETAIL_LIMIT not in d.text and "e" * 10 + "…" in d.text


def test_webhook_endpoints_are_capped() -> None:
    d = _digest([], total=0, webhooks=[_endpoint(n) for n in range(MAX_WEBHOOK_ROWS + 5)])
    assert d.webhooks == MAX_WEBHOOK_ROWS + 5
    assert d.subject == f"SCIM webhooks: {MAX_WEBHOOK_ROWS + 5} endpoints failing for tenant contoso"
    assert d.text.count("    failing since ") == MAX_WEBHOOK_ROWS and "  and 5 more" in d.text


def test_shown_url_hides_the_query_and_user_info() -> None:
    assert shown_url("https://h.example.com:8443/a/b?code=k&x=1") == "https://h.example.com:8443/a/b?…"
    assert shown_url("https://user:pw@h.example.com/p") == "https://h.example.com/p"
    assert shown_url("http://[::1]:8080/hook") == "http://[::1]:8080/hook"
    assert shown_url("http://[::1") == "(an unparsable URL)"
