"""The contract every :class:`~scim.webhooks.WebhookRegistry` passes (:mod:`scim.webhooks`).

A test module subclasses :class:`WebhookRegistryContract` (named ``Test...``) and provides a
``registry`` fixture (an empty registry).
"""

from __future__ import annotations

import asyncio
import base64
import re
from datetime import UTC, datetime, timedelta

import pytest

from scim.core.events import EVENT_TYPES
from scim.webhooks import (
    DISABLED,
    ENABLED,
    MAX_ERROR_LENGTH,
    ROTATION_OVERLAP,
    InvalidWebhookFilter,
    WebhookNotFound,
    WebhookRegistry,
    format_time,
)
from scim.webhooks.urls import UnsafeWebhookUrl

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
SECRET_SHAPE = re.compile(r"^whsec_[A-Za-z0-9+/]{43}=$")
ID_SHAPE = re.compile(r"^ep_[0-9a-f]{32}$")
URL = "https://hooks.example.com/scim"
UNKNOWN_ID = "ep_" + "0" * 32
NOT_IDS = ["", "ep_", "nope", "ep_" + "0" * 31, "ep_" + "G" * 32, "ep_" + "0" * 32 + "\n", "../ep"]


class WebhookRegistryContract:
    """The :class:`~scim.webhooks.WebhookRegistry` behaviour; subclasses provide ``registry``."""

    async def test_add_returns_an_id_and_a_fresh_32_byte_secret(self, registry: WebhookRegistry) -> None:
        endpoint_id, secret = await registry.add(URL)
        assert ID_SHAPE.match(endpoint_id) and SECRET_SHAPE.match(secret), (endpoint_id, secret)
        assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
        other_id, other_secret = await registry.add(URL)  # the same URL twice: two endpoints
        assert other_id != endpoint_id and other_secret != secret
        endpoint = await registry.get(endpoint_id)
        assert (endpoint.id, endpoint.url, endpoint.tenants, endpoint.events) == (endpoint_id, URL, None, None)
        assert endpoint.state == ENABLED and endpoint.enabled
        assert RFC3339_UTC.match(endpoint.created)
        assert endpoint.last_success is None and endpoint.last_error is None and endpoint.failing_since is None
        assert endpoint.disabled_reason is None
        assert endpoint.secret == secret and endpoint.signing_secrets() == [secret]
        assert secret not in repr(endpoint) and secret not in repr(await registry.list())

    async def test_filters_are_validated_sorted_and_deduplicated(self, registry: WebhookRegistry) -> None:
        endpoint_id, _ = await registry.add(
            URL, tenants=["fabrikam", "contoso", "contoso"], events=["user.deleted", "user.created", "user.created"]
        )
        endpoint = await registry.get(endpoint_id)
        assert endpoint.tenants == ("contoso", "fabrikam")
        assert endpoint.events == ("user.created", "user.deleted")
        assert endpoint.wants("contoso", "user.created") and endpoint.wants("fabrikam", "user.deleted")
        assert not endpoint.wants("other", "user.created") and not endpoint.wants("contoso", "group.created")
        everything = await registry.get((await registry.add(URL))[0])
        assert all(everything.wants("any", t) for t in EVENT_TYPES)
        for tenants, events in (
            (["Contoso"], None),
            (["dev\n"], None),
            (["a b"], None),
            ([], None),
            (None, ["user.exploded"]),
            (None, ["USER.CREATED"]),
            (None, []),
            (None, ["user.created", "nope"]),
        ):
            with pytest.raises(InvalidWebhookFilter):
                await registry.add(URL, tenants=tenants, events=events)
        with pytest.raises(InvalidWebhookFilter, match=r"known: .*user\.created"):
            await registry.add(URL, events=["user.exploded"])
        assert len(await registry.list()) == 2

    async def test_a_url_of_no_usable_form_is_refused(self, registry: WebhookRegistry) -> None:
        for url in ("", "ftp://example.com/", "https://", "https://user:pw@example.com/", "https://a b.com/", "x"):
            with pytest.raises(UnsafeWebhookUrl):
                await registry.add(url)
        assert await registry.list() == []

    async def test_list_get_and_remove(self, registry: WebhookRegistry) -> None:
        assert await registry.list() == []
        ids = [(await registry.add(f"{URL}/{n}"))[0] for n in range(3)]
        listed = await registry.list()
        assert sorted(e.id for e in listed) == sorted(ids)
        assert [e.created for e in listed] == sorted(e.created for e in listed)
        await registry.remove(ids[1])
        assert sorted(e.id for e in await registry.list()) == sorted([ids[0], ids[2]])
        with pytest.raises(WebhookNotFound, match="no webhook endpoint"):
            await registry.get(ids[1])
        with pytest.raises(WebhookNotFound):
            await registry.remove(ids[1])
        for bad in [UNKNOWN_ID, *NOT_IDS]:
            for call in (
                registry.get(bad),
                registry.remove(bad),
                registry.rotate_secret(bad),
                registry.record_success(bad),
                registry.record_failure(bad, "boom"),
                registry.disable(bad, "why"),
                registry.enable(bad),
            ):
                with pytest.raises(WebhookNotFound):
                    await call

    async def test_a_removed_endpoint_is_not_brought_back_by_a_late_record(self, registry: WebhookRegistry) -> None:
        endpoint_id, _ = await registry.add(URL)
        await registry.remove(endpoint_id)
        for call in (
            registry.record_success(endpoint_id),
            registry.record_failure(endpoint_id, "late"),
            registry.disable(endpoint_id, "late"),
        ):
            with pytest.raises(WebhookNotFound):
                await call
        assert await registry.list() == []

    async def test_rotation_signs_with_both_secrets_for_24_hours(self, registry: WebhookRegistry) -> None:
        endpoint_id, first = await registry.add(URL)
        now = datetime(2026, 12, 1, 18, 0, tzinfo=UTC)
        second = await registry.rotate_secret(endpoint_id, now)
        assert SECRET_SHAPE.match(second) and second != first
        endpoint = await registry.get(endpoint_id)
        assert endpoint.secret == second
        assert endpoint.previous_secret_until == format_time(now + ROTATION_OVERLAP)
        assert endpoint.signing_secrets(now) == [second, first]
        assert endpoint.signing_secrets(now + ROTATION_OVERLAP - timedelta(seconds=1)) == [second, first]
        assert endpoint.signing_secrets(now + ROTATION_OVERLAP) == [second]
        assert endpoint.signing_secrets(now + timedelta(days=3)) == [second]
        later = now + timedelta(hours=1)
        third = await registry.rotate_secret(endpoint_id, later)  # a second rotation in the overlap
        endpoint = await registry.get(endpoint_id)
        assert endpoint.signing_secrets(later) == [third, second]  # the first stops at once
        assert second not in repr(endpoint) and third not in repr(endpoint)
        with pytest.raises(ValueError, match="timezone-aware"):
            await registry.rotate_secret(endpoint_id, datetime(2026, 12, 1))

    async def test_concurrent_rotations_leave_a_secret_that_was_returned(self, registry: WebhookRegistry) -> None:
        endpoint_id, first = await registry.add(URL)
        returned = await asyncio.gather(*(registry.rotate_secret(endpoint_id) for _ in range(4)))
        assert len(set(returned)) == 4 and first not in returned
        endpoint = await registry.get(endpoint_id)
        assert endpoint.secret in returned
        assert endpoint.previous_secret in [first, *returned] and endpoint.previous_secret != endpoint.secret

    async def test_outcomes_are_recorded_for_the_delivery_engine(self, registry: WebhookRegistry) -> None:
        endpoint_id, _ = await registry.add(URL)
        t0 = datetime(2026, 12, 1, 18, 0, tzinfo=UTC)
        await registry.record_success(endpoint_id, t0)
        assert (await registry.get(endpoint_id)).last_success == format_time(t0)
        failed = await registry.record_failure(endpoint_id, "HTTP 500 " + "x" * 1000, t0 + timedelta(minutes=1))
        assert failed.failing_since == format_time(t0 + timedelta(minutes=1))
        assert failed.last_error is not None and len(failed.last_error) == MAX_ERROR_LENGTH
        again = await registry.record_failure(endpoint_id, "timeout", t0 + timedelta(minutes=5))
        stored = await registry.get(endpoint_id)
        assert again == stored
        assert stored.failing_since == format_time(t0 + timedelta(minutes=1)), "failing since the first failure"
        assert (stored.last_error, stored.last_error_at) == ("timeout", format_time(t0 + timedelta(minutes=5)))
        await registry.record_success(endpoint_id, t0 + timedelta(minutes=6))
        stored = await registry.get(endpoint_id)
        assert stored.failing_since is None and stored.last_success == format_time(t0 + timedelta(minutes=6))
        assert stored.last_error == "timeout", "the last error stays visible after a success"
        late = await registry.record_failure(endpoint_id, "old news", t0 + timedelta(minutes=2))
        assert late.failing_since is None, "a failure older than the last success does not start a failing run"

    async def test_disable_and_enable(self, registry: WebhookRegistry) -> None:
        endpoint_id, secret = await registry.add(URL, tenants=["contoso"])
        kept_id, _ = await registry.add(URL)
        when = datetime(2026, 12, 1, 18, 0, tzinfo=UTC)
        await registry.record_failure(endpoint_id, "HTTP 410", when)
        await registry.disable(endpoint_id, "the endpoint answered 410 Gone", when)
        endpoint = await registry.get(endpoint_id)
        assert endpoint.state == DISABLED and not endpoint.enabled
        assert endpoint.disabled_reason == "the endpoint answered 410 Gone"
        assert endpoint.disabled_at == format_time(when)
        assert endpoint.secret == secret and endpoint.tenants == ("contoso",), "nothing else changed"
        assert (await registry.get(kept_id)).enabled
        await registry.enable(endpoint_id)
        endpoint = await registry.get(endpoint_id)
        assert endpoint.enabled and endpoint.disabled_reason is None and endpoint.failing_since is None
        assert endpoint.last_error == "HTTP 410"
