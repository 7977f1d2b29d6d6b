"""Webhook endpoints: where change events are pushed, and the secrets that sign them (issue 12).

An operator registers an endpoint (``python -m scim.admin webhook add URL``) for every tenant
or some (``--tenant``), and every event type or some (``--events``). This module is the
registry's contract; implementations: memory (:mod:`scim.store.webhooks_memory`) and Azure
Tables (:mod:`scim.store.webhooks_tables`, one row per endpoint in ``{prefix}tenants`` under
PartitionKey ``webhook``). Delivery (the engine that POSTs events, retries and disables) comes
next and uses :meth:`WebhookRegistry.list`, :meth:`WebhookEndpoint.wants`,
:meth:`WebhookEndpoint.signing_secrets` and the ``record_*``/``disable`` methods.

**Secrets are stored as they are.** Unlike a Secret Token or an application key (stored as
hashes: :mod:`scim.app_keys`), a signing secret is what the service signs every delivery with
(HMAC-SHA256, :mod:`scim.core.webhook_messages`), so it must be readable: a hash would sign
nothing. It is kept in the storage account (encrypted at rest, reachable only by the app's
managed identity and the operators holding the data role), printed once by ``webhook add`` and
``webhook rotate-secret``, and never by ``webhook list`` (:class:`WebhookEndpoint` leaves the
secrets out of its ``repr``). Who reads the table can forge deliveries: treat it as the secret
store it is.

**Rotation.** :meth:`WebhookRegistry.rotate_secret` makes a new secret; the previous one keeps
signing for :data:`ROTATION_OVERLAP` (24 h), so deliveries carry both signatures meanwhile
(:meth:`WebhookEndpoint.signing_secrets`) and the consumer can switch at leisure. Only one
previous secret is kept: rotating again within the overlap ends the oldest secret's overlap at
once.

**URLs.** :meth:`WebhookRegistry.add` checks the URL's form (:func:`scim.webhooks.urls.parse_webhook_url`);
the policy that depends on where the service runs and on DNS (https only and public addresses in
Azure: :mod:`scim.webhooks.urls`) is applied by the caller before adding (the CLI), and again by
the delivery engine at every connection (DNS may change).

**Filters.** ``tenants`` are tenant names (the tenant-name rule; a tenant need not exist yet),
``events`` event types of :data:`scim.core.events.EVENT_TYPES`; ``None`` means all (also tenants
and types created later). Lists are stored sorted and without duplicates.

**State.** An endpoint is ``enabled`` or ``disabled`` (with a reason: a ``410 Gone``, the retry
window running out, an operator). The delivery engine records each outcome: the last success
time, the last error (time and text) and since when the endpoint has been failing (the first
failure after the last success), which the failure digest and the retry window read.
"""

from __future__ import annotations

import abc
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from scim.core.events import EVENT_TYPES
from scim.tenants import InvalidTenantName, validate_tenant_name
from scim.webhooks.urls import parse_webhook_url

__all__ = [
    "DISABLED",
    "ENABLED",
    "ENDPOINT_ID_PREFIX",
    "MAX_ERROR_LENGTH",
    "ROTATION_OVERLAP",
    "InvalidWebhookFilter",
    "WebhookEndpoint",
    "WebhookNotFound",
    "WebhookRegistry",
    "check_url_form",
    "current_time",
    "failure_fields",
    "format_time",
    "is_endpoint_id",
    "new_endpoint_id",
    "normalise_events",
    "normalise_tenants",
    "parse_time",
    "rotated_fields",
]

ENABLED = "enabled"
DISABLED = "disabled"
ENDPOINT_ID_PREFIX = "ep_"
ROTATION_OVERLAP = timedelta(hours=24)
"""How long the previous secret keeps signing after a rotation."""
MAX_ERROR_LENGTH = 500
"""Longest last-error text kept (the rest is cut)."""
_ENDPOINT_ID = re.compile(r"ep_[0-9a-f]{32}")


class WebhookNotFound(Exception):
    """No endpoint of that id. ``str()`` is the message for the operator."""

    def __init__(self, endpoint_id: str) -> None:
        super().__init__(f"no webhook endpoint {endpoint_id!r} (python -m scim.admin webhook list shows them)")
        self.endpoint_id = endpoint_id


class InvalidWebhookFilter(ValueError):
    """An unknown event type or an invalid tenant name in an endpoint's filters."""


def new_endpoint_id() -> str:
    """A fresh endpoint id: ``ep_`` and 32 hex digits (128 random bits)."""
    return ENDPOINT_ID_PREFIX + secrets.token_hex(16)


def is_endpoint_id(value: object) -> bool:
    """Whether ``value`` has the form of an endpoint id (matched whole)."""
    return isinstance(value, str) and _ENDPOINT_ID.fullmatch(value) is not None


def format_time(when: datetime) -> str:
    """RFC 3339 UTC with milliseconds, as ``meta.lastModified`` (``2026-12-01T18:00:00.000Z``)."""
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """The aware datetime of a time :func:`format_time` wrote."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def current_time(now: datetime | None) -> datetime:
    """``now`` (which must be timezone-aware), or the current UTC time if None."""
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("a webhook time must be timezone-aware")
    return now


def normalise_tenants(tenants: Iterable[str] | None) -> tuple[str, ...] | None:
    """``None`` (every tenant), or the names sorted without duplicates; raises InvalidWebhookFilter
    for an invalid name or an empty list (which would match nothing: say ``None`` for all)."""
    if tenants is None:
        return None
    if isinstance(tenants, str):
        raise InvalidWebhookFilter("tenants is a list of tenant names, or None for every tenant")
    names = sorted(set(tenants))
    if not names:
        raise InvalidWebhookFilter("an empty tenant list matches nothing; leave it out for every tenant")
    for name in names:
        try:
            validate_tenant_name(name)
        except InvalidTenantName as exc:
            raise InvalidWebhookFilter(str(exc)) from None
    return tuple(names)


def normalise_events(events: Iterable[str] | None) -> tuple[str, ...] | None:
    """``None`` (every type), or the event types sorted without duplicates; raises
    InvalidWebhookFilter naming the unknown ones and the known ones."""
    if events is None:
        return None
    if isinstance(events, str):
        raise InvalidWebhookFilter("events is a list of event types, or None for every type")
    types = sorted(set(events))
    if not types:
        raise InvalidWebhookFilter("an empty event type list matches nothing; leave it out for every type")
    unknown = [t for t in types if t not in EVENT_TYPES]
    if unknown:
        raise InvalidWebhookFilter(
            f"unknown event type{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(EVENT_TYPES))}"
        )
    return tuple(types)


@dataclass(frozen=True)
class WebhookEndpoint:
    """One registered endpoint. Times are RFC 3339 UTC strings (:func:`format_time`) or None.

    The secrets are fields (the delivery engine signs with them) but not part of ``repr``.
    """

    id: str
    url: str
    tenants: tuple[str, ...] | None
    events: tuple[str, ...] | None
    created: str
    state: str = ENABLED
    disabled_reason: str | None = None
    disabled_at: str | None = None
    last_success: str | None = None
    last_error: str | None = None
    last_error_at: str | None = None
    failing_since: str | None = None
    secret: str = field(default="", repr=False)
    previous_secret: str | None = field(default=None, repr=False)
    previous_secret_until: str | None = None

    @property
    def enabled(self) -> bool:
        return self.state == ENABLED

    def wants(self, tenant: str, event_type: str) -> bool:
        """Whether an event of ``event_type`` in ``tenant`` is for this endpoint (its filters;
        the state is not considered)."""
        return self.serves(tenant) and (self.events is None or event_type in self.events)

    def serves(self, tenant: str) -> bool:
        """Whether the endpoint is for ``tenant``'s events (its tenant filter; None: every tenant)."""
        return self.tenants is None or tenant in self.tenants

    def signing_secrets(self, now: datetime | None = None) -> list[str]:
        """The secrets a delivery at ``now`` is signed with: the current one, and the previous one
        until :data:`ROTATION_OVERLAP` after the rotation that replaced it."""
        keys = [self.secret]
        if (
            self.previous_secret
            and self.previous_secret_until
            and current_time(now) < parse_time(self.previous_secret_until)
        ):
            keys.append(self.previous_secret)
        return keys


class WebhookRegistry(abc.ABC):
    """Where webhook endpoints live (see the module docstring).

    Storage failures surface as :class:`scim.store.base.StoreError` (``StoreUnavailable``).
    Every method taking an ``endpoint_id`` raises :class:`WebhookNotFound` for an unknown id
    (or one that is not an id at all, without a storage call).
    """

    @abc.abstractmethod
    async def add(
        self, url: str, tenants: Iterable[str] | None = None, events: Iterable[str] | None = None
    ) -> tuple[str, str]:
        """Register an enabled endpoint and return ``(id, secret)``: a new id
        (:func:`new_endpoint_id`) and a new secret (:func:`scim.core.webhook_messages.new_secret`).

        Raises UnsafeWebhookUrl for a URL of no usable form (:func:`~scim.webhooks.urls.parse_webhook_url`;
        the where-and-DNS policy is the caller's) and InvalidWebhookFilter for the filters.
        """

    @abc.abstractmethod
    async def list(self) -> list[WebhookEndpoint]:
        """Every endpoint (secrets included: do not print them), by creation time then id."""

    @abc.abstractmethod
    async def get(self, endpoint_id: str) -> WebhookEndpoint:
        """The endpoint ``endpoint_id``."""

    @abc.abstractmethod
    async def remove(self, endpoint_id: str) -> None:
        """Delete the endpoint: nothing more is delivered to it."""

    @abc.abstractmethod
    async def rotate_secret(self, endpoint_id: str, now: datetime | None = None) -> str:
        """Make and return a new secret; the current one becomes the previous one, signing
        until ``now`` + :data:`ROTATION_OVERLAP`. Of concurrent rotations each returns a secret
        that was current at some point; the last one wins."""

    @abc.abstractmethod
    async def record_success(self, endpoint_id: str, when: datetime | None = None) -> None:
        """A delivery succeeded at ``when``: sets ``last_success`` and ends ``failing_since``."""

    @abc.abstractmethod
    async def record_failure(self, endpoint_id: str, error: str, when: datetime | None = None) -> WebhookEndpoint:
        """A delivery failed at ``when`` with ``error`` (cut to :data:`MAX_ERROR_LENGTH`): sets
        ``last_error``/``last_error_at``, and ``failing_since`` if it was not failing (unless a
        success was recorded at or after ``when``). Returns the endpoint as updated."""

    @abc.abstractmethod
    async def disable(self, endpoint_id: str, reason: str, when: datetime | None = None) -> None:
        """Stop deliveries to the endpoint: state ``disabled``, with ``reason`` and the time."""

    @abc.abstractmethod
    async def enable(self, endpoint_id: str) -> None:
        """Deliver to the endpoint again: state ``enabled``, no reason, not failing."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release network resources."""


def failure_fields(current: WebhookEndpoint, error: str, when: datetime) -> dict[str, str | None]:
    """What :meth:`WebhookRegistry.record_failure` changes on ``current`` (shared by the
    implementations): the error, its time, and ``failing_since`` when it starts."""
    at = format_time(when)
    failing_since = current.failing_since
    if failing_since is None and not (current.last_success and parse_time(current.last_success) >= when):
        failing_since = at
    return {"last_error": error[:MAX_ERROR_LENGTH], "last_error_at": at, "failing_since": failing_since}


def rotated_fields(current: WebhookEndpoint, new: str, now: datetime) -> dict[str, str | None]:
    """What a rotation to ``new`` at ``now`` changes on ``current``."""
    return {
        "secret": new,
        "previous_secret": current.secret,
        "previous_secret_until": format_time(now + ROTATION_OVERLAP),
    }


def check_url_form(url: str) -> str:
    """``url`` if its form is usable (:func:`~scim.webhooks.urls.parse_webhook_url`), else raise."""
    parse_webhook_url(url)
    return url
