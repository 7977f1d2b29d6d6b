"""SCIM errors, each carrying its HTTP status and ``scimType`` (RFC 7644 §3.12).

The hierarchy::

    ScimError                       any error the client is told about
    ├── BadRequest (400)
    │   ├── InvalidFilter           scimType invalidFilter
    │   ├── TooMany                 scimType tooMany
    │   ├── InvalidSyntax           scimType invalidSyntax
    │   ├── InvalidPath             scimType invalidPath
    │   ├── NoTarget                scimType noTarget
    │   ├── InvalidValue            scimType invalidValue
    │   ├── Mutability              scimType mutability
    │   ├── InvalidVersion          scimType invalidVers
    │   └── InvalidCursor           scimType invalidCursor
    ├── Unauthorized (401)
    ├── Forbidden (403)
    ├── NotFound (404)
    ├── MethodNotAllowed (405)
    ├── Conflict (409)              scimType uniqueness
    ├── PreconditionFailed (412)
    ├── PayloadTooLarge (413)
    ├── NotSupported (501)
    └── ServiceUnavailable (503)

One choke point (:func:`scim.functions.http_adapter`) turns these into responses. Anything
that is not a :class:`ScimError` is a bug: it is logged with its traceback and the
client receives a generic 500 without internal detail.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ERROR_SCHEMA",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "InvalidCursor",
    "InvalidFilter",
    "InvalidPath",
    "InvalidSyntax",
    "InvalidValue",
    "InvalidVersion",
    "MethodNotAllowed",
    "Mutability",
    "NoTarget",
    "NotFound",
    "NotSupported",
    "PayloadTooLarge",
    "PreconditionFailed",
    "ScimError",
    "ServiceUnavailable",
    "TooMany",
    "Unauthorized",
]

ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"


class ScimError(Exception):
    """An error reported to the client as a SCIM Error message (RFC 7644 §3.12)."""

    status: int = 400
    scim_type: str | None = None

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})

    def to_json(self) -> dict[str, Any]:
        """The SCIM Error body: ``status`` is a string, as RFC 7644 §3.12 requires."""
        body: dict[str, Any] = {
            "schemas": [ERROR_SCHEMA],
            "status": str(self.status),
            "detail": self.detail,
        }
        if self.scim_type:
            body["scimType"] = self.scim_type
        return body


class BadRequest(ScimError):
    """400: the request is malformed (RFC 7644 §3.12, Table 8)."""

    status = 400


class InvalidFilter(BadRequest):
    """The filter syntax is invalid or the filter is not supported (RFC 7644 §3.12, Table 9)."""

    scim_type = "invalidFilter"


class TooMany(BadRequest):
    """The query would return or scan more than the service allows (RFC 7644 §3.12, Table 9)."""

    scim_type = "tooMany"


class InvalidSyntax(BadRequest):
    """The request body could not be parsed or is not a valid SCIM message (RFC 7644 §3.12)."""

    scim_type = "invalidSyntax"


class InvalidPath(BadRequest):
    """A PATCH ``path`` is invalid (RFC 7644 §3.5.2, §3.12)."""

    scim_type = "invalidPath"


class NoTarget(BadRequest):
    """A PATCH ``path`` selected nothing where something was required (RFC 7644 §3.5.2.3)."""

    scim_type = "noTarget"


class InvalidValue(BadRequest):
    """A value is missing, of the wrong type or otherwise unacceptable (RFC 7644 §3.12)."""

    scim_type = "invalidValue"


class Mutability(BadRequest):
    """The request tried to change an immutable or read-only attribute (RFC 7644 §3.12)."""

    scim_type = "mutability"


class InvalidVersion(BadRequest):
    """The SCIM protocol version is not supported (RFC 7644 §3.12)."""

    scim_type = "invalidVers"


class InvalidCursor(BadRequest):
    """A pagination cursor that this service did not issue, or that cannot be used here (RFC 9865 §2.3)."""

    scim_type = "invalidCursor"


class Unauthorized(ScimError):
    """401: no valid bearer token (RFC 7644 §2, RFC 6750 §3)."""

    status = 401

    def __init__(self, detail: str = "Authentication is required: send a valid bearer token.") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="SCIM"'})


class Forbidden(ScimError):
    """403: the operation is not permitted (RFC 7644 §3.12)."""

    status = 403


class NotFound(ScimError):
    """404: the resource or endpoint does not exist (RFC 7644 §3.12)."""

    status = 404


class MethodNotAllowed(ScimError):
    """405: the endpoint exists but not for this method."""

    status = 405


class Conflict(ScimError):
    """409 ``uniqueness``: a unique attribute already has this value (RFC 7644 §3.3, §3.12)."""

    status = 409
    scim_type = "uniqueness"


class PreconditionFailed(ScimError):
    """412: ``If-Match`` did not match the current version (RFC 7644 §3.14)."""

    status = 412


class PayloadTooLarge(ScimError):
    """413: the request body exceeds the advertised limit (RFC 7644 §3.12)."""

    status = 413


class NotSupported(ScimError):
    """501: the operation is not supported by this service provider (RFC 7644 §3.12)."""

    status = 501


class ServiceUnavailable(ScimError):
    """503: storage is unavailable; the client should retry later."""

    status = 503

    def __init__(
        self, detail: str = "The service is temporarily unavailable; retry later.", retry_after: int = 5
    ) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})
