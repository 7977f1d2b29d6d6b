"""Sign in with Microsoft (issue 14), end to end: the portal in-process (the registered ``portal``
function, :class:`~tests.portal_client.PortalClient` as the browser) against the real local
OpenID Connect provider (``devtools.oidc_provider``, oidc-provider-mock in a child process,
stopped by its PID), whose sign-in form is submitted over HTTP as a browser would.

The memory runtime, built with the settings make run gives the app for that provider: which
tenant an Entra tenant is linked to is a read of every tenant (``tenants.list()``), and a fresh
memory runtime per test keeps each test's links its own (the registry contract's Azurite
behaviour of ``entra_tid`` is tested in tests/test_tenant_lifecycle.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from devtools.oidc_provider import (
    DEV_CUSTOMER_TENANT_ID,
    DEV_OPERATOR_TENANT_ID,
    DEV_USERS,
    OidcProviderProcess,
    portal_environment,
)
from scim.functions.runtime import Runtime, build_memory_runtime, use_runtime
from scim.portal import signin
from scim.portal.sessions import OPERATOR, PENDING_COOKIE, SessionCookies, new_session
from scim.settings import Settings
from tests.helpers import MEMORY_SETTINGS
from tests.portal_client import (
    COOKIE,
    PortalClient,
    Response,
    assert_security_headers,
    audit_actions,
    new_tenant,
    signed_in,
)

CALLBACK = "http://127.0.0.1:7071/portal/auth/callback"
CUSTOMER_ACTOR = f"entra:{DEV_USERS['customer-admin']['oid']}@{DEV_CUSTOMER_TENANT_ID}"


@pytest.fixture(scope="module")
def provider() -> Iterator[OidcProviderProcess]:
    with OidcProviderProcess() as process:
        yield process


@pytest.fixture
async def portal(provider: OidcProviderProcess) -> AsyncIterator[Runtime]:
    """A memory runtime whose portal signs in with the local provider (make run's settings)."""
    built = build_memory_runtime(Settings.from_env({**MEMORY_SETTINGS, **portal_environment(provider.issuer)}))
    use_runtime(built)
    yield built
    use_runtime(None)
    await built.close()
    await signin.close_http()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def at_provider(http: aiohttp.ClientSession, url: str, form: dict[str, str]) -> str:
    """What the browser does on the provider's page: open it, submit ``form``; the path and query
    of the callback it is sent back to."""
    async with http.get(url, allow_redirects=False) as page:
        assert page.status == 200, await page.text()
    async with http.post(url, data=form, allow_redirects=False) as answer:
        assert answer.status == 302, await answer.text()
        location = answer.headers["Location"]
    assert location.startswith(CALLBACK + "?"), location
    parts = urlsplit(location)
    return f"{parts.path}?{parts.query}"


async def start(browser: PortalClient, as_: str = "operator", return_to: str | None = None) -> str:
    """Open the sign-in's start; the provider's authorization URL."""
    url = f"/portal/auth/login?as={as_}" + (f"&return_to={return_to}" if return_to else "")
    started = await browser.get(url)
    assert started.status == 303, started.text
    assert started.location.startswith("http://127.0.0.1:"), started.location
    assert PENDING_COOKIE in browser.cookies
    return started.location


async def sign_in(
    browser: PortalClient, http: aiohttp.ClientSession, sub: str, as_: str = "operator", return_to: str | None = None
) -> Response:
    """A whole sign-in as ``sub``: the callback's answer."""
    callback = await at_provider(http, await start(browser, as_, return_to), {"sub": sub})
    return await browser.get(callback)


def pending_cleared(response: Response) -> bool:
    return any(c.startswith(f"{PENDING_COOKIE}=;") and "Max-Age=0" in c for c in response.cookies_set)


# ---- operators ----------------------------------------------------------------------------------


async def test_an_operator_signs_in_to_the_operator_view(portal, http):
    tenant, _ = await new_tenant(portal)
    browser = PortalClient()
    signin_page = (await browser.get("/portal/")).page()
    login = signin_page.by_id["sign-in"]["attrs"]["href"]
    assert login.startswith("/portal/auth/login") and signin_page.has("sign-in-operator")

    started = await browser.get("/portal/auth/login?as=operator")
    assert started.status == 303
    assert_security_headers(started)
    (pending,) = [c for c in started.cookies_set if c.startswith(f"{PENDING_COOKIE}=")]
    for attribute in ("Path=/portal/auth", "Max-Age=600", "HttpOnly", "SameSite=Lax"):
        assert attribute in pending, pending
    query = parse_qs(urlsplit(started.location).query)
    assert query["code_challenge_method"] == ["S256"] and query["redirect_uri"] == [CALLBACK]

    done = await browser.get(await at_provider(http, started.location, {"sub": "dev-operator"}))
    assert done.status == 303 and done.location == "/portal/ops", done.text
    assert pending_cleared(done) and PENDING_COOKIE not in browser.cookies
    assert COOKIE in browser.cookies
    ops = await browser.get("/portal/ops")
    assert ops.status == 200 and ops.page().has(f"tenant-row-{tenant}")
    assert (await browser.get("/portal/")).location == "/portal/ops"
    page = (await browser.get(f"/portal/t/{tenant}")).page()
    assert page.has("setup-links") and page.has("create-link") and page.has("delete-tenant-link")


async def test_an_operator_goes_back_where_the_sign_in_started(portal, http):
    tenant, _ = await new_tenant(portal)
    browser = PortalClient()
    done = await sign_in(browser, http, "dev-operator", return_to=f"/portal/t/{tenant}")
    assert done.location == f"/portal/t/{tenant}"
    elsewhere = await sign_in(PortalClient(), http, "dev-operator", return_to="https://evil.example/portal/")
    assert elsewhere.location == "/portal/ops"  # not a page of the portal: ignored


async def test_a_user_without_the_role_is_refused(portal, http):
    for sub in ("dev-user", "someone-typed-in"):
        browser = PortalClient()
        refused = await sign_in(browser, http, sub)
        assert refused.status == 403, refused.text
        assert_security_headers(refused)
        assert "not an operator of this deployment" in refused.page().text
        assert pending_cleared(refused) and COOKIE not in browser.cookies
        assert (await browser.get("/portal/ops")).status == 403


async def test_deny_at_the_provider_signs_nobody_in(portal, http):
    browser = PortalClient()
    callback = await at_provider(http, await start(browser), {"action": "deny"})
    refused = await browser.get(callback)
    assert refused.status == 400 and "cancelled or refused" in refused.page().text
    assert pending_cleared(refused) and COOKIE not in browser.cookies


# ---- tenant admins --------------------------------------------------------------------------------


async def test_a_setup_link_session_links_the_customers_entra_tenant(portal, http):
    tenant, _ = await new_tenant(portal)
    other, _ = await new_tenant(portal)
    browser = await signed_in(portal, tenant)
    page = (await browser.get(f"/portal/t/{tenant}")).page()
    href = page.by_id["sign-in-microsoft"]["attrs"]["href"]
    assert href.startswith("/portal/auth/login?as=tenant-admin")

    started = await browser.get(href)
    assert started.status == 303
    done = await browser.get(await at_provider(http, started.location, {"sub": "customer-admin"}))
    assert done.status == 303 and done.location == f"/portal/t/{tenant}", done.text
    assert pending_cleared(done)
    assert (await portal.tenants.info(tenant)).entra_tid == DEV_CUSTOMER_TENANT_ID
    assert (await portal.tenants.info(other)).entra_tid is None
    entry = (await portal.audit.page(tenant)).entries[0]
    assert entry.action == "entra.bound" and entry.actor == CUSTOMER_ACTOR
    assert entry.detail["tid"] == DEV_CUSTOMER_TENANT_ID and entry.detail["via"].startswith("setup-link:")
    page = (await browser.get(f"/portal/t/{tenant}")).page()  # the session goes on, now as entra:...
    assert DEV_CUSTOMER_TENANT_ID in page.element_text("entra-tenant") and not page.has("sign-in-microsoft")
    rotated = await browser.post(f"/portal/t/{tenant}/token/rotate", {"overlap": "1h"})
    assert rotated.status == 200
    assert (await portal.audit.page(tenant)).entries[0].actor == CUSTOMER_ACTOR

    # Later, without a link: the customer's admin signs in and opens that tenant only.
    later = PortalClient()
    opened = await sign_in(later, http, "customer-admin", as_="tenant-admin")
    assert opened.status == 303 and opened.location == f"/portal/t/{tenant}", opened.text
    assert (await later.get(f"/portal/t/{tenant}")).status == 200
    assert (await later.get("/portal/")).location == f"/portal/t/{tenant}"
    assert (await later.get(f"/portal/t/{other}")).status == 403
    assert (await later.get("/portal/ops")).status == 403
    actions = await audit_actions(portal, tenant)
    assert actions[0] == "session.started" and "entra.bound" in actions
    assert (await portal.audit.page(tenant)).entries[0].detail["method"] == "entra"


async def test_an_entra_tenant_linked_to_several_tenants_chooses(portal, http):
    first, _ = await new_tenant(portal)
    second, _ = await new_tenant(portal)
    third, _ = await new_tenant(portal)
    for name in (first, second):
        await portal.tenants.set_entra_tenant(name, DEV_CUSTOMER_TENANT_ID)
    browser = PortalClient()
    done = await sign_in(browser, http, "customer-admin", as_="tenant-admin")
    assert done.status == 303 and done.location == "/portal/", done.text
    chooser = (await browser.get("/portal/")).page()
    assert chooser.has(f"choose-{first}") and chooser.has(f"choose-{second}") and not chooser.has(f"choose-{third}")
    for name in (first, second):
        page = await browser.get(f"/portal/t/{name}")
        assert page.status == 200 and f"Tenant {name}" in page.page().element_text("who")
    assert (await browser.get(f"/portal/t/{third}")).status == 403


async def test_an_unlinked_organisation_or_a_user_without_the_role_is_refused(portal, http):
    refused = await sign_in(PortalClient(), http, "customer-admin", as_="tenant-admin")
    assert refused.status == 403 and "not linked to a tenant" in refused.page().text
    assert "ask your provider for a setup link" in refused.page().text

    tenant, _ = await new_tenant(portal)  # the operators' own tenant linked, dev-user holds no role
    await portal.tenants.set_entra_tenant(tenant, DEV_OPERATOR_TENANT_ID)
    browser = PortalClient()
    no_role = await sign_in(browser, http, "dev-user", as_="tenant-admin")
    assert no_role.status == 403 and "Portal.TenantAdmin" in no_role.page().text
    assert COOKIE not in browser.cookies and (await browser.get(f"/portal/t/{tenant}")).status == 403


async def test_a_link_needs_the_setup_link_session_that_started_it(portal, http):
    tenant, _ = await new_tenant(portal)
    browser = await signed_in(portal, tenant)
    url = await start(browser, "tenant-admin")
    assert (await browser.post("/portal/logout")).status == 200  # the session ends meanwhile
    refused = await browser.get(await at_provider(http, url, {"sub": "customer-admin"}))
    assert refused.status == 403 and "open a new setup link" in refused.page().text
    assert (await portal.tenants.info(tenant)).entra_tid is None


# ---- the pending sign-in's cookie ----------------------------------------------------------------


async def test_a_missing_tampered_or_foreign_pending_cookie_is_refused(portal, http):
    browser = PortalClient()
    callback = await at_provider(http, await start(browser), {"sub": "dev-operator"})
    sealed = browser.cookies.pop(PENDING_COOKIE)
    absent = await browser.get(callback)
    assert absent.status == 400 and "did not start in this browser" in absent.page().text
    assert COOKIE not in browser.cookies

    flipped = sealed[:-3] + ("A" if sealed[-3] != "A" else "B") + sealed[-2:]
    browser.cookies[PENDING_COOKIE] = flipped
    tampered = await browser.get(callback)
    assert tampered.status == 400 and pending_cleared(tampered) and COOKIE not in browser.cookies

    cookies = SessionCookies.for_base_url(await portal.portal_secrets.session_key(), portal.settings.public_base_url)
    session = new_session(OPERATOR, "operator:ops@example.com", datetime.now(UTC))
    browser.cookies[PENDING_COOKIE] = cookies.seal(session)  # a session cookie does not open as a sign-in
    assert (await browser.get(callback)).status == 400 and COOKIE not in browser.cookies

    victim = PortalClient()  # a code obtained in one browser, delivered to another: the states differ
    await start(victim)
    forged = await victim.get(callback)
    assert forged.status == 400 and "could not be matched" in forged.page().text
    assert COOKIE not in victim.cookies


async def test_a_replayed_callback_is_refused(portal, http):
    browser = PortalClient()
    callback = await at_provider(http, await start(browser), {"sub": "dev-operator"})
    sealed = browser.cookies[PENDING_COOKIE]
    assert (await browser.get(callback)).location == "/portal/ops"
    again = PortalClient(cookies={PENDING_COOKIE: sealed}, cookie_paths={PENDING_COOKIE: "/portal/auth"})
    replayed = await again.get(callback)
    assert replayed.status == 400 and "already used" in replayed.page().text
    assert COOKIE not in again.cookies


# ---- sign-in switched off -------------------------------------------------------------------------


async def test_without_sign_in_the_home_page_says_how_to_get_a_setup_link():
    built = build_memory_runtime(Settings.from_env(MEMORY_SETTINGS))
    use_runtime(built)
    try:
        home = await PortalClient().get("/portal/")
        page = home.page()
        assert home.status == 200 and page.has("sign-in-off") and not page.has("sign-in")
        assert "setup link" in page.element_text("sign-in-off")
        login = await PortalClient().get("/portal/auth/login?as=operator")
        assert login.status == 404 and "set up" in login.page().text
        callback = await PortalClient().get("/portal/auth/callback?code=x&state=y")
        assert callback.status == 404 and pending_cleared(callback)
    finally:
        use_runtime(None)
        await built.close()


async def test_closing_the_runtime_closes_the_providers_http_session():
    """The provider's aiohttp session lives for the process; closing the runtime (the local
    host's and make run's shutdown) closes it, so no 'Unclosed client session' error is
    printed at exit (seen when stopping make run)."""
    runtime = build_memory_runtime(Settings.from_env(MEMORY_SETTINGS))
    session = await signin.http_session()
    await runtime.close()
    assert session.closed
