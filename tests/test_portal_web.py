"""The tenant portal's web layer (issue 14), through the registered ``portal`` function.

A :class:`~tests.portal_client.PortalClient` is one browser (it keeps cookies and the last page's
CSRF token); the SCIM endpoint is called with :class:`~tests.functions_client.FunctionsClient`.
Tests of the ``runtime`` fixture run on the memory runtime and on Azurite.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from scim.functions.runtime import build_memory_runtime, build_runtime, use_runtime
from scim.portal import pages, web
from scim.portal.chart import activity as chart_activity
from scim.portal.chart import hour_starts
from scim.portal.context import Context, Portal, Refused, require_operator
from scim.portal.http import CONTENT_SECURITY_POLICY, PortalRequest
from scim.portal.links import SetupLink
from scim.portal.sessions import IDLE_TIMEOUT, OPERATOR, SETUP_MAX_AGE, TENANT_ADMIN, SessionCookies, new_session
from scim.provisioning_log import HourCount, LogEntry, format_time
from scim.settings import Settings
from scim.store.base import StoreUnavailable
from tests.functions_client import FunctionsClient
from tests.helpers import MEMORY_SETTINGS, admin, admin_env, create_user, new_user, smtp_server
from tests.portal_client import (
    COOKIE,
    SETUP_COOKIE,
    SETUP_PAGE,
    Page,
    PortalClient,
    assert_security_headers,
    audit_actions,
    audit_text,
    make_link,
    new_tenant,
    old_link,
    operator_browser,
    signed_in,
)

LINK_REFUSED = "This setup link is not valid: it was used, expired or revoked; ask your provider for a new one."


@dataclass
class Clock:
    """The portal's clock, moved by the test."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Iterator[Clock]:
    fixed = Clock(datetime.now(UTC))
    web.use_clock(fixed)
    yield fixed
    web.use_clock(None)


def statuses(page: Page) -> list[str]:
    """The status column of the log section, newest first."""
    return re.findall(r'<td class="status">(\d+)</td>', page.source)


# ---- setup links --------------------------------------------------------------------------------


def link_status(links: list[SetupLink]) -> list[str]:
    return [link.status() for link in links]


def assert_accessible_and_script_free(page: Page) -> None:
    """Every control has a label; the page is in English; no inline script, handler or style
    (the Content-Security-Policy would block them)."""
    for control in re.findall(r'<(?:input|select|textarea)\b[^>]*\bid="([^"]+)"', page.source):
        assert f'for="{control}"' in page.source, control
    assert '<html lang="en">' in page.source
    assert "<style" not in page.source and " style=" not in page.source
    assert not re.search(r"<script(?![^>]*\bsrc=)", page.source) and not re.search(r"\son[a-z]+=", page.source)


async def test_the_setup_page_asks_for_the_link_and_sets_its_cookie(runtime, clock):
    """``GET /portal/setup``: the link's secret is in the URL's fragment, which the browser never
    sends, so the page names no tenant; it has the "Setup link" field (the script fills it in),
    Continue, and the cookie of the form's token. Nothing is read, used up or started."""
    tenant, _ = await new_tenant(runtime)
    await make_link(runtime, tenant, now=clock.now)
    browser = PortalClient()
    shown = await browser.get(SETUP_PAGE)
    assert shown.status == 200
    assert_security_headers(shown)
    assert shown.headers["cache-control"] == "no-store" and shown.headers["referrer-policy"] == "no-referrer"
    (cookie,) = shown.cookies_set  # the page's, never a session
    attributes = [part.strip() for part in cookie.split(";")]
    assert attributes[0].startswith(f"{SETUP_COOKIE}=")
    assert {"HttpOnly", "SameSite=Lax", "Path=/portal/setup", f"Max-Age={SETUP_MAX_AGE}"} <= set(attributes)
    assert "Secure" not in attributes  # http://127.0.0.1: the local host
    assert COOKIE not in browser.cookies
    page = shown.page()
    assert page.element_text("setup-title") == "Open your tenant's portal" and tenant not in page.text
    assert "works once" in page.element_text("setup-text")
    assert "scanners" in page.element_text("setup-why")
    form = page.form(SETUP_PAGE)
    assert form["attrs"]["method"] == "post" and set(form["inputs"]) == {"link", "setup_token"}
    token = form["inputs"]["setup_token"]
    assert token and token not in cookie and form["inputs"]["link"] == ""
    field = page.by_id["setup-link"]["attrs"]
    assert field["name"] == "link" and field["type"] == "text" and "hidden" not in field  # pasted without a script
    assert re.search(r'<label for="setup-link">Setup link</label>', page.source)
    assert page.by_id["setup-continue"]["tag"] == "button" and page.element_text("setup-continue") == "Continue"
    assert not page.has("sign-out") and not page.has("setup-ends-session")
    assert_accessible_and_script_free(page)

    # A second setup page in the same browser (a second link, in another tab) keeps the token:
    # the first page's Continue still works.
    clock.advance(minutes=5)
    second = await browser.get(SETUP_PAGE)
    assert second.status == 200 and second.page().form(SETUP_PAGE)["inputs"]["setup_token"] == token
    (renewed,) = second.cookies_set
    assert renewed.startswith(f"{SETUP_COOKIE}=") and "Path=/portal/setup;" in renewed
    assert (await PortalClient().get(SETUP_PAGE)).page().form(SETUP_PAGE)["inputs"]["setup_token"] != token
    clock.advance(seconds=SETUP_MAX_AGE)  # a cookie too old for its Continue is not kept
    third = await browser.get(SETUP_PAGE)
    assert third.page().form(SETUP_PAGE)["inputs"]["setup_token"] != token
    assert link_status(await runtime.portal_links.list(tenant)) == ["open"]
    assert await audit_actions(runtime, tenant) == []
    assert COOKIE not in browser.cookies


async def test_two_setup_pages_in_one_browser_each_continue(runtime):
    first_tenant, _ = await new_tenant(runtime)
    second_tenant, _ = await new_tenant(runtime)
    first = runtime.settings.portal_setup_url(await make_link(runtime, first_tenant))
    second = runtime.settings.portal_setup_url(await make_link(runtime, second_tenant))
    browser = PortalClient()
    first_page, second_page = await browser.view_link(first), await browser.view_link(second)
    opened = await browser.continue_link(first, first_page)
    assert opened.status == 303 and opened.location == f"/portal/t/{first_tenant}", opened.text
    opened = await browser.continue_link(second, second_page)
    assert opened.status == 303 and opened.location == f"/portal/t/{second_tenant}", opened.text


async def test_continue_redeems_the_link_in_the_field_once(runtime):
    """The field takes the link as the script fills it in (the fragment form), as pasted (either
    form of URL) or the bare secret; Continue redeems it: a session, the audit entry, the tenant."""
    tenant, _ = await new_tenant(runtime)
    base = runtime.settings.public_base_url
    for made in (
        runtime.settings.portal_setup_url,
        lambda secret: f"{base}/portal/setup/{secret}",
        lambda secret: secret,
        lambda secret: f"  {base}/portal/setup#{secret}\n",
    ):
        secret = await make_link(runtime, tenant)
        link = made(secret)
        browser = PortalClient()
        shown = await browser.get(SETUP_PAGE)
        opened = await browser.continue_link(SETUP_PAGE, shown, field=link)
        assert opened.status == 303 and opened.location == f"/portal/t/{tenant}", (link, opened.text)
        assert_security_headers(opened)
        assert COOKIE in browser.cookies
        page = (await browser.get(opened.location)).page()
        assert page.value("tenant-url") == runtime.settings.tenant_url(tenant)
        entry = (await runtime.audit.page(tenant)).entries[0]
        assert entry.action == "session.started" and entry.actor.startswith("setup-link:")
        used = [li for li in await runtime.portal_links.list(tenant) if li.id == entry.detail["link"]]
        assert len(used) == 1 and used[0].status() == "used" and used[0].used_by
        assert entry.detail == {"session": used[0].used_by.removeprefix("portal-session:"), "link": used[0].id}

        again = await browser.continue_link(SETUP_PAGE, shown, field=link)  # the form sent again
        assert again.status == 410 and LINK_REFUSED in again.page().text
        assert_security_headers(again)
        other = PortalClient()
        reopened = await other.open_link(link)
        assert reopened.status == 410 and LINK_REFUSED in reopened.page().text
        assert COOKIE not in other.cookies
    assert await audit_actions(runtime, tenant) == ["session.started"] * 4
    assert secret not in await audit_text(runtime, tenant)


async def test_setup_continue_without_the_pages_cookie_and_token_is_refused_and_uses_nothing_up(runtime, clock):
    """Login CSRF: another site posting a link of its own from a victim's browser."""
    tenant, _ = await new_tenant(runtime)
    link = runtime.settings.portal_setup_url(await make_link(runtime, tenant, now=clock.now))
    browser = PortalClient()
    token = (await browser.view_link(link)).page().form(SETUP_PAGE)["inputs"]["setup_token"]
    other_browser = PortalClient()
    other_token = (await other_browser.view_link(link)).page().form(SETUP_PAGE)["inputs"]["setup_token"]
    cookieless = PortalClient()
    for refused in (
        await cookieless.continue_link(link, token=token),  # the token without the cookie
        await cookieless.continue_link(link),  # neither
        await browser.continue_link(link),  # the cookie without the token
        await browser.continue_link(link, token=""),
        await browser.continue_link(link, token="wrong"),
        await browser.continue_link(link, token=token[:-1]),
        await browser.continue_link(link, token=other_token),  # another browser's token
        await browser.continue_link(link, token=token, Origin="https://evil.example"),
        await browser.continue_link(link, token=token, Origin="http://127.0.0.1:7072"),
        await browser.continue_link(link, token=token, **{"Sec-Fetch-Site": "cross-site"}),
        await browser.continue_link(link, token=token, **{"Sec-Fetch-Site": "same-site"}),
    ):
        assert refused.status == 403, refused.text
        assert_security_headers(refused)
        assert refused.page().element_text("message-title") == "Open the setup link again"
        assert COOKIE not in cookieless.cookies and COOKIE not in browser.cookies
    cookies = SessionCookies.for_base_url(await runtime.portal_secrets.session_key(), runtime.settings.public_base_url)
    page_cookie = browser.cookies[SETUP_COOKIE]
    session = cookies.seal(new_session(TENANT_ADMIN, "setup-link:00000000", clock.now, tenant))
    for setup_cookie in ("garbage", session, cookies.seal_pending(cookies.open_setup(page_cookie) or "")):
        forged = PortalClient(cookies={SETUP_COOKIE: setup_cookie}, cookie_paths={SETUP_COOKIE: SETUP_PAGE})
        assert (await forged.continue_link(link, token=token)).status == 403  # sealed as something else
    assert link_status(await runtime.portal_links.list(tenant)) == ["open"]
    assert await audit_actions(runtime, tenant) == []

    clock.advance(seconds=SETUP_MAX_AGE)  # the page is too old: open the link again
    assert (await browser.continue_link(link, token=token)).status == 403
    opened = await browser.open_link(link)
    assert opened.status == 303 and opened.location == f"/portal/t/{tenant}"


async def test_setup_continue_with_anything_but_a_link_that_opens_gets_the_same_page(runtime, clock):
    tenant, _ = await new_tenant(runtime)
    settings = runtime.settings
    expired = settings.portal_setup_url(await make_link(runtime, tenant, minutes=5, now=clock.now))
    revoked = settings.portal_setup_url(await make_link(runtime, tenant, now=clock.now))
    good = await make_link(runtime, tenant, now=clock.now)
    browser = PortalClient()
    shown = await browser.get(SETUP_PAGE)
    junk = (
        "",
        "nonsense",
        "scimsl_short",
        f"{settings.public_base_url}/portal/setup#",
        f"{settings.public_base_url}/portal/setup?link={good}",
        good + "A",
        good[:-1],
        f"{good} {good}",
        "scimsl_" + "A" * 43,  # well formed, unknown
    )
    for field in junk:
        refused = await browser.continue_link(SETUP_PAGE, shown, field=field)
        assert refused.status == 410, field
        assert refused.page().element_text("message") == LINK_REFUSED
        assert_security_headers(refused)
        assert COOKIE not in browser.cookies
    clock.advance(minutes=6)
    assert await runtime.portal_links.revoke_all(tenant, now=clock.now) == 2
    for link in (expired, revoked):
        refused = await browser.continue_link(link, await browser.view_link(link))
        assert refused.status == 410 and refused.page().element_text("message") == LINK_REFUSED, link
        assert COOKIE not in browser.cookies
    assert await audit_actions(runtime, tenant) == []


async def test_setup_continue_for_a_tenant_being_deleted_opens_nothing(runtime):
    tenant, _ = await new_tenant(runtime)
    link = runtime.settings.portal_setup_url(await make_link(runtime, tenant))
    browser = PortalClient()
    shown = await browser.view_link(link)
    assert shown.status == 200
    await runtime.tenants.begin_delete(tenant)
    posted = await browser.continue_link(link, shown)
    assert posted.status == 410 and LINK_REFUSED in posted.page().text
    assert COOKIE not in browser.cookies


async def test_the_setup_page_answers_get_and_post_only(runtime):
    tenant, _ = await new_tenant(runtime)
    link = runtime.settings.portal_setup_url(await make_link(runtime, tenant))
    for method in ("HEAD", "PUT", "DELETE"):
        refused = await PortalClient().view_link(link, method)
        assert refused.status == 405 and refused.headers["allow"] == "GET, POST", method
        assert "set-cookie" not in refused.headers
    assert link_status(await runtime.portal_links.list(tenant)) == ["open"]
    assert web.route_kind("/setup") == "/portal/setup" and web.route_kind("/setup/x") == "/portal/setup/{secret}"


async def test_a_setup_page_opened_while_signed_in_replaces_the_session_on_continue(runtime):
    mine, _ = await new_tenant(runtime)
    theirs, _ = await new_tenant(runtime)
    browser = await signed_in(runtime, mine)
    link = runtime.settings.portal_setup_url(await make_link(runtime, theirs))
    shown = await browser.view_link(link)
    assert shown.status == 200 and shown.page().has("setup-ends-session")
    assert (await browser.get(f"/portal/t/{mine}")).status == 200  # the page changed nothing
    opened = await browser.continue_link(link, shown)
    assert opened.status == 303 and opened.location == f"/portal/t/{theirs}"
    assert (await browser.get(f"/portal/t/{theirs}")).status == 200
    assert (await browser.get(f"/portal/t/{mine}")).status == 403


# ---- setup links of the old form (/portal/setup/{secret}): they keep working until they expire --


async def test_a_get_does_not_consume_the_link(runtime):
    """What a mail scanner does (Safe Links follows the links of a message before its recipient
    clicks): GETs, which use nothing up and start no session; Continue afterwards works."""
    tenant, _ = await new_tenant(runtime)
    secret = await make_link(runtime, tenant)
    scanner = PortalClient()
    for _ in range(2):
        shown = await scanner.get(f"/portal/setup/{secret}")
        assert shown.status == 200, shown.text
        assert COOKIE not in scanner.cookies
    assert link_status(await runtime.portal_links.list(tenant)) == ["open"]
    assert await audit_actions(runtime, tenant) == []
    assert (await scanner.get(f"/portal/t/{tenant}")).status == 403

    admin = PortalClient()
    opened = await admin.continue_link(old_link(secret), await admin.view_link(old_link(secret)))
    assert opened.status == 303 and opened.location == f"/portal/t/{tenant}", opened.text
    assert link_status(await runtime.portal_links.list(tenant)) == ["used"]


async def test_the_link_page_names_the_tenant_and_posts_continue(runtime):
    tenant, _ = await new_tenant(runtime)
    secret = await make_link(runtime, tenant)
    browser = PortalClient()
    shown = await browser.view_link(old_link(secret))
    assert shown.status == 200
    assert_security_headers(shown)
    assert shown.headers["cache-control"] == "no-store" and shown.headers["referrer-policy"] == "no-referrer"
    (cookie,) = shown.cookies_set  # the page's, never a session
    attributes = [part.strip() for part in cookie.split(";")]
    assert attributes[0].startswith(f"{SETUP_COOKIE}=") and secret not in attributes[0]
    own_path = f"Path=/portal/setup/{secret}"  # each link's page its own cookie
    assert {"HttpOnly", "SameSite=Strict", own_path, f"Max-Age={SETUP_MAX_AGE}"} <= set(attributes)
    assert "Secure" not in attributes  # http://127.0.0.1: the local host
    page = shown.page()
    assert tenant in page.element_text("setup-title") and "works once" in page.element_text("setup-text")
    form = page.form(f"/portal/setup/{secret}")
    assert form["attrs"]["method"] == "post" and set(form["inputs"]) == {"setup_token"}
    assert form["inputs"]["setup_token"] and form["inputs"]["setup_token"] not in cookie
    assert page.by_id["setup-continue"]["tag"] == "button" and page.element_text("setup-continue") == "Continue"
    assert not page.has("sign-out") and not page.has("setup-ends-session")
    assert_accessible_and_script_free(page)


async def test_a_head_or_another_method_uses_nothing_up(runtime):
    """The Functions host routes GET and POST to the portal only; were a HEAD to reach it, 405."""
    tenant, _ = await new_tenant(runtime)
    secret = await make_link(runtime, tenant)
    for method in ("HEAD", "PUT", "DELETE"):
        refused = await PortalClient().view_link(old_link(secret), method)
        assert refused.status == 405 and refused.headers["allow"] == "GET, POST", method
        assert "set-cookie" not in refused.headers
    assert link_status(await runtime.portal_links.list(tenant)) == ["open"]
    assert (await PortalClient().open_link(old_link(secret))).status == 303


async def test_continue_signs_in_once(runtime):
    tenant, _ = await new_tenant(runtime)
    secret = await make_link(runtime, tenant)
    browser = PortalClient()
    shown = await browser.view_link(old_link(secret))
    opened = await browser.continue_link(old_link(secret), shown)
    assert opened.status == 303 and opened.location == f"/portal/t/{tenant}"
    assert_security_headers(opened)
    assert COOKIE in browser.cookies
    page = (await browser.get(opened.location)).page()
    assert page.value("tenant-url") == runtime.settings.tenant_url(tenant)
    assert await audit_actions(runtime, tenant) == ["session.started"]
    entry = (await runtime.audit.page(tenant)).entries[0]
    assert entry.actor.startswith("setup-link:") and secret not in await audit_text(runtime, tenant)
    link = (await runtime.portal_links.list(tenant))[0]
    assert link.status() == "used" and link.used_by and link.used_by.startswith("portal-session:")
    assert entry.detail == {"session": link.used_by.removeprefix("portal-session:"), "link": link.id}

    again = await browser.continue_link(old_link(secret), shown)  # the form sent again
    assert again.status == 410 and LINK_REFUSED in again.page().text
    assert_security_headers(again)
    reopened = await PortalClient().open_link(old_link(secret))
    assert reopened.status == 410 and LINK_REFUSED in reopened.page().text
    assert "set-cookie" not in reopened.headers
    assert await audit_actions(runtime, tenant) == ["session.started"]


async def test_continue_without_the_pages_cookie_and_token_is_refused_and_uses_nothing_up(runtime, clock):
    """Login CSRF: another site posting a link of its own from a victim's browser."""
    tenant, _ = await new_tenant(runtime)
    secret = await make_link(runtime, tenant, now=clock.now)
    other = await make_link(runtime, tenant, now=clock.now)
    browser = PortalClient()
    token = (await browser.view_link(old_link(secret))).page().form(f"/portal/setup/{secret}")["inputs"]["setup_token"]
    other_browser = PortalClient()
    other_token = (
        (await other_browser.view_link(old_link(other))).page().form(f"/portal/setup/{other}")["inputs"]["setup_token"]
    )

    cookieless = PortalClient()
    for refused in (
        await cookieless.continue_link(old_link(secret), token=token),  # the token without the cookie
        await cookieless.continue_link(old_link(secret)),  # neither
        await browser.continue_link(old_link(secret)),  # the cookie without the token
        await browser.continue_link(old_link(secret), token=""),
        await browser.continue_link(old_link(secret), token="wrong"),
        await browser.continue_link(old_link(secret), token=token[:-1]),
        await browser.continue_link(old_link(secret), token=other_token),  # another page's token
        await other_browser.continue_link(old_link(secret), token=other_token),  # another link's page
        await browser.continue_link(old_link(secret), token=token, Origin="https://evil.example"),
        await browser.continue_link(old_link(secret), token=token, Origin="http://127.0.0.1:7072"),
        await browser.continue_link(old_link(secret), token=token, **{"Sec-Fetch-Site": "cross-site"}),
        await browser.continue_link(old_link(secret), token=token, **{"Sec-Fetch-Site": "same-site"}),
    ):
        assert refused.status == 403, refused.text
        assert_security_headers(refused)
        assert refused.page().element_text("message-title") == "Open the setup link again"
        assert "Open the setup link again and click Continue" in refused.page().text
        assert COOKIE not in cookieless.cookies and COOKIE not in browser.cookies
    cookies = SessionCookies.for_base_url(await runtime.portal_secrets.session_key(), runtime.settings.public_base_url)
    session = cookies.seal(new_session(TENANT_ADMIN, "setup-link:00000000", clock.now, tenant))
    page_cookie = browser.cookies[SETUP_COOKIE]
    for setup_cookie in ("garbage", session, cookies.seal_pending(cookies.open_setup(page_cookie) or "")):
        forged = PortalClient(
            cookies={SETUP_COOKIE: setup_cookie}, cookie_paths={SETUP_COOKIE: f"/portal/setup/{secret}"}
        )
        assert (await forged.continue_link(old_link(secret), token=token)).status == 403  # sealed as something else
    misplaced = PortalClient(cookies={COOKIE: page_cookie})  # nor is the page's cookie a session
    assert (await misplaced.get(f"/portal/t/{tenant}")).status == 403
    assert link_status(await runtime.portal_links.list(tenant)) == ["open", "open"]
    assert await audit_actions(runtime, tenant) == []

    clock.advance(seconds=SETUP_MAX_AGE)  # the page is too old: open the link again
    assert (await browser.continue_link(old_link(secret), token=token)).status == 403
    token = (await browser.view_link(old_link(secret))).page().form(f"/portal/setup/{secret}")["inputs"]["setup_token"]
    # The portal's own origin, Chromium's "null" (the pages' referrer policy is no-referrer: the
    # other tests send it), or no Origin and Sec-Fetch-Site at all: let through.
    opened = await browser.continue_link(old_link(secret), token=token, Origin="http://127.0.0.1:7071")
    assert opened.status == 303 and opened.location == f"/portal/t/{tenant}"
    plain = PortalClient()
    plain_token = (
        (await plain.view_link(old_link(other))).page().form(f"/portal/setup/{other}")["inputs"]["setup_token"]
    )
    assert (
        await plain.continue_link(old_link(other), token=plain_token, Origin="", **{"Sec-Fetch-Site": ""})
    ).status == 303


async def test_expired_revoked_used_and_made_up_links_get_the_same_page(runtime, clock):
    tenant, _ = await new_tenant(runtime)
    expired = await make_link(runtime, tenant, minutes=5, now=clock.now)
    revoked = await make_link(runtime, tenant, now=clock.now)
    used = await make_link(runtime, tenant, now=clock.now)
    pages = {}
    for secret in (expired, revoked, used):  # each page shown while its link was open
        browser = PortalClient()
        pages[secret] = (browser, await browser.view_link(old_link(secret)))
        assert pages[secret][1].status == 200
    assert (await PortalClient().open_link(old_link(used))).status == 303
    clock.advance(minutes=6)
    assert await runtime.portal_links.revoke_all(tenant, now=clock.now) == 1
    bodies = []
    for secret in (expired, revoked, used, "scimsl_" + "A" * 43, "nonsense"):
        refused = await PortalClient().view_link(old_link(secret))
        assert refused.status == 410, secret
        assert "set-cookie" not in refused.headers
        assert_security_headers(refused)
        bodies.append(refused.page().element_text("message"))
        if secret in pages:
            browser, shown = pages[secret]
            posted = await browser.continue_link(old_link(secret), shown)
            assert posted.status == 410, secret
            assert COOKIE not in browser.cookies
            bodies.append(posted.page().element_text("message"))
    assert bodies == [LINK_REFUSED] * 8
    assert await audit_actions(runtime, tenant) == ["session.started"]


async def test_a_link_of_a_deleted_tenant_opens_nothing(runtime):
    tenant, _ = await new_tenant(runtime)
    secret = await make_link(runtime, tenant)
    browser = PortalClient()
    shown = await browser.view_link(old_link(secret))
    assert shown.status == 200
    await runtime.tenants.begin_delete(tenant)
    assert (await PortalClient().view_link(old_link(secret))).status == 410
    posted = await browser.continue_link(old_link(secret), shown)
    assert posted.status == 410 and LINK_REFUSED in posted.page().text
    assert COOKIE not in browser.cookies


async def test_a_link_opened_while_signed_in_replaces_the_session_on_continue(runtime):
    mine, _ = await new_tenant(runtime)
    theirs, _ = await new_tenant(runtime)
    browser = await signed_in(runtime, mine)
    secret = await make_link(runtime, theirs)
    shown = await browser.view_link(old_link(secret))
    assert shown.status == 200 and shown.page().has("setup-ends-session")
    assert (await browser.get(f"/portal/t/{mine}")).status == 200  # the page changed nothing
    assert (await browser.get(f"/portal/t/{theirs}")).status == 403
    opened = await browser.continue_link(old_link(secret), shown)
    assert opened.status == 303 and opened.location == f"/portal/t/{theirs}"
    assert (await browser.get(f"/portal/t/{theirs}")).status == 200
    assert (await browser.get(f"/portal/t/{mine}")).status == 403


def test_the_portals_origin_is_that_of_its_public_base_url():
    for base, origin in (
        ("http://127.0.0.1:7071", "http://127.0.0.1:7071"),
        ("https://Scim.Example.com", "https://scim.example.com"),
        ("https://scim.example.com:443/base", "https://scim.example.com"),
        ("http://scim.example.com:80", "http://scim.example.com"),
        ("https://scim.example.com:8443", "https://scim.example.com:8443"),
    ):
        settings = Settings.from_env({**MEMORY_SETTINGS, "SCIM_PUBLIC_BASE_URL": base})
        assert pages.own_origin(settings) == origin, base


# ---- the tenant page ----------------------------------------------------------------------------


async def test_the_tenant_page_shows_the_tenant_url_and_entras_labels(runtime):
    tenant, _ = await new_tenant(runtime)
    browser = await signed_in(runtime, tenant)
    response = await browser.get(f"/portal/t/{tenant}")
    assert_security_headers(response)
    assert response.headers["cache-control"] == "no-store"
    page = response.page()
    url = runtime.settings.tenant_url(tenant)
    assert page.value("tenant-url") == url
    assert page.by_id["tenant-url"]["attrs"].get("readonly") is not None
    assert f"{url}?aadOptscim062020" in page.element_text("aad-opt-note")
    for label in (
        "Tenant URL",
        "Secret Token",
        "Regenerate token",
        "Rotate token",
        "OAuth client",
        "Create OAuth client",
        "Test connection",
        "Notification Email",
        "Send an email notification when a failure occurs",
        "Save",
        "Send a test digest",
        "Provisioning logs",
        "Set up Microsoft Entra ID",
        "Enterprise applications",
        "Admin Credentials",
        "Provisioning Status",
        "Token Endpoint",
    ):
        assert label in page.text, label
    assert page.element_text("token-endpoint") == runtime.settings.token_endpoint(tenant)
    (token,) = await runtime.tenants.list_tokens(tenant)
    assert page.has(f"token-{token.id}")
    for element_id in (
        "regenerate-token",
        "rotate-token",
        "create-client",
        "test-connection-button",
        "save-notifications",
    ):
        assert page.by_id[element_id]["tag"] == "button", element_id
    assert_accessible_and_script_free(page)


async def test_unknown_pages_and_wrong_methods(runtime):
    tenant, _ = await new_tenant(runtime)
    browser = await signed_in(runtime, tenant)
    missing = await browser.get(f"/portal/t/{tenant}/nothing-here")
    assert missing.status == 404
    assert_security_headers(missing)
    assert (await browser.get("/portal/elsewhere")).status == 404
    wrong = await browser.get(f"/portal/t/{tenant}/token/rotate")
    assert wrong.status == 405 and wrong.headers["allow"] == "POST"
    assert (await browser.post(f"/portal/t/{tenant}")).status == 405
    home = await browser.get("/portal/")
    assert home.status == 303 and home.location == f"/portal/t/{tenant}"
    assert (await PortalClient().get("/portal")).status == 200


async def test_static_files_have_their_types_and_long_caching(runtime):
    page = (await PortalClient().get("/portal/")).page()
    links = re.findall(r'(?:href|src)="(/portal/static/[^"]+)"', page.source)
    assert {url.split("?")[0].rsplit("/", 1)[1] for url in links} == {"portal.css", "portal.js"}
    for url in links:
        response = await PortalClient().get(url.replace("&amp;", "&"))
        assert response.status == 200 and response.body
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        expected = "text/css" if ".css" in url else "text/javascript"
        assert response.headers["content-type"] == f"{expected}; charset=utf-8"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "set-cookie" not in response.headers
    for missing in ("/portal/static/nope.css", "/portal/static/..%2Fweb.py", "/portal/static/"):
        assert (await PortalClient().get(missing)).status == 404, missing


# ---- Secret Tokens ------------------------------------------------------------------------------


async def test_regenerate_shows_a_token_once_that_works_and_the_old_one_fails(runtime):
    tenant, old = await new_tenant(runtime)
    browser = await signed_in(runtime, tenant)
    confirm = await browser.get(f"/portal/t/{tenant}/token/regenerate")
    assert confirm.status == 200
    assert "The current token stops working at once." in confirm.page().text
    shown = await browser.post(f"/portal/t/{tenant}/token/regenerate")
    assert shown.status == 200, shown.text
    assert_security_headers(shown)
    page = shown.page()
    token = page.value("new-token")
    assert token and token != old
    assert page.value("tenant-url") == runtime.settings.tenant_url(tenant)
    assert (await FunctionsClient(tenant, token).get("/Users")).status == 200
    assert (await FunctionsClient(tenant, old).get("/Users")).status == 401
    (record,) = await runtime.tenants.list_tokens(tenant)
    assert page.element_text("new-token-id") == record.id
    assert await audit_actions(runtime, tenant) == ["token.regenerated", "session.started"]
    assert token not in await audit_text(runtime, tenant)
    again = await browser.get(f"/portal/t/{tenant}")
    assert token not in again.text  # shown once


async def test_rotate_keeps_the_old_token_for_the_overlap_and_stops_at_three(runtime):
    tenant, old = await new_tenant(runtime)
    browser = await signed_in(runtime, tenant)
    rotated = await browser.post(f"/portal/t/{tenant}/token/rotate", {"overlap": "24h"})
    assert rotated.status == 200, rotated.text
    page = rotated.page()
    new = page.value("new-token")
    assert "24 hours" in page.element_text("overlap-note")
    for token in (old, new):
        assert (await FunctionsClient(tenant, token).get("/Users")).status == 200
    tokens = await runtime.tenants.list_tokens(tenant)
    assert len(tokens) == 2 and all(t.retires for t in tokens if t.id != page.element_text("new-token-id"))
    listed = await browser.get(f"/portal/t/{tenant}")
    assert "end of rotation overlap" in listed.page().text
    assert (await browser.post(f"/portal/t/{tenant}/token/rotate", {"overlap": "1h"})).status == 200
    await browser.get(f"/portal/t/{tenant}")
    refused = await browser.post(f"/portal/t/{tenant}/token/rotate", {"overlap": "24h"})
    assert refused.status == 400
    assert "3 active tokens" in refused.page().element_text("form-errors")
    assert len(await runtime.tenants.list_tokens(tenant)) == 3
    odd = await browser.post(f"/portal/t/{tenant}/token/rotate", {"overlap": "999d"})
    assert odd.status == 400
    assert (await audit_actions(runtime, tenant)).count("token.rotated") == 2


async def test_revoke_one_token(runtime):
    tenant, old = await new_tenant(runtime)
    browser = await signed_in(runtime, tenant)
    (record,) = await runtime.tenants.list_tokens(tenant)
    revoked = await browser.post(f"/portal/t/{tenant}/token/revoke", {"token_id": record.id})
    assert revoked.status == 303 and revoked.location.startswith(f"/portal/t/{tenant}?done=token-revoked")
    assert (await FunctionsClient(tenant, old).get("/Users")).status == 401
    page = (await browser.get(revoked.location)).page()
    assert "revoked" in page.element_text("flash") and page.has("no-tokens")
    unknown = await browser.post(f"/portal/t/{tenant}/token/revoke", {"token_id": "deadbeef"})
    assert unknown.status == 400
    assert await audit_actions(runtime, tenant) == ["token.revoked", "session.started"]


async def test_test_connection_says_what_entra_will_see(runtime):
    tenant, token = await new_tenant(runtime)
    browser = await signed_in(runtime, tenant)
    good = await browser.post(f"/portal/t/{tenant}/test-connection", {"token": token})
    assert good.status == 200
    assert "Test connection will succeed" in good.page().element_text("result-headline")
    assert token not in good.text
    await browser.get(f"/portal/t/{tenant}")
    bad = await browser.post(f"/portal/t/{tenant}/test-connection", {"token": "x" * 43})
    assert "Entra will report invalid credentials" in bad.page().element_text("result-headline")
    await browser.get(f"/portal/t/{tenant}")
    empty = await browser.post(f"/portal/t/{tenant}/test-connection", {"token": ""})
    assert empty.status == 400 and "Paste a Secret Token" in empty.page().element_text("test-token-error")
    # The test request is Entra's own, logged as such.
    await runtime.log_writer.drain()
    logged = (await runtime.log.page(tenant)).entries
    assert [(e.operation, e.status) for e in logged] == [("GET /Users", 200)]


async def test_the_new_token_page_tests_the_token_just_shown(runtime):
    tenant, _ = await new_tenant(runtime)
    browser = await signed_in(runtime, tenant)
    shown = await browser.post(f"/portal/t/{tenant}/token/regenerate")
    form = shown.page().form(f"/portal/t/{tenant}/test-connection")
    tested = await browser.post(f"/portal/t/{tenant}/test-connection", {"token": form["inputs"]["token"]})
    assert "Test connection will succeed" in tested.page().text


# ---- OAuth clients ------------------------------------------------------------------------------


async def test_create_and_revoke_an_oauth_client(runtime):
    tenant, _ = await new_tenant(runtime)
    browser = await signed_in(runtime, tenant)
    created = await browser.post(f"/portal/t/{tenant}/oauth-client/create")
    assert created.status == 200, created.text
    page = created.page()
    assert page.value("token-endpoint") == runtime.settings.token_endpoint(tenant)
    assert page.value("tenant-url") == runtime.settings.tenant_url(tenant)
    client_id, secret = page.value("client-id"), page.value("client-secret")
    assert secret.startswith("scimcs_")
    for label in ("Token Endpoint", "Client Identifier", "Client Secret"):
        assert label in page.text
    (client,) = await runtime.tenants.list_clients(tenant)
    assert client.id == client_id
    issued, _ = await runtime.tenants.issue_access_token(tenant, client_id, secret)
    assert (await FunctionsClient(tenant, issued).get("/Users")).status == 200
    listed = (await browser.get(f"/portal/t/{tenant}")).page()
    assert listed.has(f"client-{client_id}") and secret not in listed.source
    revoked = await browser.post(f"/portal/t/{tenant}/oauth-client/revoke", {"client_id": client_id})
    assert revoked.status == 303
    assert await runtime.tenants.list_clients(tenant) == ()
    assert (await FunctionsClient(tenant, issued).get("/Users")).status == 401
    assert await audit_actions(runtime, tenant) == ["oauth_client.revoked", "oauth_client.created", "session.started"]
    assert secret not in await audit_text(runtime, tenant)


# ---- notifications ------------------------------------------------------------------------------


async def test_notification_email_is_saved(runtime):
    tenant, _ = await new_tenant(runtime)
    browser = await signed_in(runtime, tenant)
    saved = await browser.post(
        f"/portal/t/{tenant}/notifications", {"notify": "ops@contoso.com,\n it@contoso.com", "enabled": "on"}
    )
    assert saved.status == 303, saved.text
    info = await runtime.tenants.info(tenant)
    assert info.notify == ("ops@contoso.com", "it@contoso.com") and info.notify_enabled
    page = (await browser.get(saved.location)).page()
    assert page.element_text("flash") == "Notification settings saved."
    assert "ops@contoso.com" in page.element_text("notify-emails")
    assert page.by_id["notify-enabled"]["attrs"].get("checked") is not None

    refused = await browser.post(f"/portal/t/{tenant}/notifications", {"notify": "ops@contoso.com, not-an-address"})
    assert refused.status == 400
    page = refused.page()
    assert page.element_text("notify-emails-error") == "Not an email address: not-an-address."
    assert page.by_id["notify-emails"]["attrs"].get("aria-invalid") == "true"
    assert (await runtime.tenants.info(tenant)).notify == ("ops@contoso.com", "it@contoso.com")
    await browser.get(f"/portal/t/{tenant}")
    none = await browser.post(f"/portal/t/{tenant}/notifications", {"notify": "", "enabled": "on"})
    assert none.status == 400 and "at least one Notification Email" in none.page().text

    off = await browser.post(f"/portal/t/{tenant}/notifications", {"notify": "ops@contoso.com"})
    assert off.status == 303
    info = await runtime.tenants.info(tenant)
    assert info.notify == ("ops@contoso.com",) and not info.notify_enabled
    assert (await audit_actions(runtime, tenant)).count("notify.updated") == 2


@pytest.mark.azurite(reason="the admin CLI reads the tenant from Azurite")
async def test_notification_email_saved_in_the_portal_is_what_the_cli_lists(runtime, azurite, table_prefix):
    tenant, _ = await new_tenant(runtime)
    browser = await signed_in(runtime, tenant)
    saved = await browser.post(f"/portal/t/{tenant}/notifications", {"notify": "ops@contoso.com", "enabled": "on"})
    assert saved.status == 303
    listed = admin(admin_env(azurite, table_prefix), "tenant", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (mine,) = [t for t in json.loads(listed.stdout) if t["tenant"] == tenant]
    assert mine["notify"] == ["ops@contoso.com"] and mine["notify_enabled"] is True


async def test_send_a_test_digest_says_the_outcome(runtime):
    tenant, _ = await new_tenant(runtime)
    browser = await signed_in(runtime, tenant)
    off = await browser.post(f"/portal/t/{tenant}/digest")
    assert off.status == 200
    assert off.page().element_text("result-detail") == "Notifications are off for this tenant."
    await runtime.tenants.set_notifications(tenant, ["ops@contoso.com"], True)
    await browser.get(f"/portal/t/{tenant}")
    no_sender = await browser.post(f"/portal/t/{tenant}/digest")
    assert "no email sender configured" in no_sender.page().element_text("result-detail").lower()
    assert (await audit_actions(runtime, tenant)).count("digest.test_sent") == 2


async def test_a_test_digest_is_sent_through_smtp():
    with smtp_server() as (mailbox, port):
        settings = Settings.from_env({**MEMORY_SETTINGS, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port)})
        runtime = build_memory_runtime(settings)
        use_runtime(runtime)
        try:
            tenant, token = await new_tenant(runtime)
            await runtime.tenants.set_notifications(tenant, ["ops@contoso.com"], True)
            scim = FunctionsClient(tenant, token)
            user = await create_user(scim)
            assert (await scim.post("/Users", new_user(userName=user["userName"]))).status == 409
            await runtime.log_writer.drain()
            browser = await signed_in(runtime, tenant)
            web.use_clock(lambda: datetime.now(UTC) + timedelta(seconds=10))  # past the digest's 5 s lag
            sent = await browser.post(f"/portal/t/{tenant}/digest")
            assert sent.status == 200, sent.text
            assert sent.page().element_text("result-headline") == "Digest sent."
            assert len(mailbox.to("ops@contoso.com")) == 1
        finally:
            web.use_clock(None)
            use_runtime(None)
            await runtime.close()


async def test_a_test_digest_without_failures_still_sends_a_test_email():
    """An admin presses Send a test digest to see that the address works: with no failures to
    report, a short test email goes out (found in a click-through: it said "Nothing to send"
    and sent nothing)."""
    with smtp_server() as (mailbox, port):
        settings = Settings.from_env({**MEMORY_SETTINGS, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port)})
        runtime = build_memory_runtime(settings)
        use_runtime(runtime)
        try:
            tenant, _ = await new_tenant(runtime)
            await runtime.tenants.set_notifications(tenant, ["ops@contoso.com", "it@contoso.com"], True)
            browser = await signed_in(runtime, tenant)
            sent = await browser.post(f"/portal/t/{tenant}/digest")
            assert sent.status == 200, sent.text
            assert sent.page().element_text("result-headline") == "Test email sent."
            for address in ("ops@contoso.com", "it@contoso.com"):
                (message,) = mailbox.to(address)
                assert tenant in message["Subject"] and "test" in message["Subject"].lower()
            assert (await audit_actions(runtime, tenant)).count("digest.test_sent") == 1
        finally:
            use_runtime(None)
            await runtime.close()


# ---- provisioning logs --------------------------------------------------------------------------


async def test_a_failed_scim_request_is_in_the_logs_and_the_chart(runtime):
    tenant, token = await new_tenant(runtime)
    scim = FunctionsClient(tenant, token)
    user = await create_user(scim)
    failed = await scim.post("/Users", new_user(userName=user["userName"]))
    assert failed.status == 409
    await runtime.log_writer.drain()
    browser = await signed_in(runtime, tenant)
    page = (await browser.get(f"/portal/t/{tenant}")).page()
    rows = page.element_text("log-entries")
    assert "POST /Users 409" in rows and failed.headers["x-correlation-id"] in rows
    assert user["userName"] in rows  # a failed create names its userName
    assert page.element_text("chart-desc") == "2 requests and 1 failures in the last 7 days."
    assert page.source.count('class="bar-failures"') == 1
    assert "1 of 2 requests failed in the last 24 hours (50.0 %)" in page.element_text("failure-ratio")
    assert "above Entra's quarantine threshold of 40 %" in page.element_text("failure-ratio")

    assert sorted(statuses(page)) == ["201", "409"]  # newest first; the same millisecond: by correlation id
    assert statuses((await browser.get(f"/portal/t/{tenant}?failures=1")).page()) == ["409"]
    assert statuses((await browser.get(f"/portal/t/{tenant}?status=2xx")).page()) == ["201"]
    assert statuses((await browser.get(f"/portal/t/{tenant}?q={user['userName'].upper()}")).page()) == ["409"]
    by_operation = (await browser.get(f"/portal/t/{tenant}?operation=DELETE+/Users/{{id}}")).page()
    assert by_operation.has("no-log-entries") and "match these filters" in by_operation.text


async def test_the_log_pages_with_its_cursor(runtime):
    tenant, _ = await new_tenant(runtime)
    start = datetime.now(UTC) - timedelta(hours=3)
    entries = [
        LogEntry(
            time=format_time(start + timedelta(seconds=i)),
            operation="PATCH /Users/{id}",
            status=404 if i % 10 == 0 else 200,
            correlation_id=f"c{i:04d}",
            duration_ms=1.0,
            resource_type="User",
            resource_id=f"u{i}",
        )
        for i in range(70)
    ]
    for logged in entries:  # through the writer, which tallies them per hour for the chart
        runtime.log_writer.submit(tenant, logged)
    await runtime.log_writer.drain()
    browser = await signed_in(runtime, tenant)
    first = (await browser.get(f"/portal/t/{tenant}")).page()
    assert len(statuses(first)) == 50 and "c0069" in first.source and "c0019" not in first.source
    older = first.by_id["older-entries"]["attrs"]["href"].replace("&amp;", "&")
    second = (await browser.get(older)).page()
    assert "c0019" in second.source and "c0069" not in second.source and not second.has("older-entries")
    failures = (await browser.get(f"/portal/t/{tenant}?failures=1&operation=PATCH+/Users/{{id}}")).page()
    assert statuses(failures) == ["404"] * 7
    assert "7 failures in the last 7 days" in failures.element_text("chart-desc")
    bogus = await browser.get(f"/portal/t/{tenant}?cursor=nonsense&status=999&operation=x")
    assert bogus.status == 200


# ---- authorization ------------------------------------------------------------------------------


async def test_a_tenant_admin_cannot_open_or_change_another_tenant(runtime):
    mine, _ = await new_tenant(runtime)
    theirs, their_token = await new_tenant(runtime)
    browser = await signed_in(runtime, mine)
    csrf = browser.csrf
    for url in (f"/portal/t/{theirs}", f"/portal/t/{theirs}/token/regenerate", "/portal/t/no-such-tenant"):
        refused = await browser.get(url)
        assert refused.status == 403, url
        assert_security_headers(refused)
        assert their_token not in refused.text
    for action, form in (
        ("token/regenerate", {}),
        ("token/rotate", {"overlap": "24h"}),
        ("token/revoke", {"token_id": (await runtime.tenants.list_tokens(theirs))[0].id}),
        ("oauth-client/create", {}),
        ("notifications", {"notify": "evil@example.com", "enabled": "on"}),
        ("digest", {}),
        ("test-connection", {"token": their_token}),
    ):
        forged = await browser.post(f"/portal/t/{theirs}/{action}", form, csrf=csrf or "")
        assert forged.status == 403, action
    assert (await FunctionsClient(theirs, their_token).get("/Users")).status == 200
    assert len(await runtime.tenants.list_tokens(theirs)) == 1
    assert await runtime.tenants.list_clients(theirs) == ()
    assert (await runtime.tenants.info(theirs)).notify == ()
    assert await audit_actions(runtime, theirs) == []


async def test_without_a_session_nothing_opens(runtime):
    tenant, token = await new_tenant(runtime)
    stranger = PortalClient()
    assert (await stranger.get(f"/portal/t/{tenant}")).status == 403
    assert (await stranger.post(f"/portal/t/{tenant}/token/regenerate", csrf="x")).status == 403
    assert (await FunctionsClient(tenant, token).get("/Users")).status == 200


async def test_a_post_without_or_with_a_wrong_csrf_token_is_refused(runtime):
    tenant, token = await new_tenant(runtime)
    browser = await signed_in(runtime, tenant)
    other = await signed_in(runtime, tenant)
    for csrf in (False, "", "wrong", other.csrf):
        refused = await browser.post(f"/portal/t/{tenant}/token/regenerate", csrf=csrf)  # type: ignore[arg-type]
        assert refused.status == 403, csrf
        assert "Reload the page" in refused.page().text
        assert_security_headers(refused)
    assert (await browser.post("/portal/logout", csrf=False)).status == 403
    assert (await FunctionsClient(tenant, token).get("/Users")).status == 200
    assert await audit_actions(runtime, tenant) == ["session.started", "session.started"]


async def test_an_operator_session_opens_any_tenant_and_unknown_ones_are_404(runtime):
    tenant, _ = await new_tenant(runtime)
    operator = await operator_browser(runtime)
    assert (await operator.get(f"/portal/t/{tenant}")).status == 200
    assert (await operator.get("/portal/t/no-such-tenant")).status == 404
    assert (await operator.get("/portal/t/Not_A_Name")).status == 404
    saved = await operator.post(f"/portal/t/{tenant}/notifications", {"notify": "ops@contoso.com", "enabled": "on"})
    assert saved.status == 303
    (entry,) = (await runtime.audit.page(tenant)).entries
    assert entry.actor == "operator:ops@example.com"


async def test_require_operator_refuses_a_tenant_admin(runtime):
    portal = Portal(runtime, probe=None)  # type: ignore[arg-type]
    admin_session = new_session(TENANT_ADMIN, "setup-link:00000000", datetime.now(UTC), "acme")
    operator_session = new_session(OPERATOR, "operator:ops@example.com", datetime.now(UTC))
    with pytest.raises(Refused) as refused:
        require_operator(Context(PortalRequest("GET", ""), portal, session=admin_session))
    assert refused.value.status == 403
    with pytest.raises(Refused):
        require_operator(Context(PortalRequest("GET", ""), portal))
    assert require_operator(Context(PortalRequest("GET", ""), portal, session=operator_session)) is operator_session
    assert operator_session.may_open("acme") and admin_session.may_open("acme")
    assert not admin_session.may_open("other")


# ---- sessions -----------------------------------------------------------------------------------


async def test_the_session_cookie_flags(runtime):
    tenant, _ = await new_tenant(runtime)
    browser = await signed_in(runtime, tenant)
    cookie = next(c for c in browser.set_cookies if c.startswith(f"{COOKIE}="))
    attributes = [part.strip() for part in cookie.split(";")]
    assert attributes[0].startswith(f"{COOKIE}=")
    assert {"HttpOnly", "SameSite=Lax", "Path=/portal", f"Max-Age={IDLE_TIMEOUT}"} <= set(attributes)
    assert "Secure" not in attributes  # http://127.0.0.1: the local host
    value = browser.cookies[COOKIE]
    assert tenant not in value and "tenant-admin" not in value  # encrypted, not only signed
    secure = SessionCookies.for_base_url(b"k" * 32, "https://scim.example.com")
    assert "Secure" in secure.set_cookie(new_session(OPERATOR, "operator:x", datetime.now(UTC)), datetime.now(UTC))


async def test_an_https_base_url_makes_secure_cookies():
    settings = Settings.from_env({**MEMORY_SETTINGS, "SCIM_PUBLIC_BASE_URL": "https://scim.example.com"})
    runtime = build_memory_runtime(settings)
    use_runtime(runtime)
    try:
        tenant, _ = await new_tenant(runtime)
        browser = PortalClient(base="https://scim.example.com")
        secret = await make_link(runtime, tenant)
        shown = await browser.view_link(secret)
        assert "Secure" in [part.strip() for part in shown.headers["set-cookie"].split(";")]
        opened = await browser.continue_link(secret, shown, Origin="https://scim.example.com")
        assert opened.status == 303
        assert "Secure" in [part.strip() for part in opened.headers["set-cookie"].split(";")]
    finally:
        use_runtime(None)
        await runtime.close()


async def test_a_changed_or_foreign_cookie_is_no_session(runtime):
    tenant, _ = await new_tenant(runtime)
    browser = await signed_in(runtime, tenant)
    value = browser.cookies[COOKIE]
    flipped = value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1]
    foreign = SessionCookies.for_base_url(b"x" * 32, runtime.settings.public_base_url)
    forged = foreign.seal(new_session(OPERATOR, "operator:evil@example.com", datetime.now(UTC)))
    for cookie in (flipped, forged, "garbage", ""):
        other = PortalClient(cookies={COOKIE: cookie})
        refused = await other.get(f"/portal/t/{tenant}")
        assert refused.status == 403, cookie
        if cookie:
            assert re.search(r"Max-Age=0\b", refused.headers.get("set-cookie", "")), cookie


async def test_a_session_ends_after_its_idle_timeout_and_its_absolute_timeout(runtime, clock):
    tenant, _ = await new_tenant(runtime)
    browser = PortalClient()
    assert (await browser.open_link(await make_link(runtime, tenant, now=clock.now))).status == 303
    for _ in range(3):  # used every 29 minutes, it lives on (refreshed on use)
        clock.advance(minutes=29)
        assert (await browser.get(f"/portal/t/{tenant}")).status == 200
    clock.advance(minutes=30, seconds=1)
    ended = await browser.get(f"/portal/t/{tenant}")
    assert ended.status == 403 and "session ended" in ended.page().text
    assert COOKIE not in browser.cookies  # cleared

    busy = PortalClient()
    assert (await busy.open_link(await make_link(runtime, tenant, now=clock.now))).status == 303
    for _ in range(16):  # used every 29 minutes for 7 h 44 min
        clock.advance(minutes=29)
        assert (await busy.get(f"/portal/t/{tenant}")).status == 200
    clock.advance(minutes=17)  # 8 h 1 min after it started
    assert (await busy.get(f"/portal/t/{tenant}")).status == 403


async def test_signing_out_clears_the_session(runtime):
    tenant, _ = await new_tenant(runtime)
    browser = await signed_in(runtime, tenant)
    out = await browser.post("/portal/logout")
    assert out.status == 200 and "You are signed out." in out.page().text
    assert re.search(r"Max-Age=0\b", out.headers["set-cookie"])
    assert COOKIE not in browser.cookies
    assert (await browser.get(f"/portal/t/{tenant}")).status == 403


# ---- errors -------------------------------------------------------------------------------------


async def test_a_bug_is_a_plain_500_and_storage_trouble_a_503(runtime, monkeypatch):
    tenant, _ = await new_tenant(runtime)
    browser = await signed_in(runtime, tenant)

    async def broken(name: str) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(runtime.tenants, "list_clients", broken)
    failed = await browser.get(f"/portal/t/{tenant}")
    assert failed.status == 500
    assert "secret internals" not in failed.text and "Traceback" not in failed.text
    assert_security_headers(failed)

    async def unavailable(name: str) -> None:
        raise StoreUnavailable("down")

    monkeypatch.setattr(runtime.tenants, "list_clients", unavailable)
    down = await browser.get(f"/portal/t/{tenant}")
    assert down.status == 503 and down.headers["retry-after"]
    assert_security_headers(down)


def test_the_chart_puts_the_hourly_counts_in_their_hours():
    now = datetime(2026, 12, 2, 15, 30, tzinfo=UTC)
    starts = hour_starts(now)
    assert len(starts) == 168 and starts[-1] == datetime(2026, 12, 2, 15, tzinfo=UTC)
    counts = [
        HourCount(starts[-1], 4, 2),
        HourCount(starts[0], 1, 1),
        HourCount(starts[0] - timedelta(hours=1), 9, 9),  # before the 7 days: left out
        HourCount(starts[5], 0, 3),  # never more failures than requests
    ]
    data = chart_activity(starts, counts)
    assert data.hours[-1].failures == 2 and data.hours[0].failures == 1 and data.hours[5].requests == 3
    assert data.requests == 8 and data.failures == 6
    assert data.day_ratio == 0.5 and data.level == "quarantine"


# ---- over HTTP, on the local host ---------------------------------------------------------------


async def test_the_local_host_serves_the_portal_over_http(local_server):
    creds = await asyncio.to_thread(local_server.create_tenant, "portal")
    runtime = build_runtime(local_server.settings)
    try:
        secret, _ = await runtime.portal_links.create(creds.tenant, timedelta(minutes=10), "operator:test")
    finally:
        await runtime.close()
    base = local_server.base_url
    link = runtime.settings.portal_setup_url(secret)
    assert link == f"{base}/portal/setup#{secret}"
    page_url = f"{base}/portal/setup"  # the fragment is never sent
    async with aiohttp.ClientSession() as http:
        async with http.head(page_url, allow_redirects=False) as head:
            assert head.status == 404  # the host routes GET and POST to the portal, not HEAD
        for _ in range(2):
            async with http.get(page_url, allow_redirects=False) as shown:
                assert shown.status == 200 and shown.headers["Cache-Control"] == "no-store"
                assert shown.headers["Referrer-Policy"] == "no-referrer"
                (setup_cookie,) = shown.headers.getall("Set-Cookie")
                assert setup_cookie.startswith("scim_portal_setup=")
                setup_token = re.search(r'name="setup_token" value="([^"]+)"', await shown.text())
        assert setup_token
        async with http.post(
            page_url,
            data={"setup_token": setup_token.group(1), "link": link},
            headers={"Cookie": setup_cookie.split(";", 1)[0], "Origin": "null", "Sec-Fetch-Site": "same-origin"},
            allow_redirects=False,
        ) as opened:
            assert opened.status == 303 and opened.headers["Location"] == f"/portal/t/{creds.tenant}"
            cookie = opened.headers["Set-Cookie"].split(";", 1)[0]
        async with http.get(f"{base}/portal/t/{creds.tenant}", headers={"Cookie": cookie}) as shown:
            assert shown.status == 200
            assert shown.headers["Content-Type"] == "text/html; charset=utf-8"
            assert shown.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
            page = (await shown.read()).decode()
        assert f'value="{creds.url}"' in page
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert csrf
        async with http.post(
            f"{base}/portal/t/{creds.tenant}/token/regenerate",
            data={"csrf_token": csrf.group(1)},
            headers={"Cookie": cookie},
        ) as regenerated:
            assert regenerated.status == 200
            token = re.search(r'id="new-token" type="text" readonly value="([^"]+)"', await regenerated.text())
        assert token
        for bearer, status in ((token.group(1), 200), (creds.token, 401)):
            headers = {"Authorization": f"Bearer {bearer}"}
            async with http.get(f"{base}/scim/{creds.tenant}/Users", headers=headers) as scim:
                assert scim.status == status
        css = re.search(r'href="(/portal/static/portal\.css\?v=[0-9a-f]+)"', page)
        assert css
        async with http.get(f"{base}{css.group(1)}") as stylesheet:
            assert stylesheet.status == 200 and stylesheet.headers["Content-Type"] == "text/css; charset=utf-8"


def test_the_request_reads_its_cookie_and_form_defensively():
    joined = PortalRequest("POST", "x", headers={"cookie": 'other=1, scim_portal=abc; x="y"'}, body=b"a=1&a=2&b=")
    assert joined.cookie(COOKIE) == "abc" and joined.cookie("missing") is None
    assert joined.form() == {"a": ["1", "2"], "b": [""]}
    assert PortalRequest("POST", "x", body=b"a=1&" * 300).form() == {}  # more fields than any form
    assert PortalRequest("POST", "x", body=b"a=\xff").form() == {}
    assert PortalRequest("POST", "x", body=b"a=" + b"b" * 70_000).form() == {}
