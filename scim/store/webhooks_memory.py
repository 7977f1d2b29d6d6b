"""Webhook endpoints in process memory (tests, local runs): the double of
:class:`~scim.store.webhooks_tables.TableWebhookRegistry`, with its behaviour.

One map, id -> :class:`~scim.webhooks.WebhookEndpoint` (frozen: every change replaces the
record, with no ``await`` in between, so concurrent calls see whole records only).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import datetime

from scim.core.webhook_messages import new_secret
from scim.webhooks import (
    DISABLED,
    ENABLED,
    WebhookEndpoint,
    WebhookNotFound,
    WebhookRegistry,
    check_url_form,
    current_time,
    failure_fields,
    format_time,
    is_endpoint_id,
    new_endpoint_id,
    normalise_events,
    normalise_tenants,
    rotated_fields,
)

__all__ = ["MemoryWebhookRegistry"]


class MemoryWebhookRegistry(WebhookRegistry):
    """Endpoints by id, in memory."""

    def __init__(self) -> None:
        self._endpoints: dict[str, WebhookEndpoint] = {}

    def _current(self, endpoint_id: str) -> WebhookEndpoint:
        found = self._endpoints.get(endpoint_id) if is_endpoint_id(endpoint_id) else None
        if found is None:
            raise WebhookNotFound(endpoint_id)
        return found

    def _change(self, endpoint_id: str, **changes: str | None) -> WebhookEndpoint:
        updated = dataclasses.replace(self._current(endpoint_id), **changes)  # type: ignore[arg-type]  # the keyword names are the string fields of WebhookEndpoint
        self._endpoints[endpoint_id] = updated
        return updated

    async def add(
        self, url: str, tenants: Iterable[str] | None = None, events: Iterable[str] | None = None
    ) -> tuple[str, str]:
        """See :meth:`WebhookRegistry.add`."""
        endpoint = WebhookEndpoint(
            id=new_endpoint_id(),
            url=check_url_form(url),
            tenants=normalise_tenants(tenants),
            events=normalise_events(events),
            created=format_time(current_time(None)),
            secret=new_secret(),
        )
        self._endpoints[endpoint.id] = endpoint
        return endpoint.id, endpoint.secret

    async def list(self) -> list[WebhookEndpoint]:
        """Every endpoint, by creation time then id."""
        return sorted(self._endpoints.values(), key=lambda e: (e.created, e.id))

    async def get(self, endpoint_id: str) -> WebhookEndpoint:
        """See :meth:`WebhookRegistry.get`."""
        return self._current(endpoint_id)

    async def remove(self, endpoint_id: str) -> None:
        """See :meth:`WebhookRegistry.remove`."""
        self._current(endpoint_id)
        del self._endpoints[endpoint_id]

    async def rotate_secret(self, endpoint_id: str, now: datetime | None = None) -> str:
        """See :meth:`WebhookRegistry.rotate_secret`."""
        new = new_secret()
        self._change(endpoint_id, **rotated_fields(self._current(endpoint_id), new, current_time(now)))
        return new

    async def record_success(self, endpoint_id: str, when: datetime | None = None) -> None:
        """See :meth:`WebhookRegistry.record_success`."""
        self._change(endpoint_id, last_success=format_time(current_time(when)), failing_since=None)

    async def record_failure(self, endpoint_id: str, error: str, when: datetime | None = None) -> WebhookEndpoint:
        """See :meth:`WebhookRegistry.record_failure`."""
        return self._change(endpoint_id, **failure_fields(self._current(endpoint_id), error, current_time(when)))

    async def disable(self, endpoint_id: str, reason: str, when: datetime | None = None) -> None:
        """See :meth:`WebhookRegistry.disable`."""
        self._change(endpoint_id, state=DISABLED, disabled_reason=reason, disabled_at=format_time(current_time(when)))

    async def enable(self, endpoint_id: str) -> None:
        """See :meth:`WebhookRegistry.enable`."""
        self._change(endpoint_id, state=ENABLED, disabled_reason=None, disabled_at=None, failing_since=None)
