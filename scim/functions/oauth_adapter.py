"""The Azure Functions HTTP trigger of the OAuth 2.0 token endpoint (issue 13; RFC 6749 §4.4).

``POST /oauth/{tenant}/token`` (host.json sets an empty route prefix, so the **Token Endpoint**
an admin pastes into Entra is ``{SCIM_PUBLIC_BASE_URL}/oauth/{tenant}/token``, next to the
Tenant URL ``.../scim/{tenant}``) issues an access token to one of the tenant's OAuth clients
(``python -m scim.admin oauth-client create TENANT``), which the SCIM endpoint then accepts as
a bearer token for that tenant only, for :data:`~scim.credentials.ACCESS_TOKEN_SECONDS` (1 h).

**The request** is ``Content-Type: application/x-www-form-urlencoded`` (any parameters, such
as ``; charset=UTF-8``), a body of at most :data:`MAX_BODY_BYTES` (4 KiB), with
``grant_type=client_credentials``; ``scope`` is ignored. The client authenticates (RFC 6749
§2.3.1) either with HTTP Basic, ``Authorization: Basic base64(urlencode(client_id) ":"
urlencode(client_secret))``, or with the ``client_id`` and ``client_secret`` form parameters,
never both.

**The answers** (every one with ``Cache-Control: no-store``, ``Pragma: no-cache`` and
``X-Content-Type-Options: nosniff``): 200 ``{"access_token", "token_type": "Bearer",
"expires_in"}``, or an RFC 6749 §5.2 error ``{"error", "error_description"}``:

====== ============================ ===========================================================
status error                        when
====== ============================ ===========================================================
413    ``invalid_request``          the body is over 4 KiB: a declared ``Content-Length`` is
                                    refused before the body is read
400    ``invalid_request``          not form-encoded; a body that is not UTF-8 form encoding; a
                                    parameter sent twice (§3.2); no ``grant_type``; a Basic
                                    header together with a body ``client_secret`` (two
                                    authentication methods), or a body ``client_id`` other
                                    than the Basic one
400    ``unsupported_grant_type``   ``grant_type`` is not ``client_credentials``
401    ``invalid_client``           no client authentication, a malformed Basic header or
                                    another scheme, an unknown tenant or client, a wrong
                                    secret, a revoked client, a tenant being deleted: always
                                    401 with ``WWW-Authenticate: Basic realm="scim-oauth"``,
                                    however the client authenticated
429    ``temporarily_unavailable``  the client asked too often: at most
                                    :data:`~scim.credentials.ACCESS_TOKENS_PER_MINUTE` (5)
                                    tokens a minute and
                                    :data:`~scim.credentials.MAX_LIVE_ACCESS_TOKENS` (10)
                                    unexpired ones, counted from the issue times stored in the
                                    tenant's record (so the limits hold across instances);
                                    ``Retry-After`` says when it may ask again
503    ``temporarily_unavailable``  storage failed or timed out; ``Retry-After``
500    ``server_error``             a bug (logged with its traceback; never a trace in the answer)
====== ============================ ===========================================================

Parameters sent empty count as omitted (RFC 6749 §3.1), but a name sent twice is refused even
when one of the values is empty.

**What an unauthenticated caller learns.** The request's shape is checked first (size, content
type, encoding, duplicates, authentication methods, ``grant_type``): those answers depend on
the request alone, never on a tenant. Everything after is one registry call,
:meth:`~scim.tenants.TenantRegistry.issue_access_token`: one point read of the tenant record
and one constant-time comparison of the secret's hash, the same work and the same
``invalid_client`` for an unknown tenant, an unknown client, a wrong secret and a tenant being
deleted. A tenant name that is not a valid name is answered after the same comparison (against
a dummy hash), without a read. Only an authenticated client can be told it is rate-limited.

**Logs** name the method, the endpoint (``/oauth/{tenant}/token``), the status and the time:
never the tenant, the client id or secret, the access token, the ``Authorization`` header or
the body. Token requests are not written to the provisioning log (which records SCIM
requests).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import time
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import azure.functions as func

from scim import credentials
from scim.credentials import InvalidClient, TooManyTokenRequests
from scim.functions.runtime import get_runtime
from scim.store.base import StoreUnavailable
from scim.tenants import InvalidTenantName, validate_tenant_name

__all__ = ["MAX_BODY_BYTES", "REALM", "ROUTE", "bp", "handle_token"]

logger = logging.getLogger("scim.oauth")

ROUTE = "oauth/{tenant}/token"
"""The token endpoint's route (host.json's route prefix is empty)."""
MAX_BODY_BYTES = 4096
"""The largest accepted request body (a token request is a few hundred bytes)."""
MAX_PARAMETERS = 32
REALM = "scim-oauth"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
JSON_CONTENT_TYPE = "application/json; charset=utf-8"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache", "X-Content-Type-Options": "nosniff"}
RETRY_AFTER = 5
"""``Retry-After`` (seconds) when storage is unavailable."""
_LOG_TARGET = "POST /oauth/{tenant}/token"

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions declares no types for it


class _Failure(Exception):
    """An RFC 6749 §5.2 error answer. ``description`` must hold no ``"`` and no ``\\`` (§5.2:
    NQSCHAR), and never anything the caller sent."""

    def __init__(self, status: int, error: str, description: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(description)
        self.status, self.error, self.description, self.headers = status, error, description, headers or {}


def _invalid_request(description: str, status: int = 400) -> _Failure:
    return _Failure(status, "invalid_request", description)


def _invalid_client(description: str = "Client authentication failed.") -> _Failure:
    return _Failure(401, "invalid_client", description, {"WWW-Authenticate": f'Basic realm="{REALM}"'})


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        body=json.dumps(body, separators=(",", ":")).encode("ascii"),
        status_code=status,
        headers={**NO_STORE, **(headers or {}), "Content-Type": JSON_CONTENT_TYPE},
        mimetype="application/json",
        charset="utf-8",
    )


def _error(failure: _Failure) -> func.HttpResponse:
    return _json(failure.status, {"error": failure.error, "error_description": failure.description}, failure.headers)


def _body(headers: dict[str, str], req: func.HttpRequest) -> bytes:
    """The form body, after its content type and declared size are checked (a body declared
    larger than :data:`MAX_BODY_BYTES` is never read)."""
    media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != FORM_CONTENT_TYPE:
        raise _invalid_request(f"The request must be sent as Content-Type: {FORM_CONTENT_TYPE}.")
    declared = headers.get("content-length", "").strip()
    too_large = _invalid_request(f"The request body is larger than {MAX_BODY_BYTES} bytes.", 413)
    if declared:
        if not (declared.isascii() and declared.isdigit()):
            raise _invalid_request("The Content-Length header is not a number.")
        if len(declared) > 9 or int(declared) > MAX_BODY_BYTES:
            raise too_large
    body = req.get_body() or b""
    if len(body) > MAX_BODY_BYTES:
        raise too_large
    return body


def _form(body: bytes) -> dict[str, str]:
    """The form's parameters; a name sent twice is refused (RFC 6749 §3.2), empty values are
    dropped (§3.1: a parameter without a value is treated as omitted)."""
    try:
        text = body.decode("ascii")  # form encoding is ASCII: anything else is percent-encoded
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=False,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_PARAMETERS,
        )
    except UnicodeDecodeError:
        raise _invalid_request("The request body is not UTF-8 application/x-www-form-urlencoded.") from None
    except ValueError:  # more than MAX_PARAMETERS fields
        raise _invalid_request(f"The request has more than {MAX_PARAMETERS} parameters.") from None
    seen: set[str] = set()
    for name, _ in pairs:
        if name in seen:
            raise _invalid_request(f"A parameter was sent more than once ({_safe_name(name)}).")
        seen.add(name)
    return {name: value for name, value in pairs if value != ""}


_KNOWN_PARAMETERS = frozenset({"grant_type", "client_id", "client_secret", "scope"})


def _safe_name(name: str) -> str:
    """A parameter name for an error description: only the names of this endpoint."""
    return name if name in _KNOWN_PARAMETERS else "a parameter"


def _basic(header: str) -> tuple[str, str]:
    """The client id and secret of an ``Authorization: Basic`` value (RFC 6749 §2.3.1: each
    form-urlencoded, then joined by ``:`` and base64-encoded); invalid_client if malformed."""
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise _invalid_client("Authenticate with HTTP Basic or the client_id and client_secret parameters.")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise _invalid_client("The Basic credentials are not valid base64 of client_id:client_secret.") from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise _invalid_client("The Basic credentials are not valid base64 of client_id:client_secret.")
    return unquote_plus(client_id, errors="strict"), unquote_plus(secret, errors="strict")


def _client(headers: dict[str, str], form: dict[str, str]) -> tuple[str, str] | _Failure | None:
    """The client id and secret the request authenticates with; the invalid_client failure of a
    malformed ``Authorization`` header (raised by the caller after the shape checks); or None
    when it sends no client authentication. Two methods at once: invalid_request, raised here."""
    authorization = headers.get("authorization", "").strip()
    if not authorization:
        if "client_id" in form and "client_secret" in form:
            return form["client_id"], form["client_secret"]
        return None
    if "client_secret" in form:
        raise _invalid_request("The request uses more than one authentication method (Basic and client_secret).")
    try:
        client_id, secret = _basic(authorization)
    except _Failure as failure:
        return failure
    except UnicodeDecodeError:
        return _invalid_client("The Basic credentials are not UTF-8.")
    if "client_id" in form and form["client_id"] != client_id:
        raise _invalid_request("The client_id parameter differs from the Basic credentials.")
    return client_id, secret


async def _issue(req: func.HttpRequest) -> func.HttpResponse:
    """Check the request's shape (answers that depend on the request alone), then one registry call."""
    headers = {k.lower(): v for k, v in req.headers.items()}
    form = _form(_body(headers, req))
    client = _client(headers, form)
    grant_type = form.get("grant_type")
    if grant_type is None:
        raise _invalid_request("The grant_type parameter is missing; send grant_type=client_credentials.")
    if grant_type != "client_credentials":
        raise _Failure(400, "unsupported_grant_type", "Only grant_type=client_credentials is supported.")
    if isinstance(client, _Failure):
        raise client
    if client is None:
        raise _invalid_client(
            "No client authentication: send HTTP Basic credentials or the client_id and client_secret parameters."
        )
    client_id, secret = client
    tenant = req.route_params.get("tenant", "")
    try:
        validate_tenant_name(tenant)
    except InvalidTenantName:
        # No tenant can have this name: the comparison a known tenant costs (against a dummy
        # hash), then the answer every failed authentication gets.
        with contextlib.suppress(InvalidClient):
            credentials.authenticate_client(None, client_id, secret)
        raise _invalid_client() from None
    runtime = await get_runtime()
    try:
        token, record = await runtime.tenants.issue_access_token(tenant, client_id, secret)
    except InvalidClient:
        raise _invalid_client() from None
    except TooManyTokenRequests as limited:
        raise _Failure(
            429,
            "temporarily_unavailable",
            f"Too many token requests for this client; retry after {limited.retry_after} seconds.",
            {"Retry-After": str(limited.retry_after)},
        ) from None
    return _json(
        200, {"access_token": token, "token_type": "Bearer", "expires_in": max(0, record.expires - record.issued)}
    )


async def handle_token(req: func.HttpRequest) -> func.HttpResponse:
    """Answer one request of the token endpoint (see the module docstring)."""
    started = time.perf_counter()
    try:
        response = await _issue(req)
    except _Failure as failure:
        response = _error(failure)
    except StoreUnavailable:
        response = _error(
            _Failure(
                503,
                "temporarily_unavailable",
                "The service is temporarily unavailable; retry later.",
                {"Retry-After": str(RETRY_AFTER)},
            )
        )
    except Exception:
        logger.exception("Unhandled error in %s", _LOG_TARGET)
        response = _error(_Failure(500, "server_error", "An internal error occurred; it has been logged."))
    elapsed_ms = (time.perf_counter() - started) * 1000
    logger.info("%s -> %d in %.1f ms", _LOG_TARGET, response.status_code, elapsed_ms)
    return response


@bp.route(route=ROUTE, methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def oauth_token(req: func.HttpRequest) -> func.HttpResponse:
    """The OAuth 2.0 token endpoint of every tenant (client credentials grant)."""
    return await handle_token(req)
