"""Store errors as SCIM errors (RFC 7644 §3.12): the one translation of :mod:`scim.store.base`'s
exceptions into the status and ``scimType`` a client is told, shared by the handlers
(:mod:`scim.core.service`) and the listing (:mod:`scim.core.listing`)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from scim.core.errors import Conflict, InvalidValue, NotFound, PreconditionFailed, ServiceUnavailable
from scim.core.schema import ResourceType
from scim.store import MAX_GROUPS_PER_RESOURCE
from scim.store.base import (
    EntityTooLarge,
    ResourceNotFound,
    StoreError,
    StoreUnavailable,
    TooManyGroups,
    UniquenessViolation,
    UnknownMembers,
    VersionMismatch,
)

__all__ = ["store_call"]

T = TypeVar("T")


async def store_call(operation: Awaitable[T], rtype: ResourceType, resource_id: str | None = None) -> T:
    """Await a store call, translating store errors into SCIM errors (one place)."""
    try:
        return await operation
    except ResourceNotFound:
        raise NotFound(f"{rtype.name} {resource_id!s:.100} not found.") from None
    except UniquenessViolation as exc:
        raise Conflict(f"Another {rtype.name.lower()} already has this {exc.attribute}.") from None
    except VersionMismatch:
        raise PreconditionFailed(
            f"The {rtype.name.lower()} was modified: its version no longer matches If-Match."
        ) from None
    except UnknownMembers as exc:
        raise InvalidValue(f"These members do not exist: {', '.join(exc.ids)[:500]}.") from None
    except StoreUnavailable:
        raise ServiceUnavailable() from None
    except EntityTooLarge:
        raise InvalidValue(
            f"The {rtype.name.lower()} is too large to store (at most 1 MiB per resource); remove or shorten attributes."
        ) from None
    except TooManyGroups:
        raise InvalidValue(f"A resource can be a direct member of at most {MAX_GROUPS_PER_RESOURCE} groups.") from None
    except StoreError:
        raise InvalidValue(f"The {rtype.name.lower()} cannot be stored.") from None
