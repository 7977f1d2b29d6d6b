"""The tenant portal in a real browser (issue 14): Debian's Chromium, headless, driven by
Playwright against ``make run``'s stack (the app served over HTTP by ``devtools.localhost`` on a
free port, the session's Azurite, the local OpenID Connect provider), clicked as a person would:
fill, click, read the text of elements by their ids.

Each page a test visits is saved as a PNG (whole pages 1280 px wide, and the first screen of the
tenant page 390 px wide) into ``.local/screenshots/``; ``make screenshots`` saves them into
``docs/screenshots/``, which the README shows (``SCREENSHOTS_DIR``).

Without Chromium (``make test`` installs Debian's ``chromium``: the Makefile's ``chromium``
target) or Playwright, these tests fail in CI (``CI`` set) and are skipped elsewhere, with the
reason. Run them alone with ``.venv/bin/python -m pytest tests/test_portal_browser.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from devtools.oidc_provider import DEV_CUSTOMER_TENANT_ID
from scim.admin.core import Credentials, create_tenant
from scim.functions.runtime import Runtime, build_runtime
from scim.provisioning_log import LogEntry, format_time
from tests.browser_helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    DESKTOP,
    MOBILE,
    Stack,
    chromium_problem,
    save_screenshot,
    start_stack,
)

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page

LINK_REFUSED = "This setup link is not valid: it was used, expired or revoked; ask your provider for a new one."
NOT_YOUR_TENANT = "Your session opens your own tenant's page only."
FORM_REFUSED = "This form was not sent from your current portal page"
LOG_TIMEOUT = 20.0
"""Seconds to wait for a request to reach the provisioning log (written in the background)."""

NewContext = Callable[..., Awaitable["BrowserContext"]]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


# ---- the stack and the browser ------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(azurite: str) -> Iterator[Stack]:
    """make run's stack on free ports, on tables of its own (so tenant names are ours)."""
    with tempfile.TemporaryDirectory(prefix="scim-browser-") as tmp:
        started = start_stack(azurite, "b" + secrets.token_hex(4), Path(tmp))
        try:
            yield started
        finally:
            started.stop()


@pytest.fixture(scope="module")
async def store(stack: Stack) -> AsyncIterator[Runtime]:
    """The app's services on the same storage, for what an operator does (tenants, setup links)."""
    runtime = build_runtime(stack.settings)
    yield runtime
    await runtime.close()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    problem = chromium_problem()
    if problem is not None:
        message = f"the browser tests cannot run: {problem}"
        if _in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def new_context(browser: Browser, stack: Stack) -> AsyncIterator[NewContext]:
    """Makes browser contexts (a fresh profile each: no cookies) that reach 127.0.0.1 only."""
    made: list[BrowserContext] = []

    async def make(viewport: dict[str, int] | None = None, **options: Any) -> BrowserContext:
        context = await browser.new_context(
            base_url=stack.base_url, viewport=viewport or DESKTOP, locale="en-US", **options
        )
        context.set_default_timeout(10_000)
        # The local provider's page links a stylesheet on a CDN: the network is closed, don't wait for it.
        await context.route(re.compile(r"^(?!http://127\.0\.0\.1[:/])"), lambda route: route.abort())
        made.append(context)
        return context

    yield make
    for context in made:
        await context.close()


@pytest.fixture(scope="module")
async def contoso(stack: Stack) -> Credentials:
    """The customer of the walk-through (the README's screenshots)."""
    return await create_tenant(stack.settings, "contoso")


@pytest.fixture(scope="module")
async def fabrikam(stack: Stack) -> Credentials:
    """Another customer."""
    return await create_tenant(stack.settings, "fabrikam")


# ---- helpers ------------------------------------------------------------------------------------


async def setup_link(
    store: Runtime, stack: Stack, tenant: str, *, minutes: int = 60, now: datetime | None = None
) -> str:
    """A setup link's URL, made as ``portal link`` makes it (``…/portal/setup#scimsl_…``)."""
    secret, _ = await store.portal_links.create(tenant, timedelta(minutes=minutes), "operator:browser-test", now=now)
    return stack.settings.portal_setup_url(secret)


async def shoot(page: Page, name: str, *, full_page: bool = True) -> None:
    """A PNG of the page (the whole page, or what the viewport shows) into the screenshots' folder."""
    await page.evaluate("document.fonts.ready")
    save_screenshot(await page.screenshot(full_page=full_page, animations="disabled"), name)


async def text(page: Page, element_id: str) -> str:
    return " ".join((await page.locator(f"#{element_id}").inner_text()).split())


async def open_link(page: Page, stack: Stack, url: str, tenant: str) -> None:
    """Open a setup link and click Continue on its page: the tenant page."""
    response = await page.goto(url)
    assert response is not None and response.status == 200, await page.content()
    await click_continue(page, stack, tenant)


def secret_of(url: str) -> str:
    found = re.search(r"scimsl_[A-Za-z0-9_-]{43}", url)
    assert found, url
    return found.group()


async def click_continue(page: Page, stack: Stack, tenant: str) -> None:
    """Continue on a setup link's page: the tenant page."""
    if "/portal/setup/" in page.url:  # a link of the old form: its page names the tenant
        assert await text(page, "setup-title") == f"Open the portal of tenant {tenant}"
    else:
        assert await text(page, "setup-title") == "Open your tenant's portal"
        assert page.url == f"{stack.base_url}/portal/setup"  # the script took the secret out of the address bar
        assert secret_of(await page.input_value("#setup-link"))
    async with page.expect_navigation(url=f"{stack.base_url}/portal/t/{tenant}"):
        await page.click("#setup-continue")


async def signed_in(new_context: NewContext, store: Runtime, stack: Stack, tenant: str) -> Page:
    """A fresh browser that opened a setup link of ``tenant``: its tenant page."""
    page = await (await new_context()).new_page()
    await open_link(page, stack, await setup_link(store, stack, tenant), tenant)
    return page


async def another_site(page: Page, body: str) -> None:
    """Show ``body`` as a page of another site (``http://mail.example/``, made up here: the
    network is closed), e.g. a webmail with the link, or an attacker's page."""
    html = f"<!doctype html><html><head><title>Another site</title></head><body>{body}</body></html>"
    await page.route("http://mail.example/**", lambda route: route.fulfill(content_type="text/html", body=html))
    await page.goto("http://mail.example/")


async def regenerate(page: Page, tenant: str) -> str:
    """Regenerate token on the tenant page, confirm; the new Secret Token the modal shows."""
    await page.click("#regenerate-token")
    await page.locator("#confirm-regenerate").wait_for()
    await page.click("#confirm-regenerate")
    await page.locator("#new-token").wait_for()
    return await page.input_value("#new-token")


async def scim_status(stack: Stack, method: str, path: str, token: str, body: Any = None) -> int:
    """One SCIM request to the app, as Entra sends it; its status."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"{stack.base_url}{path}", headers=headers, json=body) as answer,
    ):
        await answer.read()
        return answer.status


def user(name: str) -> dict[str, Any]:
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "active": True,
        "name": {"givenName": "Ada", "familyName": "Lovelace"},
    }


# ---- setup links --------------------------------------------------------------------------------


async def test_a_setup_link_opens_the_tenant_page_once(new_context, stack, contoso):
    made = stack.admin("portal", "link", "contoso", "--expires", "1h", "--json")
    assert made.returncode == 0, made.stderr
    url = json.loads(made.stdout)["url"]
    assert url.startswith(f"{stack.base_url}/portal/setup#scimsl_")

    for _ in range(2):  # a mail scanner opens the link first: nothing happens
        scanner = await (await new_context()).new_page()
        response = await scanner.goto(url)
        assert response is not None and response.status == 200
        assert not await scanner.locator("#sign-out").count()

    page = await (await new_context()).new_page()
    response = await page.goto(url)
    assert response is not None and response.status == 200
    assert response.url == f"{stack.base_url}/portal/setup"  # what the server was asked: no secret
    assert page.url == f"{stack.base_url}/portal/setup"  # nor is it left in the address bar (history, bookmarks)
    assert await page.input_value("#setup-link") == url  # the script put the link into the field
    assert await page.locator("#setup-link").is_visible()
    assert "works once" in await text(page, "setup-text")
    assert response.headers["cache-control"] == "no-store" and response.headers["referrer-policy"] == "no-referrer"
    assert [c["name"] for c in await page.context.cookies()] == ["scim_portal_setup"]
    await shoot(page, "setup-link-continue.png")
    await click_continue(page, stack, "contoso")
    assert await text(page, "tenant-title") == "Tenant contoso"
    assert await page.input_value("#tenant-url") == contoso.url == f"{stack.base_url}/scim/contoso"
    assert await page.locator("#sign-out").is_visible()
    assert await page.locator("[data-copy=tenant-url]").is_visible(), "the copy button (shown by the script)"
    await shoot(page, "tenant-page.png")
    await page.set_viewport_size(MOBILE)
    await shoot(page, "tenant-page-mobile.png", full_page=False)  # its first screen

    again = await (await new_context()).new_page()
    response = await again.goto(url)
    assert response is not None and response.status == 200  # the page cannot know the link before Continue
    async with again.expect_response(f"{stack.base_url}/portal/setup") as answer:
        await again.click("#setup-continue")
    assert (await answer.value).status == 410
    assert await text(again, "message") == LINK_REFUSED
    assert not await again.locator("#sign-out").count()
    await shoot(again, "setup-link-refused.png")


async def test_a_link_clicked_on_another_site_opens_after_continue(new_context, store, stack, contoso):
    """The link in a webmail (another site): the page's cookie (SameSite=Lax) is set by that
    navigation and comes with Continue, which Chromium sends with ``Origin: null`` (the page's
    referrer policy is no-referrer) and ``Sec-Fetch-Site: same-origin``."""
    url = await setup_link(store, stack, "contoso")
    page = await (await new_context()).new_page()
    await another_site(page, f'<p><a id="link" href="{url}">Your setup link</a></p>')
    async with page.expect_navigation(url=f"{stack.base_url}/portal/setup"):
        await page.click("#link")
    await click_continue(page, stack, "contoso")
    assert await text(page, "tenant-title") == "Tenant contoso"


async def test_the_setup_links_secret_is_not_in_any_request_url(new_context, store, stack, contoso):
    """The Functions host records every request's URL (Application Insights), as proxies and
    access logs do: the link's secret must never reach a server in a URL. Neither the requests
    the browser makes (opening the link, Continue, the tenant page) nor the local host's request
    log (``GET /portal/... -> 200`` lines) hold it."""
    url = await setup_link(store, stack, "contoso")
    secret = re.search(r"scimsl_[A-Za-z0-9_-]{43}", url)
    assert secret, url
    context = await new_context()
    requested: list[str] = []
    context.on("request", lambda request: requested.append(request.url))
    page = await context.new_page()
    logged_before = len(stack.log_path.read_bytes())
    await open_link(page, stack, url, "contoso")  # the address bar loses the fragment: click_continue
    assert await text(page, "tenant-title") == "Tenant contoso"
    log = stack.log_path.read_bytes()[logged_before:].decode(errors="replace")
    assert "/portal/t/contoso -> 200" in log, log  # the host logs each request's path
    assert [u for u in requested if "/portal/" in u], requested
    assert [u for u in requested if secret.group() in u] == []
    assert [line for line in log.splitlines() if secret.group() in line] == []


async def test_two_setup_links_open_in_two_tabs_each_continue(new_context, store, stack, contoso, fabrikam):
    """An admin who sets up two customers opens both links, then clicks Continue in the first
    tab: each link's page has its own cookie, so the second page does not spoil the first."""
    context = await new_context()
    first, second = await context.new_page(), await context.new_page()
    for page, tenant in ((first, "contoso"), (second, "fabrikam")):
        response = await page.goto(await setup_link(store, stack, tenant))
        assert response is not None and response.status == 200, await page.content()
    await click_continue(first, stack, "contoso")
    await click_continue(second, stack, "fabrikam")
    assert await text(second, "tenant-title") == "Tenant fabrikam"


async def test_two_setup_links_clicked_in_a_webmail_each_continue(new_context, store, stack, contoso, fabrikam):
    """Both links clicked in a webmail (another site), each into a tab of its own, then Continue
    in the first: the second page, opened by a navigation from another site, still sees the
    first page's cookie (SameSite=Lax: sent with a top-level GET, never with another site's
    POST) and keeps its token."""
    context = await new_context()
    first, second = await context.new_page(), await context.new_page()
    for page, tenant in ((first, "contoso"), (second, "fabrikam")):
        url = await setup_link(store, stack, tenant)
        await another_site(page, f'<p><a id="link" href="{url}">Your setup link</a></p>')
        async with page.expect_navigation(url=f"{stack.base_url}/portal/setup"):
            await page.click("#link")
    await click_continue(first, stack, "contoso")
    await click_continue(second, stack, "fabrikam")
    assert await text(second, "tenant-title") == "Tenant fabrikam"


async def test_without_javascript_the_link_is_pasted_into_the_field(new_context, store, stack, contoso):
    url = await setup_link(store, stack, "contoso")
    page = await (await new_context(java_script_enabled=False)).new_page()
    response = await page.goto(url)
    assert response is not None and response.status == 200
    assert await page.input_value("#setup-link") == ""  # no script: nothing reads the fragment
    assert await page.locator("#setup-link").is_visible()
    await page.fill("#setup-link", url)  # the admin pastes the link they were given
    async with page.expect_navigation(url=f"{stack.base_url}/portal/t/contoso"):
        await page.click("#setup-continue")
    assert await text(page, "tenant-title") == "Tenant contoso"


async def test_a_link_of_the_old_form_still_opens(new_context, store, stack, contoso):
    """Links handed out before the fragment form (``/portal/setup/{secret}``) keep working until they expire."""
    secret, _ = await store.portal_links.create("contoso", timedelta(minutes=60), "operator:browser-test")
    page = await (await new_context()).new_page()
    await open_link(page, stack, f"{stack.base_url}/portal/setup/{secret}", "contoso")
    assert await text(page, "tenant-title") == "Tenant contoso"


async def test_another_site_cannot_post_a_setup_link(new_context, store, stack, contoso):
    """Login CSRF: an attacker's page posts a setup link of the attacker's tenant from the
    victim's browser. Refused even in a browser that opened the link's page and with that page's
    token (which the attacker cannot read): the page's cookie is SameSite=Lax (not sent with
    another site's POST), and the POST
    comes from another site (``Origin``, ``Sec-Fetch-Site``). The link stays open."""
    url = await setup_link(store, stack, "contoso")
    page = await (await new_context()).new_page()
    assert (response := await page.goto(url)) is not None and response.status == 200
    token = await page.input_value("input[name=setup_token]")
    action = f"{stack.base_url}/portal/setup"
    form = (
        f'<form id="forged" method="post" action="{action}"><input type="hidden" name="link" value="{url}">'
        f'<input type="hidden" name="setup_token" value="{token}"><button id="send">Go</button></form>'
    )
    await another_site(page, form)
    async with page.expect_response(action) as answer:
        await page.click("#send")
    assert (await answer.value).status == 403
    assert await text(page, "message-title") == "Open the setup link again"
    assert not await page.locator("#sign-out").count()
    assert (await store.portal_links.check(secret_of(url))) is not None  # not used up
    await page.goto(url)  # opened again in this tab (the refusal's own URL, /portal/setup): it works
    await page.wait_for_function("() => (document.getElementById('setup-link') || {}).value")
    await click_continue(page, stack, "contoso")
    assert await text(page, "tenant-title") == "Tenant contoso"


async def test_expired_and_revoked_links_are_refused(new_context, store, stack):
    tenant = "northwind"
    await create_tenant(stack.settings, tenant)
    made_earlier = datetime.now(UTC) - timedelta(minutes=6)
    expired = await setup_link(store, stack, tenant, minutes=5, now=made_earlier)
    revoked = await setup_link(store, stack, tenant, minutes=5)
    revoking = stack.admin("portal", "revoke-links", tenant)
    assert revoking.returncode == 0 and "Revoked 1 open setup link" in revoking.stdout, revoking

    for url in (expired, revoked):
        page = await (await new_context()).new_page()
        response = await page.goto(url)
        assert response is not None and response.status == 200, url
        async with page.expect_response(f"{stack.base_url}/portal/setup") as answer:
            await page.click("#setup-continue")
        assert (await answer.value).status == 410, url
        assert await text(page, "message") == LINK_REFUSED
        response = await page.goto(f"/portal/t/{tenant}")  # and no session was started
        assert response is not None and response.status == 403


# ---- Secret Token, Test connection, notifications -----------------------------------------------


async def test_regenerate_token_replaces_every_other_token(new_context, store, stack, contoso):
    page = await signed_in(new_context, store, stack, "contoso")
    await page.click("#regenerate-token")
    await page.locator("#confirm-regenerate").wait_for()
    assert page.url.startswith(f"{stack.base_url}/portal/t/contoso/token/regenerate")
    assert "The current token stops working at once." in await text(page, "regenerate-warning")
    await shoot(page, "regenerate-confirm.png")
    await page.click("#confirm-regenerate")
    await page.locator("#new-token").wait_for()
    token = await page.input_value("#new-token")
    token_id = await text(page, "new-token-id")
    assert await page.input_value("#tenant-url") == contoso.url
    assert token and token != contoso.token and re.fullmatch(r"[A-Za-z0-9_-]+", token_id)
    await shoot(page, "new-token.png")

    listing = "/scim/contoso/Users?filter=userName%20eq%20%22nobody%40contoso.example%22"
    assert await scim_status(stack, "GET", listing, token) == 200
    assert await scim_status(stack, "GET", listing, contoso.token) == 401

    # Test connection in the portal: Entra's request with the pasted token.
    await page.goto("/portal/t/contoso#test-connection")
    assert await page.locator(f"#token-{token_id}").count() == 1
    await page.fill("#test-token", token)
    await page.click("#test-connection-button")
    await page.locator("#result-headline").wait_for()
    ok_headline = await text(page, "result-headline")
    await shoot(page, "test-connection.png")
    await page.goto("/portal/t/contoso#test-connection")
    await page.fill("#test-token", contoso.token)
    await page.click("#test-connection-button")
    await page.locator("#result-headline").wait_for()
    bad_headline = await text(page, "result-headline")
    assert "invalid credentials" not in ok_headline.lower() and "invalid credentials" in bad_headline.lower()
    assert ok_headline != bad_headline


async def test_notification_email_is_saved_and_shown_by_the_cli(new_context, store, stack, contoso):
    page = await signed_in(new_context, store, stack, "contoso")
    await page.fill("#notify-emails", "it-admin@contoso.example\nnot-an-address")
    await page.check("#notify-enabled")
    await page.click("#save-notifications")
    assert "Not an email address: not-an-address" in await text(page, "form-errors")

    await page.fill("#notify-emails", "it-admin@contoso.example, oncall@contoso.example")
    await page.click("#save-notifications")
    await page.locator("#flash").wait_for()
    assert await text(page, "flash") == "Notification settings saved."
    assert await page.input_value("#notify-emails") == "it-admin@contoso.example\noncall@contoso.example"
    assert await page.is_checked("#notify-enabled")
    assert "notify.updated" in await text(page, "audit-entries")

    listed = stack.admin("tenant", "list")
    assert listed.returncode == 0, listed.stderr
    (line,) = [row for row in listed.stdout.splitlines() if row.split("\t")[0] == "contoso"]
    assert line.endswith("digests to it-admin@contoso.example, oncall@contoso.example"), line


# ---- provisioning logs and the chart ------------------------------------------------------------


async def test_a_failed_request_shows_in_the_logs_and_the_chart(new_context, store, stack, contoso):
    page = await signed_in(new_context, store, stack, "contoso")
    token = await regenerate(page, "contoso")
    name = f"ada-{secrets.token_hex(3)}@contoso.example"
    assert await scim_status(stack, "POST", "/scim/contoso/Users", token, user(name)) == 201
    assert await scim_status(stack, "POST", "/scim/contoso/Users", token, user(name)) == 409
    assert await scim_status(stack, "GET", "/scim/contoso/Users/no-such-user", token) == 404

    deadline = time.monotonic() + LOG_TIMEOUT
    await page.goto("/portal/t/contoso")
    while True:
        await page.reload()
        shown = await page.locator("#log-entries td.status").all_inner_texts()
        if {"409", "404"} <= set(shown) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert {"201", "409", "404"} <= set(shown), shown
    logs = await text(page, "log-entries")
    assert "POST /Users" in logs and "GET /Users/{id}" in logs and name in logs
    chart = page.locator("#activity-chart")
    assert await chart.locator(".bar-failures").count() >= 1
    assert re.search(r"\b[2-9]\d* failures in the last 7 days", await chart.locator("desc").text_content() or "")
    assert "requests failed in the last 24 hours" in await text(page, "failure-ratio")
    save_screenshot(await page.locator("#activity").screenshot(), "activity.png")

    await page.check("#filter-failures")
    await page.click("#apply-filters")
    await page.wait_for_url("**failures=1**")
    failed = await page.locator("#log-entries td.status").all_inner_texts()
    assert failed and all(status >= "400" for status in failed) and {"409", "404"} <= set(failed)
    save_screenshot(await page.locator("#logs").screenshot(), "provisioning-logs.png")


# ---- operators: sign-in with Microsoft (the local provider) and the operator view ---------------


async def sign_in_with_microsoft(page: Page, stack: Stack, user: str) -> None:
    """On the portal's sign-in page: Operator sign-in, then ``user``'s button on the provider's page."""
    await page.click("#sign-in-operator")
    await page.wait_for_url(f"{stack.provider.issuer}/**")
    await page.click(f"button[name=sub][value={user}]")
    await page.wait_for_url(f"{stack.base_url}/portal/**")


async def test_an_operator_signs_in_and_makes_a_setup_link(new_context, store, stack, contoso):
    # a row as wide as a real one: two digest recipients, a linked Entra tenant
    await store.tenants.set_notifications("contoso", ["it-admin@contoso.example", "oncall@contoso.example"], True)
    await store.tenants.set_entra_tenant("contoso", "22222222-2222-4222-8222-222222222222")
    for i, status in enumerate((200, 201, 409)):  # a last request and a failure share to show
        now = format_time(datetime.now(UTC))
        store.log_writer.submit("contoso", LogEntry(now, "POST /Users", status, f"ops-row-{i}", 5.0))
    await store.log_writer.drain()
    page = await (await new_context()).new_page()
    await page.goto("/portal/")
    assert await page.locator("#sign-in-operator").is_visible()
    await shoot(page, "ops-sign-in.png")
    await sign_in_with_microsoft(page, stack, "dev-operator")
    assert page.url == f"{stack.base_url}/portal/ops"
    assert await text(page, "ops-title") == "Tenants"
    assert await page.locator("#tenant-row-contoso").count() == 1
    await shoot(page, "ops-tenants.png")
    # The table fits a desktop window: no action is cut off (found in a click-through, where
    # "Create setup link" was clipped at 1280 px by the dates that would not wrap).
    scroll, width = await page.evaluate(
        "() => { const t = document.querySelector('#ops-tenants').parentElement; return [t.scrollWidth, t.clientWidth] }"
    )
    assert scroll <= width, (scroll, width)

    await page.click("#create-link-contoso")
    await page.locator("#setup-link-url").wait_for()
    url = await page.input_value("#setup-link-url")
    assert url.startswith(f"{stack.base_url}/portal/setup#scimsl_")
    await shoot(page, "ops-setup-link.png")
    await page.click("#nav-ops")
    await page.click("#open-contoso")  # an operator opens every tenant's page
    assert await text(page, "tenant-title") == "Tenant contoso"

    admin = await (await new_context()).new_page()  # the customer's IT admin, with the link
    await open_link(admin, stack, url, "contoso")
    assert await admin.input_value("#tenant-url") == contoso.url
    response = await admin.goto("/portal/ops")
    assert response is not None and response.status == 403
    await store.tenants.set_entra_tenant("contoso", None)


async def test_a_user_without_the_operator_role_is_not_let_in(new_context, stack):
    page = await (await new_context()).new_page()
    await page.goto("/portal/")
    await sign_in_with_microsoft(page, stack, "dev-user")
    assert await text(page, "message-title") == "Not allowed in"
    assert not await page.locator("#sign-out").count()
    response = await page.goto("/portal/ops")
    assert response is not None and response.status == 403


async def test_a_tenant_admin_links_their_organisation_then_signs_in_with_microsoft(
    new_context, store, stack, contoso, fabrikam
):
    page = await signed_in(new_context, store, stack, "contoso")
    await page.click("#sign-in-microsoft")
    await page.wait_for_url(f"{stack.provider.issuer}/**")
    await page.click("button[name=sub][value=customer-admin]")
    await page.wait_for_url(f"{stack.base_url}/portal/t/contoso**")
    assert DEV_CUSTOMER_TENANT_ID in await text(page, "entra-tenant")

    later = await (await new_context()).new_page()  # another day, no setup link
    await later.goto("/portal/")
    await later.click("#sign-in")
    await later.wait_for_url(f"{stack.provider.issuer}/**")
    await later.click("button[name=sub][value=customer-admin]")
    await later.wait_for_url(f"{stack.base_url}/portal/t/contoso**")
    assert await text(later, "tenant-title") == "Tenant contoso"
    response = await later.goto("/portal/t/fabrikam")
    assert response is not None and response.status == 403


# ---- tenant isolation and CSRF ------------------------------------------------------------------


async def test_a_tenant_admin_cannot_open_another_tenant(new_context, store, stack, contoso, fabrikam):
    page = await signed_in(new_context, store, stack, "contoso")
    for path in ("/portal/t/fabrikam", "/portal/t/fabrikam/token/regenerate"):
        response = await page.goto(path)
        assert response is not None and response.status == 403, path
        assert await text(page, "message") == NOT_YOUR_TENANT
    await shoot(page, "not-your-tenant.png")

    # The confirmation's form, pointed at the other tenant (what a forged form does), with a valid CSRF token.
    await page.goto("/portal/t/contoso/token/regenerate")
    await page.eval_on_selector(
        "#confirm-regenerate", "button => button.form.setAttribute('action', '/portal/t/fabrikam/token/regenerate')"
    )
    await page.click("#confirm-regenerate")
    assert await text(page, "message") == NOT_YOUR_TENANT
    # A form posted by hand with this session's cookie and CSRF token.
    await page.goto("/portal/t/contoso")
    csrf = await page.input_value("#notifications input[name=csrf_token]")
    for action, form in (
        ("notifications", {"csrf_token": csrf, "notify": "attacker@evil.example", "enabled": "on"}),
        ("token/rotate", {"csrf_token": csrf, "overlap": "24h"}),
    ):
        answer = await page.request.post(f"/portal/t/fabrikam/{action}", form=form, max_redirects=0)
        assert answer.status == 403, (action, answer.status)
    # A session of fabrikam opens fabrikam and not contoso.
    other = await signed_in(new_context, store, stack, "fabrikam")
    assert (response := await other.goto("/portal/t/contoso")) is not None and response.status == 403

    assert await scim_status(stack, "GET", "/scim/fabrikam/Users?count=1", fabrikam.token) == 200
    info = await store.tenants.info("fabrikam")
    assert info.notify == () and not info.notify_enabled
    assert len(await store.tenants.list_tokens("fabrikam")) == 1


async def test_posts_without_the_csrf_token_are_refused(new_context, store, stack, contoso):
    page = await signed_in(new_context, store, stack, "contoso")
    before = await store.tenants.info("contoso")
    await page.eval_on_selector("#save-notifications", "button => button.form.elements.csrf_token.remove()")
    await page.fill("#notify-emails", "attacker@evil.example")
    await page.click("#save-notifications")
    assert await text(page, "message-title") == "Form refused"
    assert FORM_REFUSED in await text(page, "message")
    await shoot(page, "form-refused.png")

    await page.goto("/portal/t/contoso")
    await page.eval_on_selector("#save-notifications", "button => button.form.elements.csrf_token.value = 'forged'")
    await page.fill("#notify-emails", "attacker@evil.example")
    await page.click("#save-notifications")
    assert await text(page, "message-title") == "Form refused"
    answer = await page.request.post("/portal/t/contoso/token/rotate", form={"overlap": "1h"}, max_redirects=0)
    assert answer.status == 403
    assert await store.tenants.info("contoso") == before
