"""Email senders (scim.notify.mail) against real local servers on 127.0.0.1.

SMTP: an aiosmtpd server (``aiosmtpd.controller.Controller``) whose handler keeps the
messages it receives. STARTTLS and AUTH are tested with a certificate made here, signed by a
throwaway test CA that the client trusts through ``SmtpSender(tls_context=...)``.

ACS: a stub of the ACS Email REST API served by aiohttp, shaped after what the installed
``azure-communication-email`` SDK does (``aio/_operations/_operations.py``):

1. ``POST {endpoint}/emails:send?api-version=...`` with the message JSON and an
   ``Operation-Id`` header; the service answers 202 with an ``Operation-Location`` header.
2. The SDK's ``AsyncLROBasePolling`` GETs the Operation-Location until the body's ``status``
   is terminal (``Succeeded``, or ``Failed`` which raises).

The SDK's bearer-token policy refuses non-HTTPS URLs, so the stub speaks HTTPS with the
test CA's certificate, and the sender is given ``connection_verify=<CA file>`` (an azure-core
client option passed through ``AcsSender(**client_kwargs)``): TLS is verified for real, not
switched off. The credential is a fake ``AsyncTokenCredential`` returning a fixed token, so
no Entra ID is involved; the stub checks that token in the Authorization header.
``polling_interval`` is made tiny so the poll doesn't wait the SDK's default.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import ipaddress
import json
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from azure.core.credentials import AccessToken
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from scim.notify.mail import AcsSender, SendError, SmtpSender, acs_message, sender_from_settings
from scim.settings import Settings
from tests.helpers import ROOT

SENDER = "scim-notifications@contoso.example"
TO = ["ops@contoso.example", "oncall@contoso.example"]
SUBJECT = "ALERT: SCIM provisioning: 3 failures for tenant contoso"
TEXT = "ALERT: 1 credential failure (401)\nDetails: naïve <b>not html</b>\n"
HTML = "<p><strong>ALERT:</strong> 1 credential failure (401)</p>"
USERNAME, PASSWORD = "mailer", "s3cret-Pa55word"


# -- a throwaway CA and a server certificate for 127.0.0.1 ---------------------------------


@dataclass(frozen=True)
class Pki:
    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA and a certificate for 127.0.0.1 signed by it, valid for a day."""
    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("scim test CA"))
        .issuer_name(_name("scim test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("pki")
    pki = Pki(folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
    pki.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return pki


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- SMTP ------------------------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    tls: bool
    authenticated: bool

    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.content, policy=email.policy.default)


@dataclass
class Inbox:
    """An aiosmtpd handler that keeps messages; refuses the next ``refuse`` DATA commands."""

    received: list[Received] = field(default_factory=list)
    refuse: int = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse:
            self.refuse -= 1
            return "550 5.7.1 Message refused by policy"
        tls, authenticated = session.ssl is not None, bool(session.authenticated)
        self.received.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content, tls, authenticated)
        )
        return "250 2.0.0 OK"


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USERNAME.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 235 or 535


def _start(inbox: Inbox, **smtp_parameters: Any) -> tuple[Controller, int]:
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, ready_timeout=10, **smtp_parameters)
    controller.start()
    return controller, port


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    controller, port = _start(inbox)
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def smtp_tls(pki: Pki) -> Iterator[tuple[Inbox, int]]:
    """A server that requires STARTTLS, then AUTH (PLAIN/LOGIN, offered only over TLS)."""
    inbox = Inbox()
    controller, port = _start(
        inbox,
        tls_context=pki.server_context(),
        require_starttls=True,
        auth_required=True,
        authenticator=_authenticator,
    )
    try:
        yield inbox, port
    finally:
        controller.stop()


async def _send(sender: SmtpSender | AcsSender) -> None:
    await sender.send(sender=SENDER, to=TO, subject=SUBJECT, text=TEXT, html=HTML)


async def test_smtp_delivers_text_and_html_alternatives(smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    await _send(SmtpSender("127.0.0.1", port, timeout=10))
    [received] = inbox.received
    assert (received.mail_from, received.rcpt_tos) == (SENDER, TO)
    message = received.message()
    assert message["From"] == SENDER
    assert [a.strip() for a in message["To"].split(",")] == TO
    assert message["Subject"] == SUBJECT
    assert message["Message-ID"] and message["Date"]
    assert message.get_content_type() == "multipart/alternative"
    parts = [(p.get_content_type(), p.get_content().replace("\r\n", "\n")) for p in message.iter_parts()]
    assert parts == [("text/plain", TEXT), ("text/html", HTML + "\n")]


async def test_smtp_refusal_raises_send_error(smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    inbox.refuse = 1
    sender = SmtpSender("127.0.0.1", port, timeout=10)
    with pytest.raises(SendError, match="550"):
        await _send(sender)
    await _send(sender)  # the next run succeeds
    assert len(inbox.received) == 1


async def test_smtp_closed_port_raises_send_error() -> None:
    with pytest.raises(SendError, match=r"127\.0\.0\.1"):
        await _send(SmtpSender("127.0.0.1", _free_port(), timeout=5))


async def test_smtp_starttls_and_login(smtp_tls: tuple[Inbox, int], pki: Pki) -> None:
    inbox, port = smtp_tls
    tls = pki.client_context()
    sender = SmtpSender("127.0.0.1", port, starttls=True, username=USERNAME, password=PASSWORD, tls_context=tls)
    await _send(sender)
    [received] = inbox.received
    assert received.tls and received.authenticated
    assert received.message()["Subject"] == SUBJECT
    assert PASSWORD not in repr(sender)


async def test_smtp_wrong_password_raises_without_the_password(smtp_tls: tuple[Inbox, int], pki: Pki) -> None:
    inbox, port = smtp_tls
    wrong = "wrong-" + PASSWORD
    tls = pki.client_context()
    sender = SmtpSender(
        "127.0.0.1", port, starttls=True, username=USERNAME, password=wrong, tls_context=tls, timeout=10
    )
    with pytest.raises(SendError) as caught:
        await _send(sender)
    assert "535" in str(caught.value) and wrong not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert inbox.received == []


async def test_smtp_starttls_rejects_an_untrusted_certificate(smtp_tls: tuple[Inbox, int]) -> None:
    _, port = smtp_tls  # its certificate is signed by the test CA, unknown to the system store
    with pytest.raises(SendError, match=r"(?i)certificate"):
        await _send(SmtpSender("127.0.0.1", port, starttls=True, username=USERNAME, password=PASSWORD, timeout=10))


async def test_smtp_without_starttls_cannot_send_to_a_server_that_requires_it(smtp_tls: tuple[Inbox, int]) -> None:
    _, port = smtp_tls
    with pytest.raises(SendError):
        await _send(SmtpSender("127.0.0.1", port, timeout=10))


# -- ACS Email -------------------------------------------------------------------------------


class FakeCredential:
    """An AsyncTokenCredential that hands out a fixed token and remembers the scopes asked for."""

    token = "fake-entra-token"

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []
        self.closed = False

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)

    async def close(self) -> None:
        self.closed = True

    async def __aenter__(self) -> FakeCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


@dataclass
class AcsStub:
    """The two ACS Email endpoints the SDK calls; ``mode``: "ok", "error500" or "failed"."""

    mode: str = "ok"
    base_url: str = ""
    sends: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)  # (headers, JSON)
    polls: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/emails:send", self.send)
        app.router.add_get("/emails/operations/{id}", self.operation)
        return app

    async def send(self, request: web.Request) -> web.Response:
        if "api-version" not in request.query:
            return web.json_response({"error": {"code": "MissingApiVersion", "message": "?"}}, status=400)
        self.sends.append((dict(request.headers), await request.json()))
        if self.mode == "error500":
            return web.json_response({"error": {"code": "InternalError", "message": "stub says no"}}, status=500)
        if self.mode == "throttled":  # the Azure-managed domain's limit: 5 a minute, 10 an hour
            error = {"error": {"code": "TooManyRequests", "message": "Too many requests"}}
            return web.json_response(error, status=429, headers={"Retry-After": "3600"})
        operation_id = request.headers.get("Operation-Id") or str(uuid.uuid4())
        location = f"{self.base_url}/emails/operations/{operation_id}?api-version={request.query['api-version']}"
        return web.json_response(
            {"id": operation_id, "status": "Running"}, status=202, headers={"Operation-Location": location}
        )

    async def operation(self, request: web.Request) -> web.Response:
        self.polls += 1
        operation_id = request.match_info["id"]
        if self.polls == 1:
            return web.json_response({"id": operation_id, "status": "Running"})
        if self.mode == "failed":
            error = {"code": "RecipientRejected", "message": "mailbox unavailable"}
            return web.json_response({"id": operation_id, "status": "Failed", "error": error})
        return web.json_response({"id": operation_id, "status": "Succeeded"})


@pytest.fixture
async def acs_stub(pki: Pki) -> AsyncIterator[AcsStub]:
    stub = AcsStub()
    runner = web.AppRunner(stub.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pki.server_context())
    await site.start()
    stub.base_url = f"https://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield stub
    finally:
        await runner.cleanup()


def _acs_sender(stub: AcsStub, pki: Pki, credential: FakeCredential, **client_kwargs: Any) -> AcsSender:
    return AcsSender(
        stub.base_url,
        credential,  # duck-typed AsyncTokenCredential (a Protocol)
        polling_interval=0.01,
        timeout=20,
        connection_verify=str(pki.ca_file),
        **client_kwargs,
    )


async def test_acs_sends_the_documented_message_and_waits_for_success(acs_stub: AcsStub, pki: Pki) -> None:
    credential = FakeCredential()
    sender = _acs_sender(acs_stub, pki, credential)
    try:
        await _send(sender)
    finally:
        await sender.close()
    [(headers, body)] = acs_stub.sends
    assert body == acs_message(sender=SENDER, to=TO, subject=SUBJECT, text=TEXT, html=HTML)
    assert body == {
        "senderAddress": SENDER,
        "recipients": {"to": [{"address": a} for a in TO]},
        "content": {"subject": SUBJECT, "plainText": TEXT, "html": HTML},
    }
    assert headers["Authorization"] == f"Bearer {FakeCredential.token}"
    assert headers.get("Operation-Id")
    assert credential.scopes and credential.scopes[0] == ("https://communication.azure.com//.default",)
    assert acs_stub.polls >= 2  # polled through "Running" to "Succeeded"
    assert not credential.closed  # a credential it was given is the caller's to close


async def test_acs_server_error_raises_send_error(acs_stub: AcsStub, pki: Pki) -> None:
    acs_stub.mode = "error500"
    sender = _acs_sender(acs_stub, pki, FakeCredential(), retry_total=0)
    try:
        with pytest.raises(SendError, match=r"500|stub says no"):
            await _send(sender)
    finally:
        await sender.close()
    assert len(acs_stub.sends) == 1


async def test_acs_over_its_sending_limit_raises_a_throttled_send_error_at_once(acs_stub: AcsStub, pki: Pki) -> None:
    """A 429 is not retried after its Retry-After (an hour on the managed domain, past the
    timer's 2 minutes): the send fails at once, marked throttled, so the run stops sending."""
    acs_stub.mode = "throttled"
    sender = _acs_sender(acs_stub, pki, FakeCredential())  # the sender's own retry settings
    try:
        with pytest.raises(SendError, match=r"429|Too many") as raised:
            await asyncio.wait_for(_send(sender), 30)
    finally:
        await sender.close()
    assert raised.value.throttled
    assert len(acs_stub.sends) == 1


async def test_acs_failed_operation_raises_send_error(acs_stub: AcsStub, pki: Pki) -> None:
    acs_stub.mode = "failed"
    sender = _acs_sender(acs_stub, pki, FakeCredential())
    try:
        with pytest.raises(SendError):
            await _send(sender)
    finally:
        await sender.close()


async def test_acs_unreachable_endpoint_raises_send_error(pki: Pki) -> None:
    sender = AcsSender(
        f"https://127.0.0.1:{_free_port()}",
        FakeCredential(),
        connection_verify=str(pki.ca_file),
        retry_total=0,
        timeout=20,
    )
    try:
        with pytest.raises(SendError):
            await asyncio.wait_for(_send(sender), 30)
    finally:
        await sender.close()


# -- choosing a sender -------------------------------------------------------------------------


def test_sender_from_settings_prefers_acs_then_smtp() -> None:
    storage = {"SCIM_TABLE_CONNECTION_STRING": "UseDevelopmentStorage=true"}
    both = Settings.from_env(
        {**storage, "ACS_EMAIL_ENDPOINT": "https://x.communication.azure.com", "SMTP_HOST": "smtp.example"}
    )
    assert isinstance(sender_from_settings(both), AcsSender)
    env = {**storage, "SMTP_HOST": "smtp.example", "SMTP_PORT": "587", "SMTP_STARTTLS": "true"}
    smtp = sender_from_settings(Settings.from_env(env))
    assert isinstance(smtp, SmtpSender) and "587" in repr(smtp) and "starttls=True" in repr(smtp)
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    local = sender_from_settings(Settings.from_env(sample))
    assert isinstance(local, SmtpSender) and "'127.0.0.1', 1025" in repr(local), "locally: make run's SMTP sink"
    # No default SMTP server, locally or in Azure: no sender (each tenant's run says none is configured).
    assert sender_from_settings(Settings.from_env(storage)) is None
    assert sender_from_settings(Settings.from_env({"SCIM_TABLE_ENDPOINT": "https://a.table.core.windows.net"})) is None


def test_importing_mail_does_not_import_the_azure_sdk() -> None:
    code = (
        "import sys, scim.notify.mail, scim.notify.digest; "
        "loaded = [m for m in ('azure.communication.email', 'azure.identity') if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=Path(__file__).parents[1])
