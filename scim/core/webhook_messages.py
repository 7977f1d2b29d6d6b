"""Webhook messages: the body, the headers and the signatures of one delivery (issue 12, "Webhooks").

Deliveries follow the **Standard Webhooks** specification (www.standardwebhooks.com), so that a
consumer verifies them with any of its libraries (``pip install standardwebhooks``:
``Webhook(secret).verify(body, headers)``):

- a **secret** is :data:`SECRET_PREFIX` (``whsec_``) followed by the standard base64 of 32 bytes
  from the OS CSPRNG (:func:`new_secret`); what is signed with is those 32 bytes, not the text;
- the **body** is ``{"type": <event type>, "timestamp": <the event's time>, "data": <the event>}``
  (:func:`message_body`), where the event is the one the feed serves (:mod:`scim.core.events`:
  ``id``, ``type``, ``tenant``, ``time``, ``data``), serialised the same way every time, so a
  redelivery of an event carries the same bytes;
- the **headers** (:func:`message_headers`): ``webhook-id`` (the event's id: stable across
  redeliveries, the consumer's de-duplication key), ``webhook-timestamp`` (Unix seconds of this
  attempt: a consumer refuses a message more than a few minutes old or new, which stops a replay
  of a captured message), ``webhook-signature`` and ``Content-Type: application/json``;
- a **signature** is ``v1,`` + base64(HMAC-SHA256(secret bytes, ``{id}.{timestamp}.{body}``))
  (:func:`signature`); while a secret rotation overlaps, ``webhook-signature`` holds one
  signature per secret, space-separated (:func:`signature_header`), and a consumer that knows
  either secret verifies the message.

Everything here is pure (no I/O): the delivery engine builds one message per attempt with
:func:`build_message` (a fresh timestamp each attempt, the same id and body).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = [
    "SECRET_BYTES",
    "SECRET_PREFIX",
    "InvalidSecret",
    "WebhookMessage",
    "build_message",
    "message_body",
    "message_headers",
    "new_secret",
    "secret_bytes",
    "signature",
    "signature_header",
]

SECRET_PREFIX = "whsec_"
"""What every signing secret starts with (the Standard Webhooks convention; a scanner's anchor)."""
SECRET_BYTES = 32
"""Random bytes in a secret we make (256 bits)."""
MIN_SECRET_BYTES = 24
"""Fewest bytes a secret may hold (the specification allows 24 to 64)."""
MAX_SECRET_BYTES = 64


class InvalidSecret(ValueError):
    """Not a signing secret: ``whsec_`` + base64 of 24 to 64 bytes."""


@dataclass(frozen=True)
class WebhookMessage:
    """One delivery attempt: POST ``body`` with ``headers``."""

    id: str
    timestamp: int
    body: bytes
    headers: dict[str, str]


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` + base64 of :data:`SECRET_BYTES` random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_bytes(secret: str) -> bytes:
    """The key a secret stands for (what HMAC uses); raises :class:`InvalidSecret`."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise InvalidSecret(f"a webhook signing secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSecret("a webhook signing secret is whsec_ followed by standard base64") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise InvalidSecret(f"a webhook signing secret holds {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes")
    return key


def message_body(event: Mapping[str, Any]) -> bytes:
    """The body delivering ``event``: ``{"type", "timestamp", "data"}``, compact UTF-8 JSON.

    ``timestamp`` is the event's ``time`` (the commit time, ISO 8601 UTC), ``data`` the whole
    event. The same event always gives the same bytes (keys in the event's own order).
    """
    document = {"type": event["type"], "timestamp": event["time"], "data": dict(event)}
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,`` + base64 of HMAC-SHA256 over ``{msg_id}.{timestamp}.{body}`` with the secret's bytes."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(signing_secrets: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """``webhook-signature``: one signature per secret, space-separated (a rotation's overlap)."""
    signatures = [signature(s, msg_id, timestamp, body) for s in signing_secrets]
    if not signatures:
        raise InvalidSecret("a webhook message needs at least one signing secret")
    return " ".join(signatures)


def message_headers(signing_secrets: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of a delivery (Standard Webhooks, and ``Content-Type: application/json``)."""
    return {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(signing_secrets, msg_id, timestamp, body),
    }


def build_message(event: Mapping[str, Any], signing_secrets: Iterable[str], now: datetime) -> WebhookMessage:
    """The attempt delivering ``event`` at ``now`` (an aware datetime), signed with every secret
    of ``signing_secrets`` (an endpoint's :meth:`~scim.webhooks.WebhookEndpoint.signing_secrets`)."""
    body = message_body(event)
    timestamp = int(now.timestamp())
    msg_id = str(event["id"])
    return WebhookMessage(msg_id, timestamp, body, message_headers(signing_secrets, msg_id, timestamp, body))
