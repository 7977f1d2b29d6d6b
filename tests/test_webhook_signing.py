"""Webhook messages (:mod:`scim.core.webhook_messages`) verified with the Standard Webhooks
reference library (``standardwebhooks`` from PyPI), not with our own code: what a consumer runs."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from scim.core.webhook_messages import (
    InvalidSecret,
    build_message,
    message_body,
    new_secret,
    secret_bytes,
    signature,
)
from scim.store.webhooks_memory import MemoryWebhookRegistry

EVENT = {
    "id": "evt_5f0c8e6a2b7d4c1e9a3f6b8d0c2e4a61",
    "type": "user.deactivated",
    "tenant": "contoso",
    "time": "2026-12-01T18:00:00.000Z",
    "data": {"object": {"id": "2819c223", "userName": "bjensen@contoso.com", "displayName": "Björn", "active": False}},
}


def _now() -> datetime:
    return datetime.now(UTC)


def test_a_message_we_sign_verifies_and_carries_the_event() -> None:
    secret = new_secret()
    message = build_message(EVENT, [secret], _now())
    assert message.headers["Content-Type"] == "application/json"
    assert message.headers["webhook-id"] == EVENT["id"] == message.id
    assert message.headers["webhook-timestamp"] == str(message.timestamp)
    assert message.headers["webhook-signature"].startswith("v1,") and " " not in message.headers["webhook-signature"]
    payload = Webhook(secret).verify(message.body, message.headers)
    assert payload == {"type": "user.deactivated", "timestamp": "2026-12-01T18:00:00.000Z", "data": EVENT}
    assert Webhook(secret).verify(message.body.decode(), message.headers) == payload  # as text, too


def test_the_secret_is_whsec_and_the_base64_of_32_random_bytes() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    raw = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    assert len(raw) == 32 and secret_bytes(secret) == raw
    assert new_secret() != secret
    assert Webhook(raw).verify(  # the library given the raw bytes agrees: the bytes are the key
        (m := build_message(EVENT, [secret], _now())).body, m.headers
    )
    for bad in ("", "whsec_", "abc", "whsec_not base64!", "whsec_" + base64.b64encode(b"short").decode()):
        with pytest.raises(InvalidSecret):
            secret_bytes(bad)


def test_during_a_rotation_either_secret_verifies() -> None:
    old, new = new_secret(), new_secret()
    message = build_message(EVENT, [new, old], _now())
    signatures = message.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    assert Webhook(old).verify(message.body, message.headers)["data"]["id"] == EVENT["id"]
    assert Webhook(new).verify(message.body, message.headers)["data"]["id"] == EVENT["id"]
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(message.body, message.headers)


async def test_a_rotated_endpoint_signs_with_both_then_only_the_new_one() -> None:
    hooks = MemoryWebhookRegistry()
    endpoint_id, first = await hooks.add("https://hooks.example.com/")
    rotated_at = _now()
    second = await hooks.rotate_secret(endpoint_id, rotated_at)
    endpoint = await hooks.get(endpoint_id)
    during = build_message(EVENT, endpoint.signing_secrets(_now()), _now())
    assert Webhook(first).verify(during.body, during.headers) and Webhook(second).verify(during.body, during.headers)
    after = build_message(EVENT, endpoint.signing_secrets(rotated_at + timedelta(hours=24)), _now())
    assert Webhook(second).verify(after.body, after.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(first).verify(after.body, after.headers)


def test_a_tampered_message_fails() -> None:
    secret = new_secret()
    message = build_message(EVENT, [secret], _now())
    tampered = message.body.replace(b'"active":false', b'"active":true')
    assert tampered != message.body
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered, message.headers)
    for header, value in (
        ("webhook-id", "evt_other"),
        ("webhook-timestamp", str(message.timestamp + 1)),
        ("webhook-signature", "v1," + base64.b64encode(b"\0" * 32).decode()),
    ):
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(message.body, {**message.headers, header: value})
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(message.body, {k: v for k, v in message.headers.items() if k != "webhook-signature"})


def test_an_old_or_future_timestamp_fails() -> None:
    secret = new_secret()
    for moment in (_now() - timedelta(minutes=10), _now() + timedelta(minutes=10)):
        message = build_message(EVENT, [secret], moment)
        with pytest.raises(WebhookVerificationError, match=r"too (old|new)"):
            Webhook(secret).verify(message.body, message.headers)


def test_a_redelivery_has_the_same_id_and_body_and_a_fresh_signature() -> None:
    secret = new_secret()
    first = build_message(EVENT, [secret], _now() - timedelta(minutes=1))
    again = build_message(json.loads(json.dumps(EVENT)), [secret], _now())
    assert (again.id, again.body) == (first.id, first.body) and again.timestamp > first.timestamp
    assert again.headers["webhook-signature"] != first.headers["webhook-signature"]
    assert Webhook(secret).verify(again.body, again.headers)
    assert message_body(EVENT) == first.body and "Björn" in first.body.decode("utf-8")


def test_the_signature_is_the_specifications_hmac() -> None:
    """The specification's construction spelled out (HMAC-SHA256 of ``id.timestamp.body``), and the
    reference library's own ``sign`` giving the same string."""
    secret = new_secret()
    body = message_body(EVENT)
    ours = signature(secret, "msg_1", 1_700_000_000, body)
    theirs = Webhook(secret).sign("msg_1", datetime.fromtimestamp(1_700_000_000, UTC), body.decode())
    assert ours == theirs
