"""The operator view of the portal (issue 14): ``/portal/ops`` and the operator's actions, through
the registered ``portal`` function (:class:`~tests.portal_client.PortalClient`), with an
operator's session sealed by the test (signing in with Microsoft: tests/test_portal_signin.py).

Tests of the ``runtime`` fixture run on the memory runtime and on Azurite (creating and deleting
tenants purge Table partitions there).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator

import pytest

from scim.core.feed import position_stamp
from scim.functions.runtime import Runtime, build_memory_runtime, use_runtime
from scim.provisioning_log import parse_time
from scim.settings import Settings
from scim.store.base import StoreUnavailable
from scim.tenants import ACTIVE, DELETING
from tests.functions_client import FunctionsClient
from tests.helpers import MEMORY_SETTINGS, create_user
from tests.portal_client import (
    LINK_REFUSED,
    PortalClient,
    assert_security_headers,
    audit_actions,
    audit_text,
    new_tenant,
    operator_browser,
    signed_in,
)


def fresh_name() -> str:
    return "o" + uuid.uuid4().hex[:12]


async def operator(runtime: Runtime) -> PortalClient:
    """An operator's browser that read the operator view (its CSRF token is the page's)."""
    browser = await operator_browser(runtime)
    page = await browser.get("/portal/ops")
    assert page.status == 200, page.text
    return browser


# ---- the tenants ----------------------------------------------------------------------------------


async def test_the_operator_view_lists_the_tenants_with_their_status(runtime):
    tenant, token = await new_tenant(runtime)
    await create_user(FunctionsClient(tenant, token))
    await FunctionsClient(tenant, token).get("/Users/no-such-id")  # a failure: 1 of 2
    await runtime.log_writer.drain()
    expiring, _ = await new_tenant(runtime)
    await runtime.tenants.set_token(expiring, expires=3 * 86400)
    await runtime.tenants.set_notifications(expiring, ["ops@example.com"], True)
    browser = await operator_browser(runtime)
    response = await browser.get("/portal/ops")
    assert response.status == 200
    assert_security_headers(response)
    page = response.page()
    assert page.has("ops-tenants") and page.has("create-tenant") and page.has("new-tenant-name")
    row = page.element_text(f"tenant-row-{tenant}")
    assert "active" in row and "none logged" not in row and "never" in row and "not linked" in row
    other = page.element_text(f"tenant-row-{expiring}")
    assert "none logged" in other and "ops@example.com" in other
    assert page.by_id[f"open-{tenant}"]["attrs"]["href"] == f"/portal/t/{tenant}"
    assert page.has(f"create-link-{tenant}") and page.has(f"delete-{tenant}")
    assert page.element_text(f"ratio-{tenant}") == "50% of 2"  # the last 24 hours' tallies
    assert page.element_text(f"ratio-{expiring}") == "no requests"
    assert "quarantines a job above 40 %" in page.text


async def test_create_tenant_shows_the_tenant_url_and_token_once(runtime):
    browser = await operator(runtime)
    name = fresh_name()
    created = await browser.post(
        "/portal/ops/create-tenant", {"name": name, "notify": "it@example.com", "expires": "30d"}
    )
    assert created.status == 200, created.text
    page = created.page()
    token = page.value("created-token")
    assert page.value("created-tenant-url") == runtime.settings.tenant_url(name)
    assert page.element_text("created-token-expires") != "never"
    assert (await FunctionsClient(name, token).get("/Users")).status == 200
    info = await runtime.tenants.info(name)
    assert info.state == ACTIVE and info.notify == ("it@example.com",) and info.notify_enabled
    (issued,) = await runtime.tenants.list_tokens(name)
    assert issued.expires is not None
    assert await audit_actions(runtime, name) == ["tenant.created"]
    assert token not in await audit_text(runtime, name)
    for url in ("/portal/ops", f"/portal/t/{name}"):
        assert token not in (await browser.get(url)).text  # shown once

    assert page.has("create-link")  # a setup link from here
    link = await browser.post(f"/portal/ops/t/{name}/setup-link", {"expires": "24h"})
    assert link.status == 200 and link.page().value("setup-link-url").startswith(runtime.settings.portal_setup_url(""))


async def test_create_tenant_refuses_a_bad_name_an_existing_one_and_a_bad_address(runtime):
    tenant, _ = await new_tenant(runtime)
    browser = await operator(runtime)
    for form, status in (
        ({"name": "Not A Name", "expires": "never"}, 400),
        ({"name": tenant, "expires": "never"}, 409),
        ({"name": fresh_name(), "expires": "2d"}, 400),
        ({"name": fresh_name(), "notify": "not-an-address", "expires": "never"}, 400),
    ):
        refused = await browser.post("/portal/ops/create-tenant", form)
        assert refused.status == status, (form, refused.text)
        assert refused.page().has("form-errors")
        assert refused.page().value("new-tenant-name") == form["name"]
    assert len(await runtime.tenants.list_tokens(tenant)) == 1


# ---- setup links ----------------------------------------------------------------------------------


async def test_setup_links_are_made_shown_once_and_revoked(runtime):
    tenant, _ = await new_tenant(runtime)
    browser = await operator(runtime)
    made = await browser.post(f"/portal/ops/t/{tenant}/setup-link", {"expires": "7d"})
    assert made.status == 200
    url = made.page().value("setup-link-url")
    assert re.fullmatch(rf"{re.escape(runtime.settings.public_base_url)}/portal/setup#scimsl_[\w-]{{43}}", url), url
    opened = await PortalClient().open_link(url)
    assert opened.status == 303 and opened.location == f"/portal/t/{tenant}"
    assert url not in (await browser.get(f"/portal/t/{tenant}")).text

    second = (await browser.post(f"/portal/ops/t/{tenant}/setup-link", {})).page().value("setup-link-url")
    page = (await browser.get(f"/portal/t/{tenant}")).page()
    assert page.has("setup-link-list") and page.has("revoke-links")
    revoked = await browser.post(f"/portal/ops/t/{tenant}/revoke-links")
    assert revoked.status == 303 and revoked.location.startswith(f"/portal/t/{tenant}?done=links-revoked")
    assert "revoked" in (await browser.get(revoked.location)).page().element_text("flash")
    refused = await PortalClient().open_link(second)
    assert refused.status == 410 and LINK_REFUSED in refused.page().text
    actions = await audit_actions(runtime, tenant)
    assert actions[:3] == ["links.revoked", "link.created", "session.started"] and actions.count("link.created") == 2
    entries = (await runtime.audit.page(tenant)).entries
    assert entries[0].actor == "operator:ops@example.com" and entries[0].detail == {"count": "1"}
    audit = await audit_text(runtime, tenant)
    assert url.rsplit("/", 1)[1] not in audit and second.rsplit("/", 1)[1] not in audit

    assert (await browser.post(f"/portal/ops/t/{tenant}/setup-link", {"expires": "90d"})).status == 400
    assert (await browser.post("/portal/ops/t/no-such-tenant/setup-link", {})).status == 404


# ---- deleting -------------------------------------------------------------------------------------


async def test_delete_tenant_needs_its_name_typed(runtime):
    tenant, token = await new_tenant(runtime)
    await create_user(FunctionsClient(tenant, token))
    browser = await operator(runtime)
    confirm = (await browser.get(f"/portal/ops/t/{tenant}/delete")).page()
    assert confirm.has("delete-confirm-name") and confirm.has("delete-tenant")
    form = confirm.form(f"/portal/ops/t/{tenant}/delete")
    assert "confirm_name" in form["inputs"]

    wrong = await browser.post(f"/portal/ops/t/{tenant}/delete", {"confirm_name": tenant + "x"})
    assert wrong.status == 400 and wrong.page().has("delete-error")
    assert await runtime.tenants.state(tenant) == ACTIVE
    assert (await browser.post(f"/portal/ops/t/{tenant}/delete", {})).status == 400
    assert await runtime.tenants.state(tenant) == ACTIVE

    deleted = await browser.post(f"/portal/ops/t/{tenant}/delete", {"confirm_name": tenant})
    assert deleted.status == 303 and deleted.location == "/portal/ops?done=deleted", deleted.text
    assert await runtime.tenants.state(tenant) is None
    assert (await FunctionsClient(tenant, token).get("/Users")).status == 401
    ops = (await browser.get(deleted.location)).page()
    assert ops.has("flash") and not ops.has(f"tenant-row-{tenant}")
    assert (await browser.get(f"/portal/ops/t/{tenant}/delete")).status == 404
    assert (await browser.get(f"/portal/t/{tenant}")).status == 404

    again = await browser.post("/portal/ops/create-tenant", {"name": tenant, "expires": "never"})
    assert again.status == 200  # nothing of the old tenant is left


async def test_an_interrupted_delete_says_so_and_finishes_when_run_again(monkeypatch):
    built = build_memory_runtime(Settings.from_env(MEMORY_SETTINGS))
    use_runtime(built)
    try:
        tenant, token = await new_tenant(built)
        browser = await operator(built)
        forget = built.states.forget
        calls = 0

        async def failing(name: str) -> None:
            nonlocal calls
            calls += 1
            raise StoreUnavailable("storage went away")

        monkeypatch.setattr(built.states, "forget", failing)
        interrupted = await browser.post(f"/portal/ops/t/{tenant}/delete", {"confirm_name": tenant})
        assert interrupted.status == 503 and calls == 1
        assert "interrupted" in interrupted.page().element_text("delete-error")
        assert await built.tenants.state(tenant) == DELETING
        assert (await FunctionsClient(tenant, token).get("/Users")).status == 401  # the token is revoked
        row = (await browser.get("/portal/ops")).page()
        assert "unfinished" in row.element_text(f"tenant-row-{tenant}")
        assert row.element_text(f"delete-{tenant}") == "Finish delete"
        assert (await browser.get(f"/portal/ops/t/{tenant}/delete")).page().has("delete-unfinished")

        monkeypatch.setattr(built.states, "forget", forget)
        finished = await browser.post(f"/portal/ops/t/{tenant}/delete", {"confirm_name": tenant})
        assert finished.status == 303 and finished.location == "/portal/ops?done=delete-finished"
        assert await built.tenants.state(tenant) is None
    finally:
        use_runtime(None)
        await built.close()


# ---- who may ------------------------------------------------------------------------------------


OPERATOR_POSTS = ("setup-link", "revoke-links", "delete", "webhook-replay")


async def test_tenant_admins_and_strangers_get_403_on_the_operator_view(runtime):
    tenant, _ = await new_tenant(runtime)
    admin = await signed_in(runtime, tenant)
    for browser in (admin, PortalClient()):
        page = await browser.get("/portal/ops")
        assert page.status == 403, page.text
        assert_security_headers(page)
        assert (await browser.get(f"/portal/ops/t/{tenant}/delete")).status == 403
        name = fresh_name()
        created = await browser.post("/portal/ops/create-tenant", {"name": name, "expires": "never"})
        assert created.status == 403 and await runtime.tenants.state(name) is None
        for action in OPERATOR_POSTS:
            form = {"confirm_name": tenant, "expires": "7d", "endpoint": "x", "since": "1h"}
            assert (await browser.post(f"/portal/ops/t/{tenant}/{action}", form)).status == 403, action
    assert await runtime.tenants.state(tenant) == ACTIVE
    assert await audit_actions(runtime, tenant) == ["session.started"]
    own = (await admin.get(f"/portal/t/{tenant}")).page()
    assert not own.has("setup-links") and not own.has("delete-tenant-link") and not own.has("webhooks")


async def test_the_operators_posts_need_the_csrf_token(runtime):
    tenant, _ = await new_tenant(runtime)
    browser = await operator(runtime)
    name = fresh_name()
    for csrf in (False, "forged"):
        assert (await browser.post("/portal/ops/create-tenant", {"name": name}, csrf=csrf)).status == 403
        for action in OPERATOR_POSTS:
            form = {"confirm_name": tenant, "expires": "7d"}
            assert (await browser.post(f"/portal/ops/t/{tenant}/{action}", form, csrf=csrf)).status == 403, action
    assert await runtime.tenants.state(name) is None and await runtime.tenants.state(tenant) == ACTIVE
    assert await runtime.portal_links.list(tenant) == []
    assert (await browser.get("/portal/ops/create-tenant")).status == 405


# ---- the operator's sections of the tenant page -----------------------------------------------------


@pytest.fixture
async def quick_events() -> AsyncIterator[Runtime]:
    """A memory runtime whose change events settle in 10 ms (the feed shows them at once)."""
    built = build_memory_runtime(Settings.from_env({**MEMORY_SETTINGS, "EVENTS_SETTLE_SECONDS": "0.01"}))
    use_runtime(built)
    yield built
    use_runtime(None)
    await built.close()


async def test_the_operator_sees_webhooks_events_and_replays(quick_events):
    runtime = quick_events
    tenant, token = await new_tenant(runtime)
    user = await create_user(FunctionsClient(tenant, token))
    hook, _ = await runtime.webhooks.add("http://127.0.0.1:9/hook", tenants=[tenant])  # after the change
    await asyncio.sleep(0.1)  # the event settles (EVENTS_SETTLE_SECONDS)
    browser = await operator(runtime)
    page = (await browser.get(f"/portal/t/{tenant}")).page()
    assert page.has(f"webhook-{hook}") and "enabled" in page.element_text(f"webhook-{hook}")
    assert user["userName"] in page.element_text("event-list") and "user.created" in page.element_text("event-list")

    replayed = await browser.post(f"/portal/ops/t/{tenant}/webhook-replay", {"endpoint": hook, "since": "1h"})
    assert replayed.status == 200 and "Replay started" in replayed.page().element_text("result-headline")
    state = await runtime.deliveries.load(tenant)
    created_us = int(parse_time(user["meta"]["created"]).timestamp() * 1_000_000)
    assert position_stamp(state.cursors[hook].position) < created_us  # before the user's event: sent again
    again = await browser.post(f"/portal/ops/t/{tenant}/webhook-replay", {"endpoint": hook, "since": "1h"})
    assert again.status == 200 and "Nothing to replay" in again.page().element_text("result-headline")
    assert (await audit_actions(runtime, tenant))[:2] == ["webhook.replayed", "webhook.replayed"]
    for form in ({"endpoint": hook, "since": "1y"}, {"endpoint": "nope", "since": "1h"}):
        assert (await browser.post(f"/portal/ops/t/{tenant}/webhook-replay", form)).status == 400
