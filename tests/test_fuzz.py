"""Property-based tests (hypothesis) of hostile and malformed input (issue #6).

Filters, PATCH documents, resource bodies (structured and raw bytes), URL paths, query
parameters and headers are generated and sent through the registered Functions entry point
(:class:`tests.functions_client.FunctionsClient`). Every answer must be:

- no 5xx, within :data:`CASE_BOUND` seconds (a hang fails at :data:`CASE_TIMEOUT`);
- a status the endpoint may give for that input, and for an error a SCIM Error message
  (RFC 7644 §3.12) with the ``scimType`` that kind of input calls for;
- valid, strict JSON (no ``NaN``/``Infinity``, encodable as UTF-8), with the security headers;
- for a refused PATCH or PUT, the resource unchanged (RFC 7644 §3.5.2: all or nothing).

These test the parsing layers, so they run on :class:`MemoryStore` with a provisioning log
whose ``record`` does nothing (storage is covered on Azurite by test_limits/test_security).
Each test has a fixed ``max_examples`` and ``derandomize=True`` (the same cases on every run,
for CI); the number of cases run is printed at the end of the session.
"""

from __future__ import annotations

import asyncio
import json
import os
import string
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scim.core.filtering import parse_filter
from scim.core.jsonbody import MAX_DEPTH, _depth_ok
from scim.core.schema import ENTERPRISE_USER_URN
from scim.functions.runtime import use_runtime
from tests.functions_client import FunctionsClient, Response
from tests.helpers import memory_runtime
from tests.localhost_server import record_summary

ERROR_URN = "urn:ietf:params:scim:api:messages:2.0:Error"
PATCH_URN = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
USER_URN = "urn:ietf:params:scim:schemas:core:2.0:User"
CUSTOM_URN = "urn:ietf:params:scim:schemas:extension:Custom:2.0:User"

# RFC 7644 §3.12, Table 9; RFC 9865 §2.4 (cursor pagination).
SCIM_TYPES = {
    "invalidFilter",
    "tooMany",
    "uniqueness",
    "mutability",
    "invalidSyntax",
    "invalidPath",
    "noTarget",
    "invalidValue",
    "invalidVers",
    "sensitive",
    "invalidCursor",
    "expiredCursor",
}

CASE_BOUND = 2.0
"""Seconds one generated request may take (memory store; the slowest seen is ~0.05 s)."""
CASE_TIMEOUT = 10.0
"""A request still running after this long is a hang: the case fails."""

CASES: Counter[str] = Counter()


def fuzz_settings(examples: int) -> settings:
    """Fixed number of cases, same cases every run (CI), no deadline: time is bounded per case.

    ``SCIM_FUZZ_SCALE=20`` runs twenty times as many cases, with fresh randomness (bug hunting).
    """
    scale = int(os.environ.get("SCIM_FUZZ_SCALE") or 1)
    return settings(
        max_examples=examples * scale,
        deadline=None,
        derandomize=scale == 1,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# ---- the harness: a memory runtime and an event loop for the synchronous hypothesis tests ----


class Harness:
    """One memory runtime, installed as the process runtime, and a loop to drive requests."""

    def __init__(self) -> None:
        parse_filter('userName eq "warm-up"')  # imports scim2_models (about a second) outside the timed cases
        self.loop = asyncio.new_event_loop()
        self.runtime = memory_runtime()
        use_runtime(self.runtime)
        self._tenants = 0

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, CASE_TIMEOUT))

    def tenant(self) -> FunctionsClient:
        self._tenants += 1
        name = f"fuzz{self._tenants}"
        return FunctionsClient(name, self.run(self.runtime.tenants.create(name)))

    def close(self) -> None:
        self.run(self.runtime.log_writer.drain())
        use_runtime(None)
        self.loop.close()


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    built = Harness()
    yield built
    built.close()
    total = sum(CASES.values())
    lines = [f"{name:<40} {count:>6} cases" for name, count in sorted(CASES.items())]
    lines.append(f"{'total':<40} {total:>6} cases")
    text = "\n".join(lines)
    print("\nhypothesis cases run:\n" + text)
    record_summary("hypothesis: generated hostile and malformed input", text)


def send(h: Harness, client: FunctionsClient, method: str, path: str, body: Any = None, **kw: Any) -> Response:
    """One request, timed: fails past CASE_BOUND (and at CASE_TIMEOUT for a hang)."""
    started = time.perf_counter()
    response: Response = h.run(client.request(method, path, body, **kw))
    elapsed = time.perf_counter() - started
    assert elapsed < CASE_BOUND, f"{method} {path[:80]} took {elapsed:.2f} s"
    return response


def check(response: Response, statuses: set[int], scim_types: set[str | None] | None = None) -> dict[str, Any] | None:
    """The invariants of every answer; returns the parsed body."""
    assert response.status < 500 or (response.status == 501 and 501 in statuses), response.body[:500]
    assert response.status in statuses, (response.status, response.body[:500])
    assert response.headers.get("cache-control") == "no-store"
    assert response.headers.get("x-content-type-options") == "nosniff"
    if not response.body:
        assert response.status in (204, 304), response.status
        return None
    assert response.content_type.startswith("application/scim+json")
    body = json.loads(response.body.decode("utf-8"), parse_constant=_no_constant)
    if response.status >= 400:
        assert body["schemas"] == [ERROR_URN] and body["status"] == str(response.status), body
        assert isinstance(body.get("detail"), str) and body["detail"], body
        assert "Traceback" not in body["detail"]
        scim_type = body.get("scimType")
        assert scim_type is None or scim_type in SCIM_TYPES, body
        if scim_types is not None and response.status == 400:
            assert scim_type in scim_types, body
    return body  # type: ignore[no-any-return]


def _no_constant(name: str) -> Any:
    raise AssertionError(f"the response holds {name}, which is not JSON")


# ---- strategies ------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["True", "False", "true", "", " ", "null", '{"value":"x"}', "{", "[]", "\\ud800"]),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)

ATTRIBUTE_NAMES = [
    "userName",
    "UserName",
    "displayName",
    "active",
    "Active",
    "title",
    "externalId",
    "nickName",
    "name",
    "name.givenName",
    "name.familyName",
    "emails",
    "phoneNumbers",
    "addresses",
    "roles",
    "members",
    "groups",
    "id",
    "meta",
    "schemas",
    "password",
    "preferredLanguage",
    "x509Certificates",
    ENTERPRISE_USER_URN,
    f"{ENTERPRISE_USER_URN}:manager",
    f"{ENTERPRISE_USER_URN}:department",
    CUSTOM_URN,
    f"{CUSTOM_URN}:badge",
    f"{USER_URN}:userName",
    USER_URN,
    "urn:",
    "urn:x",
    "$ref",
    "",
    'emails[type eq "work"].value',
    'phoneNumbers[type eq "mobile"].value',
    'members[value eq "x"]',
    "emails.value",
]
attribute_names = st.sampled_from(ATTRIBUTE_NAMES) | st.text(max_size=15)

FILTER_ATTRIBUTES = [
    "userName",
    "USERNAME",
    "externalId",
    "id",
    "displayName",
    "active",
    "title",
    "emails",
    "emails.value",
    "emails.type",
    "name.givenName",
    "meta.created",
    "meta.lastModified",
    "members",
    "members.value",
    "groups",
    f"{ENTERPRISE_USER_URN}:department",
    f"{ENTERPRISE_USER_URN}:manager.value",
    f"{USER_URN}:userName",
    f"{CUSTOM_URN}:badge",
    "x",
    "urn:x:y",
    "a.b.c",
    'emails[type eq "work"]',
]
filter_attributes = st.sampled_from(FILTER_ATTRIBUTES) | st.text(
    alphabet=string.ascii_letters + string.digits + ".:$_-", min_size=1, max_size=12
)
filter_ops = st.sampled_from(["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le", "EQ", "Eq", "pr", "xx"])
filter_literals = st.one_of(
    st.text(max_size=15).map(json.dumps),
    st.text(max_size=15).map(lambda s: json.dumps(s, ensure_ascii=False)),
    st.integers().map(str),
    st.floats(allow_nan=False).map(repr),
    st.sampled_from(
        ["true", "false", "null", "True", "bob", '"2026-11-26T10:00:00Z"', '"\\ud800"', '"unterminated', '"\\""']
    ),
)
comparisons = st.builds(lambda a, o, v: f"{a} {o} {v}", filter_attributes, filter_ops, filter_literals)
presences = filter_attributes.map(lambda a: f"{a} pr")
filters = st.recursive(
    comparisons | presences,
    lambda inner: st.one_of(
        st.builds(lambda a, b, j: f"{a} {j} {b}", inner, inner, st.sampled_from(["and", "or", "AND", "Or", "xor"])),
        inner.map(lambda f: f"not ({f})"),
        inner.map(lambda f: f"({f})"),
        st.builds(lambda a, f: f"{a}[{f}]", st.sampled_from(["emails", "members", "addresses", "x"]), inner),
        st.builds(lambda f, v: f"emails[{f}].value eq {v}", inner, filter_literals),
    ),
    max_leaves=6,
)
filter_noise = st.text(alphabet=' ()[]"\\.:abeqnotrpwsi0123456789', max_size=60)
any_filter = st.one_of(filters, filter_noise, st.text(max_size=80), filters.map(lambda f: f[: len(f) // 2]))

PATCH_PATHS = [
    "userName",
    "displayName",
    "active",
    "title",
    "externalId",
    "name.givenName",
    "name.familyName",
    "emails",
    'emails[type eq "work"].value',
    'emails[type eq "work"]',
    'emails[value co "@"].display',
    'phoneNumbers[type eq "mobile"].value',
    'addresses[type eq "work"].formatted',
    "addresses[type eq 1].formatted",
    "roles",
    "members",
    'members[value eq "x"]',
    'members[type eq "User"]',
    "members.value",
    "groups",
    "id",
    "meta.version",
    "schemas",
    "password",
    f"{ENTERPRISE_USER_URN}:manager",
    f"{ENTERPRISE_USER_URN}:department",
    ENTERPRISE_USER_URN,
    CUSTOM_URN,
    f"{CUSTOM_URN}:badge",
    "name.givenName.x",
    "x[",
    "emails[",
    "]",
    "",
]
patch_paths = st.one_of(
    st.sampled_from(PATCH_PATHS),
    st.text(max_size=20),
    filters.map(lambda f: f"emails[{f}].value"),
    filters.map(lambda f: f"members[{f}]"),
)
patch_values = st.one_of(
    json_values,
    st.sampled_from(["True", "False", True, False, "", None, [], {}]),
    st.lists(
        st.fixed_dictionaries(
            {"value": st.text(max_size=10)},
            optional={
                "type": st.sampled_from(["User", "Group", "x"]),
                "$ref": st.none(),
                "display": st.text(max_size=5),
            },
        ),
        max_size=3,
    ),
    st.dictionaries(attribute_names, json_values, max_size=4),
)
op_names = st.sampled_from(["add", "Add", "ADD", "replace", "Replace", "remove", "Remove", "move", "", 1])


@st.composite
def operations(draw: Any) -> dict[str, Any]:
    op: dict[str, Any] = {draw(st.sampled_from(["op", "OP", "Op"])): draw(op_names)}
    if draw(st.booleans()):
        op[draw(st.sampled_from(["path", "Path"]))] = draw(patch_paths | st.none() | st.integers())
    if draw(st.booleans()):
        op[draw(st.sampled_from(["value", "Value"]))] = draw(patch_values)
    return op


patch_bodies = st.one_of(
    st.builds(lambda ops: {"schemas": [PATCH_URN], "Operations": ops}, st.lists(operations(), max_size=4)),
    st.builds(lambda ops: {"operations": ops}, st.lists(operations(), min_size=1, max_size=3)),
    st.builds(lambda s, ops: {"schemas": s, "Operations": ops}, json_values, json_values),
    json_values,
)


@st.composite
def user_bodies(draw: Any) -> Any:
    body: dict[str, Any] = {}
    if draw(st.integers(0, 9)):  # mostly with a userName, sometimes of the wrong type
        body[draw(st.sampled_from(["userName", "UserName", "username"]))] = draw(
            st.one_of(st.text(min_size=1, max_size=20), json_scalars, st.just("dup@contoso.com"))
        )
    for name, value in draw(st.dictionaries(attribute_names, patch_values, max_size=5)).items():
        body.setdefault(name, value)
    return body


@st.composite
def group_bodies(draw: Any) -> Any:
    body: dict[str, Any] = {"displayName": draw(st.one_of(st.text(min_size=1, max_size=20), json_scalars))}
    if draw(st.booleans()):
        body["members"] = draw(patch_values)
    for name, value in draw(st.dictionaries(attribute_names, json_values, max_size=3)).items():
        body.setdefault(name, value)
    return body


VALID_USER_TEXT = json.dumps(
    {"userName": "raw@contoso.com", "name": {"givenName": "R"}, "emails": [{"value": "r@x", "type": "work"}]}
)


@st.composite
def mutated_json(draw: Any) -> bytes:
    """A valid body, truncated or with a character inserted or replaced: mostly invalid JSON."""
    text = draw(
        st.sampled_from(
            [
                VALID_USER_TEXT,
                json.dumps({"schemas": [PATCH_URN], "Operations": [{"op": "add", "path": "title", "value": "x"}]}),
            ]
        )
    )
    position = draw(st.integers(0, len(text)))
    kind = draw(st.sampled_from(["truncate", "insert", "replace"]))
    char = draw(st.sampled_from([*list('{}[]",:\\ 0e-'), "\x00", "é", "\\u", "\\ud800", "NaN", "1e999"]))
    if kind == "truncate":
        text = text[:position]
    elif kind == "insert":
        text = text[:position] + char + text[position:]
    else:
        text = text[:position] + char + text[position + 1 :]
    return text.encode("utf-8")


raw_bodies = st.one_of(
    st.binary(max_size=200),
    mutated_json(),
    st.sampled_from(
        [
            b"",
            b" ",
            b"null",
            b"[]",
            b"\xef\xbb\xbf{}",
            b'{"userName":"a","userName":"b"}',
            b"[1e999]",
            b'{"userName":NaN}',
            b'{"userName":"\\ud800"}',
            b"\xff\xfe{",
            b'{"a":' * 40 + b"1" + b"}" * 40,
        ]
    ),
)

# ---- the tests --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeded(harness: Harness) -> dict[str, Any]:
    """A tenant holding a user, a second user (for uniqueness) and a group."""
    client = harness.tenant()
    user = check(
        send(
            harness,
            client,
            "POST",
            "/Users",
            {"userName": "fuzz@contoso.com", "emails": [{"value": "f@contoso.com", "type": "work"}]},
        ),
        {201},
    )
    check(send(harness, client, "POST", "/Users", {"userName": "dup@contoso.com"}), {201})
    group = check(send(harness, client, "POST", "/Groups", {"displayName": "Fuzzers"}), {201})
    return {"client": client, "user": user, "group": group}


@fuzz_settings(400)
@given(expression=any_filter, endpoint=st.sampled_from(["/Users", "/Groups"]), via_search=st.booleans())
def test_filters_answer_200_or_400_invalid_filter(
    harness: Harness, seeded: dict[str, Any], expression: str, endpoint: str, via_search: bool
) -> None:
    """RFC 7644 §3.4.2.2: a filter that does not parse or is not supported is 400 invalidFilter."""
    CASES["filters"] += 1
    client = seeded["client"]
    if via_search:
        response = send(
            harness,
            client,
            "POST",
            f"{endpoint}/.search",
            {"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": expression},
        )
    else:
        response = send(harness, client, "GET", endpoint, params={"filter": expression})
    body = check(response, {200, 400}, {"invalidFilter"})
    if response.status == 200:
        assert body is not None and body["totalResults"] == len(body["Resources"])


@fuzz_settings(300)
@given(body=patch_bodies, target=st.sampled_from(["user", "group"]))
def test_patch_documents_answer_the_right_status_and_change_nothing_when_refused(
    harness: Harness, seeded: dict[str, Any], body: Any, target: str
) -> None:
    """RFC 7644 §3.5.2: a PATCH applies entirely or answers 4xx and changes nothing."""
    CASES["patch documents"] += 1
    client = seeded["client"]
    resource = seeded[target]
    path = f"/{'Users' if target == 'user' else 'Groups'}/{resource['id']}"
    reset = {"userName": "fuzz@contoso.com"} if target == "user" else {"displayName": "Fuzzers", "members": []}
    check(send(harness, client, "PUT", path, reset), {200})
    before = check(send(harness, client, "GET", path), {200})
    response = send(harness, client, "PATCH", path, body)
    ok = 200 if target == "user" else 204
    check(
        response,
        {ok, 400, 409},
        {"invalidSyntax", "invalidPath", "invalidValue", "noTarget", "mutability", "tooMany", "invalidFilter"},
    )
    after = check(send(harness, client, "GET", path), {200})
    if response.status >= 400:
        assert after == before, "a refused PATCH changed the resource"
    elif target == "user":
        assert response.json == after, "the PATCH response is the stored resource"


@fuzz_settings(250)
@given(body=st.one_of(user_bodies(), json_values), replace=st.booleans())
def test_user_bodies_are_created_as_sent_or_refused_with_invalid_value(
    harness: Harness, seeded: dict[str, Any], body: Any, replace: bool
) -> None:
    """RFC 7644 §3.3, §3.5.1: POST/PUT answer 201/200 with a resource that reads back the same, or 400/409."""
    CASES["user bodies (POST, PUT)"] += 1
    client = seeded["client"]
    if replace:
        path = f"/Users/{seeded['user']['id']}"
        check(send(harness, client, "PUT", path, {"userName": "fuzz@contoso.com"}), {200})
        before = check(send(harness, client, "GET", path), {200})
        response = send(harness, client, "PUT", path, body)
        created = check(response, {200, 400, 409}, {"invalidSyntax", "invalidValue", "mutability", "tooMany"})
        if response.status >= 400:
            assert check(send(harness, client, "GET", path), {200}) == before
    else:
        response = send(harness, client, "POST", "/Users", body)
        created = check(response, {201, 400, 409}, {"invalidSyntax", "invalidValue", "mutability", "tooMany"})
    if response.status in (200, 201):
        assert created is not None
        read = check(send(harness, client, "GET", f"/Users/{created['id']}"), {200})
        assert read == created, "the resource does not read back as it was answered"
        if not replace:
            check(send(harness, client, "DELETE", f"/Users/{created['id']}"), {204})


@fuzz_settings(150)
@given(body=st.one_of(group_bodies(), json_values))
def test_group_bodies_are_created_or_refused(harness: Harness, seeded: dict[str, Any], body: Any) -> None:
    """POST /Groups: 201, 400 or 409; members naming nothing of the tenant are not stored."""
    CASES["group bodies (POST)"] += 1
    client = seeded["client"]
    response = send(harness, client, "POST", "/Groups", body)
    created = check(response, {201, 400, 409}, {"invalidSyntax", "invalidValue", "mutability", "tooMany"})
    if response.status == 201:
        assert created is not None
        assert created.get("members", []) == []  # generated ids name no user or group
        check(send(harness, client, "DELETE", f"/Groups/{created['id']}"), {204})


@fuzz_settings(250)
@given(
    raw=raw_bodies, target=st.sampled_from(["POST /Users", "POST /Groups", "PATCH user", "PUT user", "POST /.search"])
)
def test_raw_bodies_are_refused_as_invalid_syntax(
    harness: Harness, seeded: dict[str, Any], raw: bytes, target: str
) -> None:
    """Bytes that are not a JSON object of the right shape: 400 invalidSyntax (or invalidValue)."""
    CASES["raw bodies"] += 1
    client = seeded["client"]
    user_path = f"/Users/{seeded['user']['id']}"
    method, path = {
        "POST /Users": ("POST", "/Users"),
        "POST /Groups": ("POST", "/Groups"),
        "PATCH user": ("PATCH", user_path),
        "PUT user": ("PUT", user_path),
        "POST /.search": ("POST", "/.search"),
    }[target]
    before = check(send(harness, client, "GET", user_path), {200})
    response = send(harness, client, method, path, raw=raw)
    created = check(
        response,
        {200, 201, 400, 409},
        {"invalidSyntax", "invalidValue", "invalidPath", "noTarget", "mutability", "invalidFilter"},
    )
    if response.status == 201 and created is not None:
        check(send(harness, client, "DELETE", f"{path}/{created['id']}"), {204})
    if response.status >= 400 and method in ("PATCH", "PUT"):
        assert check(send(harness, client, "GET", user_path), {200}) == before


SEGMENTS = [
    "Users",
    "Groups",
    "users",
    "GROUPS",
    "Schemas",
    "ResourceTypes",
    "ServiceProviderConfig",
    ".search",
    "Bulk",
    "Me",
    "..",
    ".",
    "%2F",
    "%00",
    "User",
    "Groups?x",
]


@pytest.fixture(scope="module")
def path_tenant(harness: Harness) -> tuple[FunctionsClient, dict[str, str]]:
    """A tenant of its own (generated DELETEs may remove its resources), and its ids by placeholder."""
    client = harness.tenant()
    user = check(send(harness, client, "POST", "/Users", {"userName": "paths@x"}), {201})
    group = check(send(harness, client, "POST", "/Groups", {"displayName": "paths"}), {201})
    assert user is not None and group is not None
    return client, {"USER_ID": user["id"], "GROUP_ID": group["id"]}


@fuzz_settings(200)
@given(
    segments=st.lists(st.one_of(st.sampled_from([*SEGMENTS, "USER_ID", "GROUP_ID"]), st.text(max_size=12)), max_size=4),
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]),
    body=st.one_of(
        st.none(),
        st.just({"userName": "p@x"}),
        st.just({"schemas": [PATCH_URN], "Operations": [{"op": "add", "path": "title", "value": "t"}]}),
    ),
)
def test_paths_answer_a_scim_status(
    harness: Harness, path_tenant: tuple[FunctionsClient, dict[str, str]], segments: list[str], method: str, body: Any
) -> None:
    """Any path under the Tenant URL with any method: a SCIM answer (404/405/501 for what does not exist)."""
    CASES["paths x methods"] += 1
    client, ids = path_tenant
    path = "/" + "/".join(ids.get(s, s) for s in segments)
    check(send(harness, client, method, path, body), {200, 201, 204, 400, 404, 405, 409, 501})


QUERY_NAMES = [
    "filter",
    "Filter",
    "startIndex",
    "startindex",
    "count",
    "COUNT",
    "attributes",
    "excludedAttributes",
    "sortBy",
    "sortOrder",
    "cursor",
    "aadOptscim062020",
    "x",
]
query_values = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from(
        [
            "",
            " ",
            "0",
            "-1",
            "1e3",
            "0x10",
            "1.5",
            "9" * 40,
            "members",
            'emails[type eq "work"]',
            "urn:x:y",
            ",,,",
            "((",
        ]
    ),
    filters,
    filter_attributes,
)


@fuzz_settings(200)
@given(
    params=st.dictionaries(st.sampled_from(QUERY_NAMES) | st.text(max_size=8), query_values, max_size=4),
    endpoint=st.sampled_from(["/Users", "/Groups", "USER", "GROUP"]),
)
def test_query_parameters_answer_200_or_400(
    harness: Harness, seeded: dict[str, Any], params: dict[str, str], endpoint: str
) -> None:
    """Unknown parameters are ignored (docs/ENTRA.md §1); bad values of known ones are 400, never 5xx."""
    CASES["query parameters"] += 1
    path = {"USER": f"/Users/{seeded['user']['id']}", "GROUP": f"/Groups/{seeded['group']['id']}"}.get(
        endpoint, endpoint
    )
    response = send(harness, seeded["client"], "GET", path, params=params)
    body = check(response, {200, 400})
    if response.status == 200 and endpoint.startswith("/"):
        assert body is not None and body["itemsPerPage"] == len(body["Resources"]) <= 1000


def test_bad_count_start_index_and_sort_by_are_invalid_value(harness: Harness, seeded: dict[str, Any]) -> None:
    """RFC 7644 §3.12, Table 9: a value "not compatible with the operation" of a GET is 400 invalidValue."""
    for params in (
        {"count": "ten"},
        {"startIndex": "1.5"},
        {"count": "9" * 5000},
        {"sortBy": "(("},
        {"sortBy": 'emails[type eq "work"]'},
    ):
        response = send(harness, seeded["client"], "GET", "/Users", params=params)
        check(response, {400}, {"invalidValue"})


HEADER_NAMES = [
    "Authorization",
    "Content-Type",
    "If-Match",
    "If-None-Match",
    "Content-Length",
    "Accept",
    "X-Forwarded-For",
    "User-Agent",
]


@st.composite
def header_sets(draw: Any, token: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    auth = draw(
        st.sampled_from(
            ["valid", "bearer-lower", "missing", "basic", "bearer-alone", "bearer-spaces", "other", "random"]
        )
    )
    value = {
        "valid": f"Bearer {token}",
        "bearer-lower": f"bearer {token}",
        "basic": f"Basic {token}",
        "bearer-alone": "Bearer",
        "bearer-spaces": f"Bearer   {token}  ",
        "other": "Bearer " + draw(st.text(min_size=1, max_size=40)),
        "random": draw(st.text(max_size=40)),
    }.get(auth)
    if value is not None:
        headers["Authorization"] = value
    for name in draw(
        st.lists(
            st.sampled_from(HEADER_NAMES[1:]) | st.text(alphabet=string.ascii_letters + "-", min_size=1, max_size=10),
            max_size=3,
        )
    ):
        if name == "Content-Length":
            # The Functions host (Kestrel) refuses a Content-Length that is not a decimal number
            # before the worker sees it; see test_content_length_that_is_not_a_number below.
            headers[name] = draw(st.integers(min_value=0, max_value=10**18).map(str))
        else:
            headers[name] = draw(
                st.one_of(
                    st.text(max_size=30), st.sampled_from(['"1"', "*", 'W/"1"', "application/scim+json", "text/plain"])
                )
            )
    return headers


@fuzz_settings(150)
@given(data=st.data(), method=st.sampled_from(["GET", "PATCH", "PUT", "DELETE"]))
def test_headers_answer_a_scim_status(harness: Harness, seeded: dict[str, Any], data: Any, method: str) -> None:
    """Any Authorization, If-Match, If-None-Match, Content-Type, Content-Length: never a 5xx."""
    CASES["headers"] += 1
    client = seeded["client"]
    assert client.token is not None
    headers = data.draw(header_sets(client.token))
    path = f"/Users/{seeded['user']['id']}"
    body = (
        {"userName": "fuzz@contoso.com"}
        if method == "PUT"
        else {"schemas": [PATCH_URN], "Operations": [{"op": "replace", "path": "title", "value": "t"}]}
        if method == "PATCH"
        else None
    )
    if method == "DELETE":
        headers["If-Match"] = '"never-a-version"'  # keep the seeded user: DELETE must answer 412
    response = send(harness, client, method, path, body, headers=headers, token=False)
    check(response, {200, 204, 304, 400, 401, 412, 413})
    authorization = headers.get("Authorization", "")
    if not authorization.lower().startswith("bearer ") or authorization.split(None, 1)[-1].strip() != client.token:
        assert response.status == 401
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_content_length_that_is_not_a_number(harness: Harness, seeded: dict[str, Any]) -> None:
    """Behind Kestrel this cannot arrive, but the adapter must not fail on it either (400 or ignore, never 5xx)."""
    client = seeded["client"]
    for value in ("\u00b2", "\u0661\u0662", "9" * 5000):
        response = send(harness, client, "GET", "/Users", headers={"Content-Length": value})
        check(response, {200, 400, 413})


@fuzz_settings(300)
@given(
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(alphabet='ab[]{}"\\', max_size=6),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(alphabet='k[]{}"\\', max_size=4), c, max_size=3),
        max_leaves=40,
    )
)
def test_depth_check_agrees_with_the_parsed_depth(value: Any) -> None:
    """The textual depth check (scim.core.jsonbody) equals the depth of the decoded value, strings and escapes included."""
    CASES["JSON depth check (pure)"] += 1

    def depth(item: Any) -> int:
        if isinstance(item, dict):
            return 1 + max((depth(v) for v in item.values()), default=0)
        if isinstance(item, list):
            return 1 + max((depth(v) for v in item), default=0)
        return 0

    for indent in (None, 1):
        text = json.dumps(value, indent=indent)
        assert _depth_ok(text.encode()) == (depth(value) <= MAX_DEPTH)
        wrapped = (
            "[" * (MAX_DEPTH - depth(value)) + text + "]" * (MAX_DEPTH - depth(value))
            if depth(value) <= MAX_DEPTH
            else text
        )
        assert _depth_ok(wrapped.encode()) is (depth(value) <= MAX_DEPTH)
        assert not _depth_ok(("[" + wrapped + "]").encode()) if depth(value) <= MAX_DEPTH else True
