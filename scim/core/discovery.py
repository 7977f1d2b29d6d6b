"""The bodies of the discovery endpoints (RFC 7644 §4), built without I/O.

- ``/ServiceProviderConfig`` (RFC 7643 §5)
- ``/Schemas`` and ``/Schemas/{id}`` (RFC 7643 §7)
- ``/ResourceTypes`` and ``/ResourceTypes/{id}`` (RFC 7643 §6)

Each function takes the SCIM base URL of a tenant (``http://127.0.0.1:7071/scim/dev``),
from which ``meta.location`` is built. No body contains a JSON null: Entra ID rejects a
``/Schemas`` answer that has one.
"""

from __future__ import annotations

from typing import Any

from scim.core.schema import RESOURCE_TYPES, SCHEMAS, ResourceType

__all__ = [
    "LIST_RESPONSE_URN",
    "RESOURCE_TYPE_URN",
    "SERVICE_PROVIDER_CONFIG_URN",
    "resource_type_by_id",
    "resource_types_list",
    "schema_by_id",
    "schemas_list",
    "service_provider_config",
]

LIST_RESPONSE_URN = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
RESOURCE_TYPE_URN = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
SERVICE_PROVIDER_CONFIG_URN = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"


def service_provider_config(
    base_url: str, *, max_operations: int, max_payload_size: int, max_results: int, default_page_size: int = 100
) -> dict[str, Any]:
    """The service provider configuration (RFC 7643 §5).

    PATCH, filtering, sorting and ETags are supported; bulk and password change are
    not. Because ``/Bulk`` is unsupported, its ``maxOperations`` and ``maxPayloadSize``
    are 0 whatever ``max_operations`` and ``max_payload_size`` say: RFC 7643 §5 gives
    those two limits no meaning outside bulk. ``filter.maxResults`` is ``max_results``.
    """
    del max_operations, max_payload_size  # bulk is not supported: see the docstring
    return {
        "schemas": [SERVICE_PROVIDER_CONFIG_URN],
        "patch": {"supported": True},
        "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": True, "maxResults": max_results},
        "changePassword": {"supported": False},
        "sort": {"supported": True},
        "etag": {"supported": True},
        # RFC 9865 §4: both index and cursor pagination; cursors name a resource id, so they never expire.
        "pagination": {
            "cursor": True,
            "index": True,
            "defaultPaginationMethod": "index",
            "defaultPageSize": default_page_size,
            "maxPageSize": max_results,
            "cursorTimeout": 86400,
        },
        "authenticationSchemes": [
            {
                "type": "oauthbearertoken",
                "name": "OAuth Bearer Token",
                "description": "Authentication with the tenant's Secret Token sent as a bearer token.",
                "specUri": "https://www.rfc-editor.org/info/rfc6750",
                "primary": True,
            }
        ],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": f"{_base(base_url)}/ServiceProviderConfig",
        },
    }


def schemas_list(base_url: str) -> dict[str, Any]:
    """``GET /Schemas``: a ListResponse of every schema served (RFC 7644 §4)."""
    return _list_response([schema.to_json(_base(base_url)) for schema in SCHEMAS.values()])


def schema_by_id(base_url: str, id: str) -> dict[str, Any] | None:
    """``GET /Schemas/{id}``: the schema whose URN is ``id`` (in any case), or None."""
    wanted = id.casefold()
    for urn, schema in SCHEMAS.items():
        if urn.casefold() == wanted:
            return schema.to_json(_base(base_url))
    return None


def resource_types_list(base_url: str) -> dict[str, Any]:
    """``GET /ResourceTypes``: a ListResponse of User and Group (RFC 7644 §4)."""
    return _list_response([_resource_type(rt, _base(base_url)) for rt in RESOURCE_TYPES.values()])


def resource_type_by_id(base_url: str, id: str) -> dict[str, Any] | None:
    """``GET /ResourceTypes/{id}``: the resource type named ``id`` (in any case), or None."""
    wanted = id.casefold()
    for name, resource_type in RESOURCE_TYPES.items():
        if name.casefold() == wanted:
            return _resource_type(resource_type, _base(base_url))
    return None


def _resource_type(resource_type: ResourceType, base_url: str) -> dict[str, Any]:
    """A ResourceType resource (RFC 7643 §6); its id is its name."""
    return {
        "schemas": [RESOURCE_TYPE_URN],
        "id": resource_type.name,
        "name": resource_type.name,
        "endpoint": resource_type.endpoint,
        "description": resource_type.schema.description,
        "schema": resource_type.schema.id,
        "schemaExtensions": [
            {"schema": schema.id, "required": required} for schema, required in resource_type.extensions
        ],
        "meta": {
            "resourceType": "ResourceType",
            "location": f"{base_url}/ResourceTypes/{resource_type.name}",
        },
    }


def _list_response(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """A ListResponse holding all of ``resources`` on one page (RFC 7644 §3.4.2)."""
    return {
        "schemas": [LIST_RESPONSE_URN],
        "totalResults": len(resources),
        "itemsPerPage": len(resources),
        "startIndex": 1,
        "Resources": resources,
    }


def _base(base_url: str) -> str:
    return base_url.rstrip("/")
