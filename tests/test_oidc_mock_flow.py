"""Portal sign-in end to end against the local OpenID Connect provider that make run starts
(``devtools.oidc_provider``: oidc-provider-mock in a child process on 127.0.0.1): the
authorization code flow with PKCE, driven the way a browser does it. ``begin`` gives the
authorization URL; a GET of it shows the provider's sign-in form; a POST of that form with a
``sub`` (a predefined user's button) or ``action=deny`` redirects to our callback with a code
(or an error); ``complete`` redeems the code and validates the ID token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from devtools.oidc_provider import (
    DEV_CLIENT_ID,
    DEV_CUSTOMER_TENANT_ID,
    DEV_OPERATOR_TENANT_ID,
    DEV_USERS,
    OidcProviderProcess,
    apply_portal_defaults,
    portal_environment,
    uses_local_provider,
)
from scim.portal import oidc
from scim.portal.oidc import OidcConfig, PendingLogin, ProviderCache, SignInError, UsedNonces
from scim.settings import Settings

CALLBACK = "http://127.0.0.1:7071/portal/auth/callback"


@pytest.fixture(scope="module")
def provider() -> Iterator[OidcProviderProcess]:
    with OidcProviderProcess() as process:
        yield process


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def config(provider: OidcProviderProcess) -> OidcConfig:
    """The configuration make run gives the app: its settings for the local provider."""
    env = {"SCIM_TABLE_CONNECTION_STRING": "UseDevelopmentStorage=true", **portal_environment(provider.issuer)}
    config = OidcConfig.from_settings(Settings.from_env(env))
    assert config is not None and config.redirect_uri == CALLBACK
    return config


async def sign_in(http: aiohttp.ClientSession, url: str, form: dict[str, str]) -> dict[str, str]:
    """What a browser does on the provider's page: open it, submit ``form``; the callback's query."""
    async with http.get(url, allow_redirects=False) as page:
        assert page.status == 200, await page.text()
        html = await page.text()
    assert all(f'value="{sub}"' in html for sub in DEV_USERS), "a button per predefined user"
    async with http.post(url, data=form, allow_redirects=False) as answer:
        assert answer.status == 302, await answer.text()
        location = answer.headers["Location"]
    assert location.startswith(CALLBACK + "?"), location
    return {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}


async def signed_in(
    config: OidcConfig, http: aiohttp.ClientSession, sub: str, purpose: oidc.Purpose = "operator"
) -> oidc.Identity:
    url, pending = await oidc.begin(config, purpose, "/portal/", http, cache=ProviderCache())
    restored = PendingLogin.from_json(pending.to_json())  # the web layer's cookie, round trip
    params = await sign_in(http, url, {"sub": sub})
    assert params["state"] == pending.state and params["code"]
    return await oidc.complete(config, restored, params, http, cache=ProviderCache(), used_nonces=UsedNonces())


async def test_an_operator_signs_in(
    config: OidcConfig, provider: OidcProviderProcess, http: aiohttp.ClientSession
) -> None:
    identity = await signed_in(config, http, "dev-operator")
    assert identity.issuer == provider.issuer and identity.subject == "dev-operator"
    assert (identity.tid, identity.oid) == (DEV_OPERATOR_TENANT_ID, DEV_USERS["dev-operator"]["oid"])
    assert (identity.name, identity.email) == ("Dev Operator", "operator@localhost")
    assert identity.roles == ("Portal.Operator",)
    assert oidc.is_operator(identity, config) and not oidc.is_tenant_admin(identity, config)


async def test_a_user_without_the_role_is_no_operator(config: OidcConfig, http: aiohttp.ClientSession) -> None:
    identity = await signed_in(config, http, "dev-user")
    assert identity.tid == DEV_OPERATOR_TENANT_ID and identity.roles == ()
    assert not oidc.is_operator(identity, config)
    typed = await signed_in(config, http, "someone-typed-in")  # the form's free field: no claims but sub
    assert typed.subject == "someone-typed-in" and not oidc.is_operator(typed, config)


async def test_a_customers_tenant_admin_signs_in(config: OidcConfig, http: aiohttp.ClientSession) -> None:
    identity = await signed_in(config, http, "customer-admin", purpose="tenant-admin")
    assert identity.tid == DEV_CUSTOMER_TENANT_ID and identity.roles == ("Portal.TenantAdmin",)
    assert oidc.is_tenant_admin(identity, config) and not oidc.is_operator(identity, config)


async def test_deny_on_the_providers_page_is_access_denied(config: OidcConfig, http: aiohttp.ClientSession) -> None:
    url, pending = await oidc.begin(config, "operator", "/portal/", http, cache=ProviderCache())
    params = await sign_in(http, url, {"action": "deny"})
    with pytest.raises(SignInError) as failure:
        await oidc.complete(config, pending, params, http, cache=ProviderCache(), used_nonces=UsedNonces())
    assert (failure.value.code, failure.value.provider_error) == ("provider_error", "access_denied")


async def test_a_code_redeemed_without_its_pkce_verifier_is_refused(
    config: OidcConfig, http: aiohttp.ClientSession
) -> None:
    """The provider checks the verifier against the S256 challenge of the authorization request."""
    url, pending = await oidc.begin(config, "operator", "/portal/", http, cache=ProviderCache())
    params = await sign_in(http, url, {"sub": "dev-operator"})
    other = replace(pending, code_verifier="x" * 64)
    with pytest.raises(SignInError) as failure:
        await oidc.complete(config, other, params, http, cache=ProviderCache(), used_nonces=UsedNonces())
    assert (failure.value.code, failure.value.provider_error) == ("token_exchange_failed", "invalid_grant")
    assert "PKCE" in failure.value.detail


async def test_a_replayed_callback_is_refused(config: OidcConfig, http: aiohttp.ClientSession) -> None:
    """On this instance by the used nonce, before the provider is asked; elsewhere (another
    instance's memory) by the provider, which redeems a code once."""
    url, pending = await oidc.begin(config, "operator", "/portal/", http, cache=ProviderCache())
    params = await sign_in(http, url, {"sub": "dev-operator"})
    used = UsedNonces()
    assert (await oidc.complete(config, pending, params, http, cache=ProviderCache(), used_nonces=used)).subject
    with pytest.raises(SignInError) as here:
        await oidc.complete(config, pending, params, http, cache=ProviderCache(), used_nonces=used)
    assert here.value.code == "replayed"
    with pytest.raises(SignInError) as elsewhere:
        await oidc.complete(config, pending, params, http, cache=ProviderCache(), used_nonces=UsedNonces())
    assert (elsewhere.value.code, elsewhere.value.provider_error) == ("token_exchange_failed", "invalid_grant")


async def test_the_callback_of_another_sign_in_is_refused(config: OidcConfig, http: aiohttp.ClientSession) -> None:
    """A code obtained in one browser and delivered to another (login CSRF): the states differ."""
    url, _ = await oidc.begin(config, "operator", "/portal/", http, cache=ProviderCache())
    params = await sign_in(http, url, {"sub": "dev-operator"})
    _, victim = await oidc.begin(config, "operator", "/portal/", http, cache=ProviderCache())
    with pytest.raises(SignInError) as failure:
        await oidc.complete(config, victim, params, http, cache=ProviderCache(), used_nonces=UsedNonces())
    assert failure.value.code == "state_mismatch"


def test_make_run_defaults_leave_a_configured_client_alone(provider: OidcProviderProcess) -> None:
    env: dict[str, str] = {"PORTAL_OIDC_CLIENT_ID": ""}  # empty, as local.settings.json from the sample
    assert uses_local_provider(env)
    assert apply_portal_defaults(env, provider.issuer) == sorted(portal_environment(provider.issuer))
    assert env["PORTAL_OIDC_CLIENT_ID"] == DEV_CLIENT_ID and env["PORTAL_OIDC_AUTHORITY"] == provider.issuer
    mine = {"PORTAL_OIDC_CLIENT_ID": "my-app-registration"}
    assert not uses_local_provider(mine) and apply_portal_defaults(mine, provider.issuer) == []
    assert mine == {"PORTAL_OIDC_CLIENT_ID": "my-app-registration"}


def test_the_provider_child_is_stopped_by_its_pid() -> None:
    process = OidcProviderProcess().start()
    pid, issuer = process.pid, process.issuer
    assert process.running and issuer.startswith("http://127.0.0.1:")
    process.stop()
    assert not process.running and pid is not None
    assert process.proc is not None and process.proc.returncode is not None
