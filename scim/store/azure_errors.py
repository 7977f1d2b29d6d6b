"""The one translation of Azure SDK errors into store errors (rule 9 of :mod:`scim.store.base`).

:func:`store_error` maps what azure-core and azure-data-tables raise (the HTTP status and the
Table service's error code, learn.microsoft.com: "Table service error codes"; transport errors
and timeouts) to the :class:`~scim.store.base.StoreError` classes, reading which operation of a
transaction failed (its role, :class:`scim.store.operations._Op`): a 409 on a unique index row
is a taken ``userName``, a 404 on a member's flag merge an unknown member
(``docs/table-layout.md``, "Consistency" and "Why membership is stored this way").
:func:`_mapped` applies it to a single storage call (:func:`scim.store.azure_client._io`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceModifiedError,
    ServiceRequestError,
    ServiceResponseError,
)

from scim.store.base import (
    EntityTooLarge,
    ResourceExists,
    ResourceNotFound,
    StoreError,
    StoreUnavailable,
    UniquenessViolation,
    UnknownMembers,
    VersionMismatch,
)

if TYPE_CHECKING:
    from scim.store.operations import _Op

__all__ = ["store_error"]

_TOO_LARGE_CODES = frozenset({"EntityTooLarge", "PropertyValueTooLarge", "RequestBodyTooLarge", "TooManyProperties"})
_RETRIABLE_STATUS = frozenset({408, 429})


def store_error(exc: BaseException, op: _Op | None = None) -> StoreError:
    """Map an Azure SDK error (of ``op`` in a transaction, when known) to a store error.

    The single translation point (rule 9 of :mod:`scim.store.base`):

    - 409 on a unique index row -> :class:`UniquenessViolation` (RFC 7644 §3.3, 409 uniqueness);
      any other 409 -> :class:`ResourceExists`;
    - 404 on a member's flag merge -> :class:`UnknownMembers`; any other 404 -> :class:`ResourceNotFound`;
    - 412 (``ResourceModifiedError``) -> :class:`VersionMismatch` (RFC 7644 §3.14);
    - size/property-count limits -> :class:`EntityTooLarge`;
    - transport errors, timeouts, throttling (408/429) and 5xx -> :class:`StoreUnavailable`.
    """
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, (ServiceRequestError, ServiceResponseError, TimeoutError, OSError)):
        return StoreUnavailable(str(exc))
    if not isinstance(exc, HttpResponseError):
        return StoreUnavailable(str(exc)) if isinstance(exc, AzureError) else StoreError(repr(exc))
    status = exc.status_code
    code = str(getattr(exc, "error_code", None) or "")
    role = op.role if op is not None else ""
    if code in _TOO_LARGE_CODES or status == 413:
        return EntityTooLarge(code or "request too large")
    if status == 409 and role == "unique" and op is not None:
        return UniquenessViolation(op.subject)
    if status == 409:
        return ResourceExists(code)
    if status == 404 and role == "member" and op is not None:
        return UnknownMembers([op.subject])
    if status == 404:
        return ResourceNotFound(code)
    if status == 412 or isinstance(exc, ResourceModifiedError):
        return VersionMismatch(code)
    if status is None or status >= 500 or status in _RETRIABLE_STATUS:
        return StoreUnavailable(f"storage answered {status} {code}")
    return StoreError(f"storage answered {status} {code}")


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    """Run a single storage call, raising store errors only."""
    try:
        yield
    except StoreError:
        raise
    except (AzureError, OSError) as exc:
        raise store_error(exc) from exc
