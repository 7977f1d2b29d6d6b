"""Portal sign-in (``scim.portal.oidc``): ID token validation and the callback's checks, with
keys made here and a small OpenID Connect provider served over real HTTP on 127.0.0.1 (its
discovery document, JWKS and token endpoint), plus the portal's settings.

The whole flow against the real local provider (oidc-provider-mock) is in
tests/test_oidc_mock_flow.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey

from scim.portal import oidc
from scim.portal.oidc import (
    ClientSecret,
    FederatedAssertion,
    Identity,
    OidcConfig,
    PendingLogin,
    ProviderCache,
    SignInError,
    UsedNonces,
)
from scim.settings import Settings, SettingsError

CLIENT_ID = "6f1c7e0a-portal-client"
SECRET = "local-client-secret-never-in-errors"
OPERATORS = "11111111-1111-4111-8111-111111111111"
CUSTOMER = "22222222-2222-4222-8222-222222222222"
REDIRECT = "https://scim.example/portal/auth/callback"
STORAGE = {"SCIM_TABLE_CONNECTION_STRING": "UseDevelopmentStorage=true"}

KEY = RSAKey.generate_key(2048, parameters={"kid": "key-1", "use": "sig", "alg": "RS256"})
ROTATED = RSAKey.generate_key(2048, parameters={"kid": "key-2", "use": "sig", "alg": "RS256"})
FORGED = RSAKey.generate_key(2048, parameters={"kid": "key-1", "use": "sig", "alg": "RS256"})  # same kid, other key


def public_jwks(*keys: RSAKey, **extra: Any) -> dict[str, Any]:
    return {"keys": [{**key.as_dict(private=False), **extra} for key in keys]}


def sign(claims: dict[str, Any], key: RSAKey = KEY, **header: Any) -> str:
    return jwt.encode({"alg": "RS256", "kid": key.kid, **header}, claims, key)


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def config(authority: str = "https://login.example", **changes: Any) -> OidcConfig:
    values: dict[str, Any] = {
        "authority": authority,
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT,
        "credential": ClientSecret(SECRET),
        "operator_tenant_id": OPERATORS,
        **changes,
    }
    return OidcConfig(**values)


METADATA = {
    "issuer": "https://login.example",
    "authorization_endpoint": "https://login.example/authorize",
    "token_endpoint": "https://login.example/token",
    "jwks_uri": "https://login.example/keys",
}
NONCE = "n" * 43


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    values = {
        "iss": "https://login.example",
        "aud": CLIENT_ID,
        "sub": "pairwise-subject",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "nonce": NONCE,
        "tid": OPERATORS,
        "oid": "aaaaaaaa-0000-4000-8000-000000000001",
        "name": "Ada Operator",
        "email": "ada@contoso.example",
        "preferred_username": "ada@contoso.example",
        "roles": ["Portal.Operator"],
    }
    values.update(changes)
    return {k: v for k, v in values.items() if v is not None}


def validate(
    token: str, *, metadata: dict[str, Any] = METADATA, jwks: dict[str, Any] | None = None, **kw: Any
) -> Identity:
    return oidc.validate_id_token(
        token, config=config(), metadata=metadata, jwks=jwks or public_jwks(KEY), nonce=kw.pop("nonce", NONCE), **kw
    )


def refused(token: str, code: str = "invalid_id_token", why: str = "", **kw: Any) -> SignInError:
    """Assert ``token`` is refused with ``code``, for a reason whose log detail contains ``why``."""
    with pytest.raises(SignInError) as failure:
        validate(token, **kw)
    assert failure.value.code == code, (failure.value.code, failure.value.detail)
    assert why in failure.value.detail, failure.value.detail
    return failure.value


# ---- ID token validation -----------------------------------------------------------------------


def test_a_good_token_gives_the_identity() -> None:
    identity = validate(sign(claims(groups=["9f0e..."])))
    assert identity == Identity(
        subject="pairwise-subject",
        issuer="https://login.example",
        oid="aaaaaaaa-0000-4000-8000-000000000001",
        tid=OPERATORS,
        name="Ada Operator",
        email="ada@contoso.example",
        username="ada@contoso.example",
        roles=("Portal.Operator",),
        groups=("9f0e...",),
    )
    assert identity.display == "Ada Operator"
    assert oidc.is_operator(identity, config())


def test_a_bad_signature_is_refused() -> None:
    refused(sign(claims(), key=FORGED), why="BadSignature")  # the kid of our key, signed by another
    header, payload, signature = sign(claims()).split(".")
    refused(f"{header}.{b64(claims(roles=['Portal.Operator', 'Admin']))}.{signature}")  # claims changed after signing
    refused(f"{header}.{payload}.{signature[:-4]}AAAA")


def test_alg_none_and_hmac_are_refused() -> None:
    refused(f"{b64({'alg': 'none', 'kid': 'key-1'})}.{b64(claims())}.", why="'none' is not allowed")
    refused(f"{b64({'alg': 'none'})}.{b64(claims())}.", why="'none' is not allowed")
    # HS256 "signed" with the public key's text as the secret: the classic algorithm confusion.
    public = json.dumps(KEY.as_dict(private=False)).encode()
    hmac_token = jwt.encode({"alg": "HS256", "kid": "key-1"}, claims(), OctKey.import_key(public))
    refused(hmac_token, why="'HS256' is not allowed")


@pytest.mark.parametrize("audience", ["another-app", ["another-app"], [CLIENT_ID, "another-app"], ""])
def test_a_wrong_audience_is_refused(audience: Any) -> None:
    refused(sign(claims(aud=audience)), why="'a")  # 'aud' or, for several audiences, 'azp'


def test_several_audiences_need_an_authorized_party_that_is_us() -> None:
    assert validate(sign(claims(aud=[CLIENT_ID, "other"], azp=CLIENT_ID))).subject == "pairwise-subject"
    refused(sign(claims(aud=[CLIENT_ID], azp="other")))
    assert validate(sign(claims(aud=[CLIENT_ID]))).subject == "pairwise-subject"


@pytest.mark.parametrize("issuer", ["https://evil.example", "https://login.example/", None])
def test_a_wrong_or_missing_issuer_is_refused(issuer: str | None) -> None:
    token = sign(claims(iss=issuer)) if issuer is not None else sign({k: v for k, v in claims().items() if k != "iss"})
    refused(token, why="'iss'")


MULTI_TENANT = {
    **METADATA,
    "issuer": "https://login.example/{tenantid}/v2.0",
}


def test_multi_tenant_issuer_is_the_tokens_own_tenants() -> None:
    identity = validate(sign(claims(iss=f"https://login.example/{CUSTOMER}/v2.0", tid=CUSTOMER)), metadata=MULTI_TENANT)
    assert (identity.tid, identity.issuer) == (CUSTOMER, f"https://login.example/{CUSTOMER}/v2.0")
    # An issuer of one tenant with the tid of another, no tid, or a tid that is not a GUID.
    refused(sign(claims(iss=f"https://login.example/{OPERATORS}/v2.0", tid=CUSTOMER)), metadata=MULTI_TENANT)
    refused(sign(claims(iss=f"https://login.example/{CUSTOMER}/v2.0", tid=None)), metadata=MULTI_TENANT)
    refused(sign(claims(iss="https://login.example/x/v2.0", tid="x")), metadata=MULTI_TENANT)
    # The placeholder itself is no tenant.
    refused(sign(claims(iss="https://login.example/{tenantid}/v2.0", tid="{tenantid}")), metadata=MULTI_TENANT)


def test_a_key_issued_for_another_issuer_is_refused() -> None:
    """Entra's keys may carry the issuer they sign for: a tenant's own key does not sign for another."""
    token = sign(claims(iss=f"https://login.example/{CUSTOMER}/v2.0", tid=CUSTOMER))
    shared = public_jwks(KEY, issuer="https://login.example/{tenantid}/v2.0")
    assert validate(token, metadata=MULTI_TENANT, jwks=shared).tid == CUSTOMER
    own = public_jwks(KEY, issuer=f"https://login.example/{OPERATORS}/v2.0")
    refused(token, metadata=MULTI_TENANT, jwks=own)


def test_an_expired_token_is_refused_beyond_the_leeway() -> None:
    now = int(time.time())
    refused(sign(claims(iat=now - 7200, nbf=now - 7200, exp=now - oidc.LEEWAY_SECONDS - 5)), why="expired")
    assert validate(sign(claims(exp=now - oidc.LEEWAY_SECONDS + 20))).subject  # clock skew
    refused(sign({k: v for k, v in claims().items() if k != "exp"}))  # exp is required


def test_a_token_not_yet_valid_is_refused() -> None:
    now = int(time.time())
    refused(sign(claims(nbf=now + oidc.LEEWAY_SECONDS + 60)), why="not yet valid")
    refused(sign(claims(iat=now + oidc.LEEWAY_SECONDS + 60, nbf=None)), why="in the future")
    assert validate(sign(claims(nbf=now + 10, iat=now + 10))).subject  # clock skew


def test_the_nonce_must_be_the_pending_logins() -> None:
    refused(sign(claims(nonce="m" * 43)), why="'nonce'")
    refused(sign(claims(nonce=None)))


def test_an_access_token_hash_must_match_when_present() -> None:
    token = sign(claims(at_hash=base64.urlsafe_b64encode(hashlib.sha256(b"at").digest()[:16]).rstrip(b"=").decode()))
    assert validate(token, access_token="at").subject
    refused(token, access_token="another access token")


def test_odd_keys_of_the_provider_are_skipped_not_fatal() -> None:
    """A key set may hold keys of other types, for encryption, or one that does not import."""
    broken = {"kty": "EC", "crv": "P-256", "x": "not base64!", "y": "x", "kid": "ec"}
    encryption = {**ROTATED.as_dict(private=False), "use": "enc", "kid": "key-1"}
    odd = {"keys": [broken, encryption, "junk", {**KEY.as_dict(private=False), "x5t": "abc", "issuer": "x"}]}
    odd["keys"][3].pop("issuer")
    assert validate(sign(claims()), jwks=odd).subject
    refused(sign(claims()), jwks={"keys": [broken, encryption]}, why="no usable RSA signing key")
    refused(sign(claims()), jwks={"keys": "none"}, why="no usable RSA signing key")


def test_an_unknown_key_id_asks_for_the_keys_again() -> None:
    refused(sign(claims(), key=ROTATED), code="unknown_key")


# ---- the pending login -------------------------------------------------------------------------


def test_the_authorization_request_carries_state_nonce_and_an_s256_challenge() -> None:
    url, pending = oidc.authorization_request(
        config(), METADATA, "operator", "/portal/tenants?page=2", context="link-1"
    )
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == METADATA["authorization_endpoint"]
    assert query["response_type"] == "code" and query["client_id"] == CLIENT_ID
    assert query["redirect_uri"] == REDIRECT and query["scope"] == "openid profile email"
    assert (query["state"], query["nonce"]) == (pending.state, pending.nonce)
    assert query["code_challenge_method"] == "S256"
    assert query["code_challenge"] == s256(pending.code_verifier) and 43 <= len(pending.code_verifier) <= 128
    assert "code_verifier" not in url and SECRET not in url
    assert (pending.purpose, pending.return_to, pending.context) == ("operator", "/portal/tenants?page=2", "link-1")
    assert PendingLogin.from_json(pending.to_json()) == pending
    _, other = oidc.authorization_request(config(), METADATA, "tenant-admin", "/portal/")
    assert {other.state, other.nonce, other.code_verifier}.isdisjoint(
        {pending.state, pending.nonce, pending.code_verifier}
    )


@pytest.mark.parametrize(
    "return_to",
    ["https://evil.example/", "//evil.example/", "/\\evil.example", "portal", "/a b", "/x\r\nSet-Cookie:", "/é"],
)
def test_return_to_must_be_a_path_on_this_site(return_to: str) -> None:
    with pytest.raises(ValueError):
        oidc.authorization_request(config(), METADATA, "operator", return_to)
    _, pending = oidc.authorization_request(config(), METADATA, "operator", "/portal/")
    forged = json.loads(pending.to_json()) | {"r": return_to}
    with pytest.raises(SignInError) as failure:
        PendingLogin.from_json(json.dumps(forged))
    assert failure.value.code == "invalid_pending"


@pytest.mark.parametrize(
    "change",
    [{"p": "root"}, {"s": "short"}, {"n": None}, {"v": 5}, {"t": "now"}, {"t": True}, {"c": "x" * 600}],
)
def test_a_pending_login_that_is_not_one_is_refused(change: dict[str, Any]) -> None:
    _, pending = oidc.authorization_request(config(), METADATA, "operator", "/portal/")
    with pytest.raises(SignInError, match="sign in again") as failure:
        PendingLogin.from_json(json.dumps(json.loads(pending.to_json()) | change))
    assert failure.value.code == "invalid_pending"
    for text in ("", "null", "[]", "{not json"):
        with pytest.raises(SignInError):
            PendingLogin.from_json(text)


def test_an_unknown_purpose_is_refused() -> None:
    with pytest.raises(ValueError):
        oidc.authorization_request(config(), METADATA, "root", "/portal/")  # type: ignore[arg-type]


def test_the_used_nonce_memory_is_bounded() -> None:
    clock = [1000.0]
    memory = UsedNonces(max_entries=3, clock=lambda: clock[0])
    assert all(memory.claim(n, until=2000) for n in "abc")
    assert not memory.claim("a", until=2000)
    assert memory.claim("d", until=2000) and len(memory) == 3  # "a", the oldest, made room
    clock[0] = 2001.0  # every entry expired
    assert memory.claim("e", until=3000) and len(memory) == 1


# ---- the callback, over HTTP ----------------------------------------------------------------------


class Provider:
    """A tiny OpenID Connect provider on 127.0.0.1: discovery, JWKS and a token endpoint that
    answers with ``id_token_for(form)``; it records what it is asked."""

    def __init__(self) -> None:
        self.keys: list[RSAKey] = [KEY]
        self.issuer_template: str | None = None
        self.id_token_for: Callable[[dict[str, str]], str] = lambda form: ""
        self.token_status = 200
        self.token_requests: list[dict[str, str]] = []
        self.gets: list[str] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> Provider:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/keys", self._keys)
        app.router.add_post("/token", self._token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _discovery(self, request: web.Request) -> web.Response:
        self.gets.append("discovery")
        return web.json_response(
            {
                "issuer": self.issuer_template or self.url,
                "authorization_endpoint": f"{self.url}/authorize",
                "token_endpoint": f"{self.url}/token",
                "jwks_uri": f"{self.url}/keys",
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        )

    async def _keys(self, request: web.Request) -> web.Response:
        self.gets.append("keys")
        return web.json_response(public_jwks(*self.keys))

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.token_requests.append(form)
        if self.token_status != 200:
            return web.json_response(
                {"error": "invalid_grant", "error_description": "AADSTS54005: code already redeemed"},
                status=self.token_status,
            )
        return web.json_response({"token_type": "Bearer", "access_token": "at", "id_token": self.id_token_for(form)})

    def config(self, **changes: Any) -> OidcConfig:
        return config(self.url, **changes)

    def token(self, pending: PendingLogin, key: RSAKey | None = None, **changes: Any) -> None:
        """The token endpoint's next ID tokens: for ``pending``, signed with ``key``."""
        self.id_token_for = lambda form: sign(claims(iss=self.url, nonce=pending.nonce, **changes), key or self.keys[0])


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    server = await Provider().start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def started(provider: Provider, http: aiohttp.ClientSession, cache: ProviderCache) -> PendingLogin:
    _, pending = await oidc.begin(provider.config(), "operator", "/portal/", http, cache=cache)
    return pending


async def test_the_callback_redeems_the_code_with_pkce_and_the_secret(
    provider: Provider, http: aiohttp.ClientSession
) -> None:
    cache = ProviderCache()
    url, pending = await oidc.begin(provider.config(), "operator", "/portal/", http, cache=cache)
    provider.token(pending)
    identity = await oidc.complete(
        provider.config(),
        pending,
        {"code": "the-code", "state": pending.state},
        http,
        cache=cache,
        used_nonces=UsedNonces(),
    )
    assert identity.tid == OPERATORS and oidc.is_operator(identity, provider.config())
    (form,) = provider.token_requests
    challenge = parse_qs(urlsplit(url).query)["code_challenge"][0]
    assert s256(form["code_verifier"]) == challenge
    assert form == {
        "grant_type": "authorization_code",
        "code": "the-code",
        "redirect_uri": REDIRECT,
        "client_id": CLIENT_ID,
        "code_verifier": pending.code_verifier,
        "client_secret": SECRET,
    }
    assert provider.gets == ["discovery", "keys"]  # then cached


async def test_a_federated_credential_is_sent_as_a_client_assertion(
    provider: Provider, http: aiohttp.ClientSession
) -> None:
    asked: list[int] = []

    async def managed_identity_token() -> str:
        asked.append(1)
        return "eyJ.managed-identity.token"

    cfg = provider.config(credential=FederatedAssertion(managed_identity_token))
    assert "managed-identity" not in repr(cfg)
    cache = ProviderCache()
    _, pending = await oidc.begin(cfg, "tenant-admin", "/portal/", http, cache=cache)
    provider.token(pending, tid=CUSTOMER, roles=["Portal.TenantAdmin"])
    identity = await oidc.complete(
        cfg, pending, {"code": "c", "state": pending.state}, http, cache=cache, used_nonces=UsedNonces()
    )
    assert oidc.is_tenant_admin(identity, cfg) and not oidc.is_operator(identity, cfg)
    (form,) = provider.token_requests
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert form["client_assertion"] == "eyJ.managed-identity.token" and "client_secret" not in form
    assert asked == [1]


async def test_a_replayed_callback_fails_without_reaching_the_provider(
    provider: Provider, http: aiohttp.ClientSession
) -> None:
    cache, used = ProviderCache(), UsedNonces()
    pending = await started(provider, http, cache)
    provider.token(pending)
    params = {"code": "the-code", "state": pending.state}
    assert (await oidc.complete(provider.config(), pending, params, http, cache=cache, used_nonces=used)).subject
    with pytest.raises(SignInError) as failure:
        await oidc.complete(provider.config(), pending, params, http, cache=cache, used_nonces=used)
    assert failure.value.code == "replayed"
    assert len(provider.token_requests) == 1


async def test_a_wrong_state_fails_before_any_request(provider: Provider, http: aiohttp.ClientSession) -> None:
    cache = ProviderCache()
    pending = await started(provider, http, cache)
    for params in ({"code": "c", "state": "another-state"}, {"code": "c"}, {"code": "c", "state": "é"}):
        with pytest.raises(SignInError) as failure:
            await oidc.complete(provider.config(), pending, params, http, cache=cache, used_nonces=UsedNonces())
        assert failure.value.code == "state_mismatch"
    assert provider.token_requests == []


async def test_an_access_denied_callback_reports_the_providers_error(
    provider: Provider, http: aiohttp.ClientSession
) -> None:
    cache = ProviderCache()
    pending = await started(provider, http, cache)
    params = {"error": "access_denied", "error_description": "<script>", "state": pending.state}
    with pytest.raises(SignInError) as failure:
        await oidc.complete(provider.config(), pending, params, http, cache=cache, used_nonces=UsedNonces())
    assert (failure.value.code, failure.value.provider_error) == ("provider_error", "access_denied")
    assert "<script>" not in str(failure.value) + failure.value.detail
    # Without a state (a provider that sends none on errors) it is still the error; with another
    # state it is no answer to this sign-in.
    for answer, code in (({"error": "access_denied"}, "provider_error"), (params | {"state": "x"}, "state_mismatch")):
        with pytest.raises(SignInError) as failure:
            await oidc.complete(provider.config(), pending, answer, http, cache=cache, used_nonces=UsedNonces())
        assert failure.value.code == code
    odd = {"error": "<b>odd</b>", "state": pending.state}
    with pytest.raises(SignInError) as failure:
        await oidc.complete(provider.config(), pending, odd, http, cache=cache, used_nonces=UsedNonces())
    assert failure.value.provider_error == "unknown"
    assert provider.token_requests == []


async def test_a_token_endpoint_error_fails_the_sign_in(provider: Provider, http: aiohttp.ClientSession) -> None:
    cache = ProviderCache()
    pending = await started(provider, http, cache)
    provider.token_status = 400
    with pytest.raises(SignInError) as failure:
        await oidc.complete(
            provider.config(),
            pending,
            {"code": "c", "state": pending.state},
            http,
            cache=cache,
            used_nonces=UsedNonces(),
        )
    assert (failure.value.code, failure.value.provider_error) == ("token_exchange_failed", "invalid_grant")
    assert "AADSTS54005" in failure.value.detail and SECRET not in failure.value.detail


async def test_a_pending_login_too_old_is_refused(provider: Provider, http: aiohttp.ClientSession) -> None:
    cache = ProviderCache()
    pending = await started(provider, http, cache)
    old = replace(pending, created_at=pending.created_at - oidc.PENDING_MAX_AGE - 1)
    with pytest.raises(SignInError) as failure:
        await oidc.complete(provider.config(), old, {"code": "c", "state": old.state}, http, cache=cache)
    assert failure.value.code == "expired"


async def test_an_unknown_kid_fetches_the_keys_once_more(provider: Provider, http: aiohttp.ClientSession) -> None:
    clock = [0.0]
    cache = ProviderCache(refresh_interval=60, clock=lambda: clock[0])
    cfg = provider.config()
    # The keys are cached (key-1); then the provider rotates to key-2 and signs with it.
    pending = await started(provider, http, cache)
    provider.token(pending)
    await oidc.complete(
        cfg, pending, {"code": "c", "state": pending.state}, http, cache=cache, used_nonces=UsedNonces()
    )
    provider.keys = [ROTATED]
    pending = await started(provider, http, cache)
    provider.token(pending)
    identity = await oidc.complete(
        cfg, pending, {"code": "c", "state": pending.state}, http, cache=cache, used_nonces=UsedNonces()
    )
    assert identity.subject and provider.gets == ["discovery", "keys", "keys"]

    # A kid the provider does not publish either: one more fetch, then refused.
    clock[0] += 61
    stranger = RSAKey.generate_key(2048, parameters={"kid": "key-3"})
    for expected_gets in (4, 4):  # the second try, within the interval, fetches nothing
        pending = await started(provider, http, cache)
        provider.token(pending, key=stranger)
        with pytest.raises(SignInError) as failure:
            await oidc.complete(
                cfg, pending, {"code": "c", "state": pending.state}, http, cache=cache, used_nonces=UsedNonces()
            )
        assert failure.value.code == "unknown_key"
        assert provider.gets.count("keys") == expected_gets - 1 and len(provider.gets) == expected_gets


async def test_the_multi_tenant_template_over_http(provider: Provider, http: aiohttp.ClientSession) -> None:
    provider.issuer_template = provider.url + "/{tenantid}/v2.0"
    cfg = config(provider.url + "/organizations/v2.0", metadata_url=provider.url + "/.well-known/openid-configuration")
    cache = ProviderCache()
    _, pending = await oidc.begin(cfg, "tenant-admin", "/portal/", http, cache=cache)
    provider.id_token_for = lambda form: sign(
        claims(iss=f"{provider.url}/{CUSTOMER}/v2.0", tid=CUSTOMER, nonce=pending.nonce, roles=["Portal.TenantAdmin"])
    )
    identity = await oidc.complete(
        cfg, pending, {"code": "c", "state": pending.state}, http, cache=cache, used_nonces=UsedNonces()
    )
    assert identity.tid == CUSTOMER and oidc.is_tenant_admin(identity, cfg)


async def test_a_discovery_document_of_another_issuer_is_refused(
    provider: Provider, http: aiohttp.ClientSession
) -> None:
    provider.issuer_template = "https://evil.example"
    with pytest.raises(SignInError) as failure:
        await oidc.begin(provider.config(), "operator", "/portal/", http, cache=ProviderCache())
    assert failure.value.code == "provider_unavailable" and "issuer" in failure.value.detail


async def test_an_unreachable_provider_fails_cleanly(http: aiohttp.ClientSession) -> None:
    from devtools.azurite import free_port

    with pytest.raises(SignInError) as failure:
        await oidc.begin(config(f"http://127.0.0.1:{free_port()}"), "operator", "/portal/", http, cache=ProviderCache())
    assert failure.value.code == "provider_unavailable"


# ---- who may do what ---------------------------------------------------------------------------


def test_operators_hold_the_role_or_group_in_the_operators_tenant() -> None:
    cfg = config(operator_group="33333333-3333-4333-8333-333333333333")
    operator = Identity(subject="s", issuer="i", tid=OPERATORS, roles=("Portal.Operator",))
    assert oidc.is_operator(operator, cfg)
    # The same role assigned by another tenant's admin to their own user makes no operator.
    assert not oidc.is_operator(replace(operator, tid=CUSTOMER), cfg)
    assert not oidc.is_operator(replace(operator, tid=None), cfg)
    assert not oidc.is_operator(replace(operator, roles=("Portal.TenantAdmin",)), cfg)
    member = Identity(subject="s", issuer="i", tid=OPERATORS, groups=("33333333-3333-4333-8333-333333333333",))
    assert oidc.is_operator(member, cfg) and not oidc.is_operator(member, config())
    assert oidc.is_tenant_admin(Identity(subject="s", issuer="i", tid=CUSTOMER, roles=("Portal.TenantAdmin",)), cfg)
    assert not oidc.is_tenant_admin(operator, cfg)


# ---- settings ------------------------------------------------------------------------------------


def test_portal_sign_in_is_off_by_default() -> None:
    settings = Settings.from_env(STORAGE)
    assert not settings.portal_sign_in and OidcConfig.from_settings(settings) is None
    assert settings.portal_authority == "https://login.microsoftonline.com/organizations/v2.0"
    assert (settings.portal_operator_role, settings.portal_tenant_admin_role) == (
        "Portal.Operator",
        "Portal.TenantAdmin",
    )


def test_the_settings_make_the_config() -> None:
    local = Settings.from_env(
        {
            **STORAGE,
            "PORTAL_OIDC_CLIENT_ID": CLIENT_ID,
            "PORTAL_OIDC_AUTHORITY": "http://127.0.0.1:9400/",
            "PORTAL_OIDC_CLIENT_SECRET": SECRET,
            "PORTAL_OPERATOR_GROUP": "33333333-3333-4333-8333-33333333333F",
        }
    )
    cfg = OidcConfig.from_settings(local)
    assert cfg is not None and cfg.credential == ClientSecret(SECRET)
    assert (cfg.authority, cfg.metadata_url) == (
        "http://127.0.0.1:9400",
        "http://127.0.0.1:9400/.well-known/openid-configuration",
    )
    assert cfg.redirect_uri == "http://127.0.0.1:7071/portal/auth/callback"
    assert cfg.operator_group == "33333333-3333-4333-8333-33333333333f"
    assert SECRET not in repr(local) + repr(cfg)
    azure = Settings.from_env(
        {
            "WEBSITE_SITE_NAME": "scim-prod",
            "SCIM_TABLE_ENDPOINT": "https://contoso.table.core.windows.net",
            "SCIM_PUBLIC_BASE_URL": "https://scim.contoso.example",
            "PORTAL_OIDC_CLIENT_ID": CLIENT_ID,
            "PORTAL_OIDC_FEDERATED_CLIENT_ID": "44444444-4444-4444-8444-444444444444",
            "PORTAL_OPERATOR_TENANT_ID": OPERATORS,
        }
    )
    cfg = OidcConfig.from_settings(azure)
    assert cfg is not None and isinstance(cfg.credential, FederatedAssertion)
    assert cfg.redirect_uri == "https://scim.contoso.example/portal/auth/callback"
    assert cfg.authority == "https://login.microsoftonline.com/organizations/v2.0"
    assert cfg.operator_tenant_id == OPERATORS


def test_a_client_secret_is_refused_in_azure_without_showing_it() -> None:
    env = {
        "WEBSITE_SITE_NAME": "scim-prod",
        "SCIM_TABLE_ENDPOINT": "https://contoso.table.core.windows.net",
        "PORTAL_OIDC_CLIENT_SECRET": SECRET,
    }
    for extra in ({}, {"PORTAL_OIDC_CLIENT_ID": CLIENT_ID, "PORTAL_OPERATOR_TENANT_ID": OPERATORS}):
        with pytest.raises(SettingsError) as failure:
            Settings.from_env(env | extra)
        message = str(failure.value)
        assert (
            "PORTAL_OIDC_CLIENT_SECRET is set, and this is Azure" in message
            and "PORTAL_OIDC_FEDERATED_CLIENT_ID" in message
        )
        assert SECRET not in "".join(traceback.format_exception(failure.value))


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (
            {"PORTAL_OIDC_CLIENT_ID": CLIENT_ID, "PORTAL_OPERATOR_TENANT_ID": OPERATORS},
            "PORTAL_OIDC_FEDERATED_CLIENT_ID",
        ),
        (
            {
                "PORTAL_OIDC_CLIENT_ID": CLIENT_ID,
                "PORTAL_OPERATOR_TENANT_ID": OPERATORS,
                "PORTAL_OIDC_CLIENT_SECRET": SECRET,
                "PORTAL_OIDC_FEDERATED_CLIENT_ID": "44444444-4444-4444-8444-444444444444",
            },
            "exactly one",
        ),
        ({"PORTAL_OIDC_CLIENT_ID": CLIENT_ID, "PORTAL_OIDC_CLIENT_SECRET": SECRET}, "PORTAL_OPERATOR_TENANT_ID"),
        ({"PORTAL_OIDC_AUTHORITY": "http://login.example"}, "PORTAL_OIDC_AUTHORITY"),
        ({"PORTAL_OIDC_AUTHORITY": "login.microsoftonline.com"}, "PORTAL_OIDC_AUTHORITY"),
        ({"PORTAL_OPERATOR_TENANT_ID": "contoso.onmicrosoft.com"}, "PORTAL_OPERATOR_TENANT_ID"),
        ({"PORTAL_OPERATOR_GROUP": "Operators"}, "PORTAL_OPERATOR_GROUP"),
    ],
)
def test_an_incomplete_or_bad_portal_setting_fails_naming_it(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as failure:
        Settings.from_env({**STORAGE, **env})
    assert named in str(failure.value)
    assert SECRET not in str(failure.value)


def test_a_config_refuses_plain_http_but_for_a_local_provider() -> None:
    with pytest.raises(ValueError, match="https"):
        config("http://login.example")
    with pytest.raises(ValueError, match="https"):
        config("https://login.example", metadata_url="http://login.example/.well-known/openid-configuration")
    assert config("http://localhost:9400").metadata_url == "http://localhost:9400/.well-known/openid-configuration"
