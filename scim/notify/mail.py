"""Sending a digest by email: SMTP or Azure Communication Services (ACS) Email.

The pieces::

    SendError            the send failed; the caller retries on its next run
    EmailSender          what the timer needs: send(), close()
    ├── SmtpSender       stdlib smtplib in a worker thread; optional STARTTLS and login
    ├── AcsSender        ACS Email through Microsoft Entra ID (DefaultAzureCredential), no keys
    └── RecordingSender  a test double that keeps what it is given

:func:`sender_from_settings` picks one from the app settings (``ACS_EMAIL_ENDPOINT`` first,
then ``SMTP_HOST``). The Azure SDK is imported only when an ACS email is sent, to keep cold
starts fast. Each send of the SMTP and ACS senders is a ``scim.email.send`` span
(:mod:`scim.telemetry`).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import smtplib
import ssl
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING, Any

from scim.telemetry import instruments

if TYPE_CHECKING:
    from azure.communication.email.aio import EmailClient
    from azure.core.credentials_async import AsyncTokenCredential

    from scim.settings import Settings

__all__ = [
    "AcsSender",
    "EmailSender",
    "RecordingSender",
    "SendError",
    "SentEmail",
    "SmtpSender",
    "acs_message",
    "mime_message",
    "sender_from_settings",
]

logger = logging.getLogger(__name__)


class SendError(Exception):
    """The email was not sent (or not confirmed); the caller retries on its next run.

    The message names the server and the cause, never a password or token. ``throttled``: the
    service refused it for its sending limit (ACS: 429), so sending more now is pointless.
    """

    def __init__(self, message: str, *, throttled: bool = False) -> None:
        super().__init__(message)
        self.throttled = throttled


class EmailSender(abc.ABC):
    """Sends one email with a plain-text and an HTML part to a few recipients.

    Rules for implementations:

    - ``send`` returns once the email is accepted for delivery, and raises :class:`SendError`
      for anything the next run may fix (network, server, credentials, throttling).
    - ``to`` is never empty (``ValueError`` otherwise).
    - ``close`` releases connections and credentials; the sender is not used after it.
    """

    @abc.abstractmethod
    async def send(self, *, sender: str, to: Sequence[str], subject: str, text: str, html: str) -> None:
        """Send one email."""

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release what the sender holds."""


@contextlib.asynccontextmanager
async def _traced(transport: str) -> AsyncIterator[None]:
    """The ``scim.email.send`` span of one send (:mod:`scim.telemetry`): its transport and
    outcome, never a recipient, subject or server."""
    with instruments.span("scim.email.send", {"scim.email.transport": transport}, "client") as span:
        try:
            yield
        except BaseException:
            instruments.set_attributes(span, {instruments.OUTCOME: "failed"}, failed=True)
            raise
        instruments.set_attributes(span, {instruments.OUTCOME: "sent"})


def _check_recipients(to: Sequence[str]) -> list[str]:
    if isinstance(to, str) or not to:
        raise ValueError("to must be a non-empty sequence of addresses")
    return list(to)


# -- SMTP ------------------------------------------------------------------------------------


def mime_message(*, sender: str, to: Sequence[str], subject: str, text: str, html: str) -> EmailMessage:
    """A multipart/alternative message: the text part first, then the HTML part (RFC 2046 §5.1.4)."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(_check_recipients(to))
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


class SmtpSender(EmailSender):
    """Sends through an SMTP server with :mod:`smtplib`, in a worker thread.

    ``starttls`` upgrades the connection (RFC 3207) with ``tls_context`` (default: the system
    trust store and hostname checks); ``username`` logs in (RFC 4954) after the upgrade.
    """

    def __init__(
        self,
        host: str,
        port: int = 25,
        *,
        starttls: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._starttls = starttls
        self._username = username
        self._password = password
        self._timeout = timeout
        self._tls_context = tls_context

    def __repr__(self) -> str:
        return f"SmtpSender({self._host!r}, {self._port}, starttls={self._starttls}, username={self._username!r})"

    async def send(self, *, sender: str, to: Sequence[str], subject: str, text: str, html: str) -> None:
        """Send one email; :class:`SendError` on any SMTP or network failure."""
        message = mime_message(sender=sender, to=to, subject=subject, text=text, html=html)
        async with _traced("smtp"):
            await asyncio.to_thread(self._deliver, message, sender, list(to))

    def _deliver(self, message: EmailMessage, sender: str, to: list[str]) -> None:
        try:
            with smtplib.SMTP(self._host, self._port, timeout=self._timeout) as smtp:
                if self._starttls:
                    smtp.starttls(context=self._tls_context or ssl.create_default_context())
                if self._username is not None:
                    smtp.login(self._username, self._password or "")
                refused = smtp.send_message(message, from_addr=sender, to_addrs=to)
        except (smtplib.SMTPException, OSError) as exc:
            # "from None": the cause may carry the server's echo of the AUTH exchange.
            raise SendError(self._describe(exc)) from None
        if refused:  # some recipients accepted: retrying would send them a duplicate
            logger.warning("SMTP server %s:%s refused recipients %s", self._host, self._port, sorted(refused))

    def _describe(self, exc: BaseException) -> str:
        text = f"SMTP send via {self._host}:{self._port} failed: {type(exc).__name__}: {exc}"
        return text.replace(self._password, "***") if self._password else text


# -- Azure Communication Services Email -----------------------------------------------------


def acs_message(*, sender: str, to: Sequence[str], subject: str, text: str, html: str) -> dict[str, Any]:
    """The ACS Email send request body (REST API ``POST /emails:send``, 2023-03-31 and later)."""
    return {
        "senderAddress": sender,
        "recipients": {"to": [{"address": address} for address in _check_recipients(to)]},
        "content": {"subject": subject, "plainText": text, "html": html},
    }


class AcsSender(EmailSender):
    """Sends through Azure Communication Services Email, authenticated with Microsoft Entra ID.

    ``credential`` defaults to ``azure.identity.aio.DefaultAzureCredential`` (managed identity
    in Azure), created on first use and closed by :meth:`close`; a given credential is left
    open. No connection strings or access keys. ``client_kwargs`` go to the SDK's async
    ``EmailClient`` (azure-core options such as ``retry_total``, ``connection_verify``,
    ``transport``). ACS sends asynchronously: :meth:`send` waits for the operation to
    succeed, polling every ``polling_interval`` seconds, for at most ``timeout`` seconds.
    """

    def __init__(
        self,
        endpoint: str,
        credential: AsyncTokenCredential | None = None,
        *,
        polling_interval: float = 2.0,
        timeout: float = 120.0,
        **client_kwargs: Any,
    ) -> None:
        self._endpoint = endpoint
        self._credential = credential
        self._owns_credential = credential is None
        self._timeout = timeout
        # The SDK default retries a 5xx ten times with back-off up to minutes, and a 429 after its
        # Retry-After (past the timer's 2 minutes); the timer retries on its next run anyway, so
        # bad statuses are not retried here (connection errors still are).
        self._client_kwargs = {
            "polling_interval": polling_interval,
            "retry_total": 3,
            "retry_status": 0,
            **client_kwargs,
        }
        self._client: EmailClient | None = None

    def __repr__(self) -> str:
        return f"AcsSender({self._endpoint!r})"

    async def send(self, *, sender: str, to: Sequence[str], subject: str, text: str, html: str) -> None:
        """Send one email and wait for ACS to report it sent; :class:`SendError` otherwise."""
        from azure.core.exceptions import AzureError

        message = acs_message(sender=sender, to=to, subject=subject, text=text, html=html)
        async with _traced("acs"):
            try:
                result = await asyncio.wait_for(self._send(message), self._timeout)
            except (AzureError, OSError, TimeoutError) as exc:
                throttled = getattr(exc, "status_code", None) == 429  # HttpResponseError: over the sending limit
                raise SendError(
                    f"ACS email send via {self._endpoint} failed: {type(exc).__name__}: {exc}", throttled=throttled
                ) from exc
            status = result.get("status") if isinstance(result, dict) else None
            if status != "Succeeded":
                raise SendError(f"ACS email send via {self._endpoint} ended with status {status!r}")

    async def _send(self, message: dict[str, Any]) -> Any:
        # operation_id makes the SDK's own retries of the POST idempotent.
        poller = await self._email_client().begin_send(message, operation_id=str(uuid.uuid4()))
        return await poller.result()

    def _email_client(self) -> EmailClient:
        if self._client is None:
            from azure.communication.email.aio import EmailClient

            if self._credential is None:
                from azure.identity.aio import DefaultAzureCredential

                self._credential = DefaultAzureCredential()
            self._client = EmailClient(self._endpoint, self._credential, **self._client_kwargs)
        return self._client

    async def close(self) -> None:
        """Close the client and, if this sender created it, the credential."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        if self._owns_credential and self._credential is not None:
            credential, self._credential = self._credential, None
            await credential.close()


# -- the test double and the choice -----------------------------------------------------------


@dataclass(frozen=True)
class SentEmail:
    """One email given to a :class:`RecordingSender`."""

    sender: str
    to: tuple[str, ...]
    subject: str
    text: str
    html: str


@dataclass
class RecordingSender(EmailSender):
    """Keeps the emails it is given in ``sent``; raises :class:`SendError` while ``fail`` is set."""

    sent: list[SentEmail] = field(default_factory=list)
    fail: bool = False
    closed: bool = False

    async def send(self, *, sender: str, to: Sequence[str], subject: str, text: str, html: str) -> None:
        recipients = tuple(_check_recipients(to))
        if self.fail:
            raise SendError("RecordingSender is set to fail")
        self.sent.append(SentEmail(sender, recipients, subject, text, html))

    async def close(self) -> None:
        self.closed = True


def sender_from_settings(settings: Settings) -> EmailSender | None:
    """ACS when ``ACS_EMAIL_ENDPOINT`` is set, else SMTP when ``SMTP_HOST`` is set, else None."""
    if settings.acs_email_endpoint:
        return AcsSender(settings.acs_email_endpoint)
    if settings.smtp_host:
        return SmtpSender(
            settings.smtp_host,
            settings.smtp_port,
            starttls=settings.smtp_starttls,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
        )
    return None
