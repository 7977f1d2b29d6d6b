"""OAuth 2.0 client credentials (issue 13, RFC 6749 §4.4): ``POST /oauth/{tenant}/token``
(:mod:`scim.functions.oauth_adapter`) and the access tokens it issues on the SCIM endpoint.

Each test runs twice through the :class:`Endpoint` fixture: ``memory`` calls the registered
Functions entry points in-process on the memory runtime (seconds, no Node.js); ``http`` sends
real HTTP to the local host (``local_server``: ``python -m devtools.localhost`` on the
session's Azurite), with tenants and clients made through a Table registry on the same tables,
and reads the server's own log output. Expiry is made by rewriting the stored credentials
through the registry's ``_load``/``_store`` (real storage, no mocks).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus, urlencode

import aiohttp
import azure.functions as func
import pytest

from scim.admin import oauth_clients
from scim.credentials import ACCESS_TOKEN_SECONDS, ACCESS_TOKENS_PER_MINUTE, InvalidClient
from scim.functions.oauth_adapter import MAX_BODY_BYTES
from scim.functions.runtime import Runtime, build_runtime, use_runtime
from scim.settings import Settings
from scim.store.base import StoreUnavailable
from scim.store.memory import MemoryTenantRegistry
from scim.tenants import TenantRegistry
from tests.functions_client import REGISTERED, FunctionsClient, Response
from tests.helpers import memory_runtime

TOKEN_FUNCTION = REGISTERED["oauth_token"]
FORM = "application/x-www-form-urlencoded"
GRANT = {"grant_type": "client_credentials"}
TIMEOUT = aiohttp.ClientTimeout(total=15)


def basic(client_id: str, secret: str) -> str:
    """RFC 6749 §2.3.1: each part form-urlencoded, joined by ":", base64."""
    pair = f"{quote_plus(client_id)}:{quote_plus(secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


@dataclass
class Endpoint:
    """The token endpoint and the SCIM endpoint of one backend (``memory`` or ``http``)."""

    kind: str
    tenants: TenantRegistry
    settings: Settings
    log_text: Callable[[], str]
    runtime: Runtime | None = None
    base_url: str = ""
    session: aiohttp.ClientSession | None = None

    async def new_tenant(self) -> str:
        name = "oa-" + uuid.uuid4().hex[:10]
        await self.tenants.create(name)
        return name

    async def new_client(self, tenant: str | None = None) -> tuple[str, str, str]:
        """A fresh tenant (or ``tenant``) and a new client of it: (tenant, client id, secret)."""
        tenant = tenant or await self.new_tenant()
        client, secret = await self.tenants.create_client(tenant)
        return tenant, client.id, secret

    async def post(self, tenant: str, body: bytes, headers: dict[str, str]) -> Response:
        """One POST to ``/oauth/{tenant}/token`` with exactly ``body`` and ``headers``."""
        if self.session is not None:
            async with self.session.post(
                f"{self.base_url}/oauth/{tenant}/token", data=body, headers=headers, skip_auto_headers=["Content-Type"]
            ) as response:
                return Response(
                    response.status, {k.lower(): v for k, v in response.headers.items()}, await response.read()
                )
        request = func.HttpRequest(
            method="POST",
            url=f"{self.settings.token_endpoint(tenant)}",
            headers={"Content-Length": str(len(body)), **headers},  # as the Functions host passes it
            params={},
            route_params={"tenant": tenant},
            body=body,
        )
        result = await TOKEN_FUNCTION(request)
        return Response(result.status_code, {k.lower(): v for k, v in result.headers.items()}, result.get_body() or b"")

    async def token(
        self,
        tenant: str,
        form: dict[str, str] | str | None = None,
        *,
        auth: tuple[str, str] | None = None,
        content_type: str | None = FORM,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """A token request: ``form`` (a dict is urlencoded; default the grant alone), Basic
        credentials ``auth``, and the content type."""
        form = GRANT if form is None else form
        body = (form if isinstance(form, str) else urlencode(form)).encode()
        all_headers = {"Content-Type": content_type} if content_type else {}
        if auth is not None:
            all_headers["Authorization"] = basic(*auth)
        all_headers.update(headers or {})
        return await self.post(tenant, body, all_headers)

    async def access_token(self, tenant: str, client_id: str, secret: str) -> str:
        response = await self.token(tenant, auth=(client_id, secret))
        assert response.status == 200, response.body
        return str(response.json["access_token"])

    async def scim(self, tenant: str, bearer: str) -> Response:
        """``GET /scim/{tenant}/Users`` with ``bearer``."""
        if self.session is not None:
            async with self.session.get(
                f"{self.base_url}/scim/{tenant}/Users", headers={"Authorization": f"Bearer {bearer}"}
            ) as response:
                return Response(
                    response.status, {k.lower(): v for k, v in response.headers.items()}, await response.read()
                )
        return await FunctionsClient(tenant, bearer).get("/Users")


@pytest.fixture(params=["memory", pytest.param("http", marks=pytest.mark.azurite(reason="the local host on Azurite"))])
async def endpoint(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Endpoint]:
    if request.param == "memory":
        caplog.set_level(logging.DEBUG)
        runtime = memory_runtime()
        use_runtime(runtime)
        try:
            yield Endpoint("memory", runtime.tenants, runtime.settings, lambda: caplog.text, runtime=runtime)
        finally:
            use_runtime(None)
            await runtime.close()
        return
    server = request.getfixturevalue("local_server")
    runtime = build_runtime(server.settings)  # the server's tables, for making tenants and clients
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            yield Endpoint(
                "http",
                runtime.tenants,
                server.settings,
                lambda: server.log_path.read_text(errors="replace"),
                base_url=server.base_url,
                session=session,
            )
    finally:
        await runtime.close()


def assert_oauth_error(response: Response, status: int, error: str) -> dict[str, Any]:
    """An RFC 6749 §5.2 error: JSON ``{"error", "error_description"}``, never cached."""
    assert response.status == status, response.body
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.headers["cache-control"] == "no-store" and response.headers["pragma"] == "no-cache"
    body = response.json
    assert set(body) == {"error", "error_description"} and body["error"] == error, body
    description = body["error_description"]
    assert description and re.fullmatch(r"[\x20\x21\x23-\x5b\x5d-\x7e]+", description), "§5.2 NQSCHAR only"
    if error == "invalid_client":
        assert status == 401 and response.headers["www-authenticate"] == 'Basic realm="scim-oauth"'
    else:
        assert "www-authenticate" not in response.headers
    return dict(body)


# ---- issuing and using tokens --------------------------------------------------------------------


async def test_basic_and_form_client_authentication_give_tokens_the_scim_endpoint_accepts(endpoint: Endpoint):
    tenant, client_id, secret = await endpoint.new_client()

    with_basic = await endpoint.token(tenant, {**GRANT, "scope": "anything"}, auth=(client_id, secret))
    assert with_basic.status == 200, with_basic.body
    body = with_basic.json
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == ACCESS_TOKEN_SECONDS
    assert with_basic.headers["content-type"] == "application/json; charset=utf-8"
    assert with_basic.headers["cache-control"] == "no-store" and with_basic.headers["pragma"] == "no-cache"

    in_body = await endpoint.token(
        tenant,
        {**GRANT, "client_id": client_id, "client_secret": secret},
        content_type="application/x-www-form-urlencoded; charset=UTF-8",
    )
    assert in_body.status == 200, in_body.body
    same_id_twice = await endpoint.token(tenant, {**GRANT, "client_id": client_id}, auth=(client_id, secret))
    assert same_id_twice.status == 200, same_id_twice.body

    tokens = {r.json["access_token"] for r in (with_basic, in_body, same_id_twice)}
    assert len(tokens) == 3
    for token in tokens:
        listed = await endpoint.scim(tenant, token)
        assert listed.status == 200, listed.body
        assert listed.json["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:ListResponse"]
    issued = (await endpoint.tenants.list_clients(tenant))[0].last_issued
    assert issued is not None and abs(issued - datetime.now(UTC).timestamp()) < 60


async def test_the_cli_prints_what_entra_needs_and_it_works(endpoint: Endpoint, capsys: pytest.CaptureFixture[str]):
    tenant = await endpoint.new_tenant()
    parser = argparse.ArgumentParser()
    oauth_clients.add_commands(parser.add_subparsers(dest="group", required=True))
    args = parser.parse_args(["oauth-client", "create", tenant, "--json"])
    assert await oauth_clients.run(args, endpoint.settings, endpoint.tenants) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["token_endpoint"] == endpoint.settings.token_endpoint(tenant)
    if endpoint.kind == "http":
        assert made["token_endpoint"] == f"{endpoint.base_url}/oauth/{tenant}/token"
    token = await endpoint.access_token(tenant, made["client_id"], made["client_secret"])
    assert (await endpoint.scim(tenant, token)).status == 200


# ---- failed client authentication: always 401 invalid_client --------------------------------------


async def test_a_wrong_secret_an_unknown_client_or_tenant_is_invalid_client(endpoint: Endpoint):
    tenant, client_id, secret = await endpoint.new_client()
    other_tenant, other_id, other_secret = await endpoint.new_client()
    cases = {
        "wrong secret, Basic": (tenant, None, (client_id, secret + "x")),
        "wrong secret, form": (tenant, {**GRANT, "client_id": client_id, "client_secret": secret[:-1]}, None),
        "unknown client": (tenant, None, ("scimc_" + "0" * 16, secret)),
        "another tenant's client": (tenant, None, (other_id, other_secret)),
        "this client on another tenant": (other_tenant, None, (client_id, secret)),
        "unknown tenant": ("nobody-" + uuid.uuid4().hex[:8], None, (client_id, secret)),
        "not a tenant name": ("Not_A-Tenant", None, (client_id, secret)),
        "no authentication": (tenant, None, None),
        "client_id alone": (tenant, {**GRANT, "client_id": client_id}, None),
        "client_secret alone": (tenant, {**GRANT, "client_secret": secret}, None),
        "empty secret": (tenant, {**GRANT, "client_id": client_id, "client_secret": ""}, None),
    }
    for what, (where, form, auth) in cases.items():
        response = await endpoint.token(where, form, auth=auth)
        assert response.status == 401, what
        assert_oauth_error(response, 401, "invalid_client")
    # The same answer for an unknown tenant, an unknown client and a wrong secret.
    answers = {
        (await endpoint.token(where, auth=auth)).body
        for where, auth in (
            (tenant, (client_id, "wrong")),
            (tenant, ("scimc_nobody", "wrong")),
            ("nobody-" + uuid.uuid4().hex[:8], (client_id, "wrong")),
        )
    }
    assert len(answers) == 1, answers


async def test_malformed_or_other_authorization_is_invalid_client(endpoint: Endpoint):
    tenant, client_id, secret = await endpoint.new_client()
    for header in (
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(client_id.encode()).decode(),  # no ":" and no secret
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
        f"Bearer {secret}",
        "Basic",
    ):
        response = await endpoint.token(tenant, headers={"Authorization": header})
        assert_oauth_error(response, 401, "invalid_client")


async def test_a_revoked_clients_tokens_fail_at_once_and_it_gets_no_new_one(endpoint: Endpoint):
    tenant, client_id, secret = await endpoint.new_client()
    _, kept_id, kept_secret = await endpoint.new_client(tenant)
    token = await endpoint.access_token(tenant, client_id, secret)
    kept = await endpoint.access_token(tenant, kept_id, kept_secret)
    assert (await endpoint.scim(tenant, token)).status == 200

    await endpoint.tenants.revoke_client(tenant, client_id)
    refused = await endpoint.scim(tenant, token)
    assert refused.status == 401 and refused.headers["www-authenticate"].startswith("Bearer"), refused.body
    assert_oauth_error(await endpoint.token(tenant, auth=(client_id, secret)), 401, "invalid_client")
    assert (await endpoint.scim(tenant, kept)).status == 200, "the other client's token still works"


async def test_an_expired_access_token_is_refused(endpoint: Endpoint):
    tenant, client_id, secret = await endpoint.new_client()
    token = await endpoint.access_token(tenant, client_id, secret)
    assert (await endpoint.scim(tenant, token)).status == 200

    # Move the stored token's expiry into the past, on the real storage.
    loaded = await endpoint.tenants._load(tenant)
    assert loaded is not None
    stored = loaded[1]
    past = int(datetime.now(UTC).timestamp()) - 1
    expired = tuple(
        dataclasses.replace(a, issued=past - ACCESS_TOKEN_SECONDS, expires=past) for a in stored.access_tokens
    )
    assert len(expired) == 1
    await endpoint.tenants._store(tenant, dataclasses.replace(stored, access_tokens=expired), stored.version)

    assert (await endpoint.scim(tenant, token)).status == 401
    assert (await endpoint.scim(tenant, await endpoint.access_token(tenant, client_id, secret))).status == 200


async def test_a_token_of_one_tenant_is_refused_by_another(endpoint: Endpoint):
    tenant_a, client_id, secret = await endpoint.new_client()
    tenant_b = await endpoint.new_tenant()
    token = await endpoint.access_token(tenant_a, client_id, secret)
    assert (await endpoint.scim(tenant_b, token)).status == 401
    assert (await endpoint.scim(tenant_a, token)).status == 200


# ---- the request's shape ---------------------------------------------------------------------------


async def test_grant_type_is_required_and_only_client_credentials(endpoint: Endpoint):
    tenant, client_id, secret = await endpoint.new_client()
    auth = (client_id, secret)
    assert_oauth_error(await endpoint.token(tenant, {"scope": "x"}, auth=auth), 400, "invalid_request")
    assert_oauth_error(await endpoint.token(tenant, {"grant_type": ""}, auth=auth), 400, "invalid_request")
    for grant in ("password", "authorization_code", "CLIENT_CREDENTIALS"):
        response = await endpoint.token(tenant, {"grant_type": grant}, auth=auth)
        assert_oauth_error(response, 400, "unsupported_grant_type")
    # Shape errors come before client authentication: they reveal nothing about tenants.
    unknown = "nobody-" + uuid.uuid4().hex[:8]
    assert_oauth_error(await endpoint.token(unknown, {"grant_type": "password"}), 400, "unsupported_grant_type")
    assert_oauth_error(await endpoint.token(unknown, {}, auth=("x", "y")), 400, "invalid_request")


async def test_only_a_form_body_is_accepted(endpoint: Endpoint):
    tenant, client_id, secret = await endpoint.new_client()
    form = {**GRANT, "client_id": client_id, "client_secret": secret}
    for content_type in (None, "application/json", "text/plain", "multipart/form-data; boundary=x"):
        response = await endpoint.token(tenant, form, content_type=content_type)
        assert_oauth_error(response, 400, "invalid_request")
    as_json = await endpoint.post(tenant, json.dumps(form).encode(), {"Content-Type": "application/json"})
    assert_oauth_error(as_json, 400, "invalid_request")
    upper = await endpoint.token(tenant, form, content_type="Application/X-WWW-Form-Urlencoded ; charset=utf-8")
    assert upper.status == 200, upper.body
    not_utf8 = await endpoint.post(tenant, b"grant_type=client_credentials&client_id=%FF%FE", {"Content-Type": FORM})
    assert_oauth_error(not_utf8, 400, "invalid_request")
    raw_bytes = await endpoint.post(tenant, "grant_type=client_credentials&x=é".encode(), {"Content-Type": FORM})
    assert_oauth_error(raw_bytes, 400, "invalid_request")
    too_many = "&".join(f"p{i}=1" for i in range(40)) + "&grant_type=client_credentials"
    assert_oauth_error(await endpoint.token(tenant, too_many, auth=(client_id, secret)), 400, "invalid_request")


async def test_a_parameter_sent_twice_is_invalid_request(endpoint: Endpoint):
    tenant, client_id, secret = await endpoint.new_client()
    auth = (client_id, secret)
    for body in (
        "grant_type=client_credentials&grant_type=client_credentials",
        "grant_type=client_credentials&scope=a&scope=b",
        "grant_type=client_credentials&grant_type=",
        f"grant_type=client_credentials&client_id={client_id}&client_id={client_id}",
    ):
        response = await endpoint.token(tenant, body, auth=auth)
        assert_oauth_error(response, 400, "invalid_request")
    twice = f"grant_type=client_credentials&client_id={client_id}&client_secret={secret}&client_secret={secret}"
    assert_oauth_error(await endpoint.token(tenant, twice), 400, "invalid_request")


async def test_two_authentication_methods_or_two_client_ids_are_invalid_request(endpoint: Endpoint):
    tenant, client_id, secret = await endpoint.new_client()
    both = await endpoint.token(tenant, {**GRANT, "client_secret": secret}, auth=(client_id, secret))
    assert (
        "more than one authentication method" in assert_oauth_error(both, 400, "invalid_request")["error_description"]
    )
    other_id = await endpoint.token(tenant, {**GRANT, "client_id": "scimc_other"}, auth=(client_id, secret))
    assert_oauth_error(other_id, 400, "invalid_request")


async def test_a_body_over_4_kib_is_refused(endpoint: Endpoint):
    tenant, client_id, secret = await endpoint.new_client()
    padding = "x" * (5 * 1024)
    response = await endpoint.token(tenant, {**GRANT, "scope": padding}, auth=(client_id, secret))
    assert_oauth_error(response, 413, "invalid_request")
    exact = urlencode({**GRANT, "scope": ""}) + "&pad=" + "y" * MAX_BODY_BYTES
    exact = exact[:MAX_BODY_BYTES]
    assert len(exact) == MAX_BODY_BYTES
    assert (await endpoint.token(tenant, exact, auth=(client_id, secret))).status == 200


class _UnreadableBody(func.HttpRequest):
    """A request whose body must not be read (it fails the test if it is)."""

    def get_body(self) -> bytes:
        raise AssertionError("the body was read")


async def test_a_declared_body_over_4_kib_is_refused_without_reading_it():
    runtime = memory_runtime()
    use_runtime(runtime)
    try:
        tenant = "acme"
        await runtime.tenants.create(tenant)
        client, secret = await runtime.tenants.create_client(tenant)
        for declared in (str(5 * 1024), str(MAX_BODY_BYTES + 1), "9" * 30):
            request = _UnreadableBody(
                method="POST",
                url=runtime.settings.token_endpoint(tenant),
                headers={"Content-Type": FORM, "Content-Length": declared, "Authorization": basic(client.id, secret)},
                params={},
                route_params={"tenant": tenant},
                body=b"",
            )
            assert_oauth_error(_response(await TOKEN_FUNCTION(request)), 413, "invalid_request")
        garbled = func.HttpRequest(
            method="POST",
            url=runtime.settings.token_endpoint(tenant),
            headers={"Content-Type": FORM, "Content-Length": "12abc", "Authorization": basic(client.id, secret)},
            params={},
            route_params={"tenant": tenant},
            body=urlencode(GRANT).encode(),
        )
        assert_oauth_error(_response(await TOKEN_FUNCTION(garbled)), 400, "invalid_request")
        chunked = func.HttpRequest(  # no Content-Length: the body the host read is measured
            method="POST",
            url=runtime.settings.token_endpoint(tenant),
            headers={"Content-Type": FORM, "Authorization": basic(client.id, secret)},
            params={},
            route_params={"tenant": tenant},
            body=urlencode({**GRANT, "scope": "x" * MAX_BODY_BYTES}).encode(),
        )
        assert_oauth_error(_response(await TOKEN_FUNCTION(chunked)), 413, "invalid_request")
    finally:
        use_runtime(None)
        await runtime.close()


def _response(result: func.HttpResponse) -> Response:
    return Response(result.status_code, {k.lower(): v for k, v in result.headers.items()}, result.get_body() or b"")


async def test_only_post_is_served(local_server: Any):
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.get(f"{local_server.base_url}/oauth/acme/token") as response,
    ):
        assert response.status in (404, 405)


# ---- rate limits, storage failures, bugs -------------------------------------------------------------


async def test_too_many_token_requests_get_429_with_retry_after(endpoint: Endpoint):
    tenant, client_id, secret = await endpoint.new_client()
    for _ in range(ACCESS_TOKENS_PER_MINUTE):
        assert (await endpoint.token(tenant, auth=(client_id, secret))).status == 200
    limited = await endpoint.token(tenant, auth=(client_id, secret))
    assert_oauth_error(limited, 429, "temporarily_unavailable")
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    # Only an authenticated client is told it is limited; others get what they always get.
    assert_oauth_error(await endpoint.token(tenant, auth=(client_id, "wrong")), 401, "invalid_client")
    _, other_id, other_secret = await endpoint.new_client(tenant)
    assert (await endpoint.token(tenant, auth=(other_id, other_secret))).status == 200, "the limit is per client"


class _FailingRegistry(MemoryTenantRegistry):
    """A memory registry whose reads fail as ``error`` says."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    async def _load(self, name: str) -> Any:
        raise self.error


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (StoreUnavailable("table timed out"), 503, "temporarily_unavailable"),
        (RuntimeError("a bug"), 500, "server_error"),
    ],
)
async def test_storage_failures_are_503_and_bugs_500(
    error: Exception, status: int, code: str, caplog: pytest.LogCaptureFixture
):
    runtime = memory_runtime()
    runtime.tenants = _FailingRegistry(error)
    use_runtime(runtime)
    caplog.set_level(logging.INFO)
    secret = "scimcs_" + uuid.uuid4().hex
    try:
        request = func.HttpRequest(
            method="POST",
            url="http://127.0.0.1:7071/oauth/acme/token",
            headers={"Content-Type": FORM, "Authorization": basic("scimc_x", secret)},
            params={},
            route_params={"tenant": "acme"},
            body=urlencode(GRANT).encode(),
        )
        response = _response(await TOKEN_FUNCTION(request))
    finally:
        use_runtime(None)
        await runtime.close()
    body = assert_oauth_error(response, status, code)
    if status == 503:
        assert int(response.headers["retry-after"]) > 0
    else:
        assert "a bug" not in body["error_description"] and "Traceback" not in response.body.decode()
        assert "Traceback" in caplog.text and "RuntimeError" in caplog.text
    assert secret not in caplog.text


# ---- what is logged ---------------------------------------------------------------------------------


async def test_logs_hold_no_secret_and_token_requests_are_not_in_the_provisioning_log(endpoint: Endpoint):
    tenant, client_id, secret = await endpoint.new_client()
    token = await endpoint.access_token(tenant, client_id, secret)
    form = {**GRANT, "client_id": client_id, "client_secret": secret}
    assert (await endpoint.token(tenant, form)).status == 200
    assert (await endpoint.token(tenant, {**form, "client_secret": secret + "x"})).status == 401
    assert (await endpoint.token(tenant, {**form, "grant_type": "password"})).status == 400
    assert (await endpoint.scim(tenant, token)).status == 200
    log = endpoint.log_text()
    assert "POST /oauth/{tenant}/token -> 200" in log and "POST /oauth/{tenant}/token -> 401" in log
    for secret_value in (secret, token, basic(client_id, secret).split()[1], client_id, urlencode(form)):
        assert secret_value not in log
    if endpoint.runtime is not None:
        await endpoint.runtime.log_writer.drain()
        entries = (await endpoint.runtime.log.page(tenant)).entries
        assert [e.operation for e in entries] == ["GET /Users"], "only the SCIM request is in the provisioning log"


async def test_the_registry_is_the_one_place_clients_are_checked(endpoint: Endpoint):
    """What the endpoint issues is what the registry would: a token request through HTTP and one
    straight to the registry count against the same stored limits."""
    tenant, client_id, secret = await endpoint.new_client()
    with pytest.raises(InvalidClient):
        await endpoint.tenants.issue_access_token(tenant, client_id, "wrong")
    for _ in range(ACCESS_TOKENS_PER_MINUTE - 1):
        await endpoint.tenants.issue_access_token(tenant, client_id, secret)
    assert (await endpoint.token(tenant, auth=(client_id, secret))).status == 200
    assert (await endpoint.token(tenant, auth=(client_id, secret))).status == 429
