"""The SCIM protocol (RFC 7644 §3) for one tenant's request, over a :class:`DirectoryStore`.

No I/O happens here except through the store: the Functions adapter
(:mod:`scim.functions.http_adapter`) authenticates, builds a :class:`ScimRequest` and turns the
:class:`ScimResponse` into HTTP. Every behaviour Entra relies on (docs/ENTRA.md §2-§5) is
implemented here or in the pure modules it calls: :mod:`scim.core.resource`,
:mod:`scim.core.patching`, :mod:`scim.core.filtering`, :mod:`scim.core.projection`.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from scim.core import discovery
from scim.core.errors import (
    Conflict,
    InvalidCursor,
    InvalidSyntax,
    InvalidValue,
    MethodNotAllowed,
    NotFound,
    NotSupported,
    PreconditionFailed,
    ScimError,
    ServiceUnavailable,
    TooMany,
)
from scim.core.filtering import IndexPlan, WorkMeter, item_matches, matches_async, parse_filter, plan_lookup, sort_key
from scim.core.jsonbody import parse_json
from scim.core.patching import MAX_OPERATIONS, MemberChange, apply_patch_async, parse_patch_request
from scim.core.projection import Projection, parse_projection
from scim.core.resource import index_terms, parse_resource, render
from scim.core.schema import GROUP, USER, ResourceType
from scim.store import MAX_GROUPS_PER_RESOURCE
from scim.store.base import (
    DirectoryStore,
    EntityTooLarge,
    Member,
    ResourceNotFound,
    StoredResource,
    StoreError,
    StoreUnavailable,
    TooManyGroups,
    UniquenessViolation,
    UnknownMembers,
    VersionMismatch,
)

__all__ = ["LIST_RESPONSE_URN", "Limits", "ScimRequest", "ScimResponse", "ScimService"]

LIST_RESPONSE_URN = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
SEARCH_REQUEST_URN = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"

T = TypeVar("T")


logger = logging.getLogger("scim.core.service")


@dataclass(frozen=True)
class Limits:
    """Documented limits (README "Limits"; advertised in ServiceProviderConfig where RFC 7643 §5 has a field)."""

    default_count: int = 100
    max_results: int = 1000
    max_scan: int = 10_000
    max_body_bytes: int = 1024 * 1024
    write_retries: int = 40


@dataclass(frozen=True)
class ScimRequest:
    """One SCIM request for a tenant, already authenticated.

    ``path`` is what follows the Tenant URL (``/Users/123``); ``query`` keys are kept as
    sent (looked up case-insensitively); ``headers`` keys are lower-case; ``base_url`` is
    the Tenant URL, used for ``location`` and ``$ref``.
    """

    method: str
    tenant: str
    path: str
    base_url: str
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    _parsed: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def json(self) -> Any:
        """The body as JSON (:func:`scim.core.jsonbody.parse_json`), parsed at most once per request.

        A body that does not parse raises its 400 each time and is not cached.
        """
        if "body" not in self._parsed:
            self._parsed["body"] = parse_json(self.body)
        return self._parsed["body"]

    def parsed_json(self) -> Any:
        """The body if :meth:`json` has parsed it, else None; never parses (the provisioning log
        reads a failed create's ``userName`` from here, not from a second parse)."""
        return self._parsed.get("body")

    def param(self, name: str) -> str | None:
        """A query parameter, matched case-insensitively (Entra and Postman vary the case)."""
        lowered = name.lower()
        for key, value in self.query.items():
            if key.lower() == lowered:
                return value
        return None


@dataclass
class ScimResponse:
    """What the adapter sends back: a status, an optional JSON body and headers."""

    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _error_response(error: ScimError) -> ScimResponse:
    return ScimResponse(error.status, error.to_json(), dict(error.headers))


class ScimService:
    """Answers SCIM requests for any tenant from one store (RFC 7644 §3)."""

    def __init__(self, store: DirectoryStore, limits: Limits | None = None) -> None:
        self.store = store
        self.limits = limits or Limits()

    async def handle(self, request: ScimRequest) -> ScimResponse:
        """Route and answer one request; SCIM errors become SCIM error responses."""
        try:
            return await self._route(request)
        except ScimError as error:
            return _error_response(error)

    # ---- routing -------------------------------------------------------------------------

    async def _route(self, request: ScimRequest) -> ScimResponse:
        parts = [p for p in request.path.split("/") if p]
        method = request.method.upper()
        if not parts:
            raise NotFound(
                "Append /Users, /Groups, /Schemas, /ResourceTypes or /ServiceProviderConfig to the Tenant URL."
            )
        head = parts[0].lower()
        if head in ("users", "groups"):
            rtype = USER if head == "users" else GROUP
            return await self._resource_route(request, method, rtype, parts[1:])
        if head in ("serviceproviderconfig", "serviceproviderconfigs", "serviceconfiguration") and len(parts) == 1:
            self._only(method, "GET")
            return ScimResponse(200, self._service_provider_config(request))
        if head == "schemas":
            self._only(method, "GET")
            return self._discovery(parts, discovery.schemas_list, discovery.schema_by_id, request, "Schema")
        if head == "resourcetypes":
            self._only(method, "GET")
            return self._discovery(
                parts, discovery.resource_types_list, discovery.resource_type_by_id, request, "ResourceType"
            )
        if head == ".search" and len(parts) == 1:
            self._only(method, "POST")
            return await self._search_all(request)
        if head in ("bulk", "me"):
            raise NotSupported(f"/{parts[0]} is not supported by this service provider (see ServiceProviderConfig).")
        raise NotFound(f"There is no SCIM endpoint /{'/'.join(parts)[:100]}.")

    @staticmethod
    def _only(method: str, *allowed: str) -> None:
        if method not in allowed:
            raise MethodNotAllowed(f"{method} is not allowed here; use {' or '.join(allowed)}.")

    def _service_provider_config(self, request: ScimRequest) -> dict[str, Any]:
        return discovery.service_provider_config(
            request.base_url,
            max_operations=MAX_OPERATIONS,
            max_payload_size=self.limits.max_body_bytes,
            max_results=self.limits.max_results,
            default_page_size=self.limits.default_count,
        )

    @staticmethod
    def _discovery(
        parts: list[str],
        listing: Callable[[str], dict[str, Any]],
        by_id: Callable[[str, str], dict[str, Any] | None],
        request: ScimRequest,
        kind: str,
    ) -> ScimResponse:
        if len(parts) == 1:
            return ScimResponse(200, listing(request.base_url))
        found = by_id(request.base_url, "/".join(parts[1:]))
        if found is None or len(parts) > 2:
            raise NotFound(f"No {kind} with id {'/'.join(parts[1:])[:200]!r}.")
        return ScimResponse(200, found)

    async def _resource_route(
        self, request: ScimRequest, method: str, rtype: ResourceType, rest: list[str]
    ) -> ScimResponse:
        if not rest:
            if method == "GET":
                return await self._list(request, rtype, self._query_params(request))
            if method == "POST":
                return await self._create(request, rtype)
            raise MethodNotAllowed(f"{method} {rtype.endpoint} is not allowed; use GET or POST.")
        if len(rest) > 1:
            raise NotFound(f"There is no SCIM endpoint {rtype.endpoint}/{'/'.join(rest)[:100]}.")
        resource_id = rest[0]
        if resource_id == ".search":
            self._only(method, "POST")
            return await self._list(request, rtype, self._search_params(request))
        if method == "GET":
            return await self._get(request, rtype, resource_id)
        if method == "PUT":
            return await self._replace(request, rtype, resource_id)
        if method == "PATCH":
            return await self._patch(request, rtype, resource_id)
        if method == "DELETE":
            return await self._delete(request, rtype, resource_id)
        raise MethodNotAllowed(f"{method} is not allowed on a {rtype.name}; use GET, PUT, PATCH or DELETE.")

    # ---- helpers -------------------------------------------------------------------------

    def _body(self, request: ScimRequest) -> Any:
        return request.json()

    async def _call(self, operation: Awaitable[T], rtype: ResourceType, resource_id: str | None = None) -> T:
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
            raise InvalidValue(
                f"A resource can be a direct member of at most {MAX_GROUPS_PER_RESOURCE} groups."
            ) from None
        except StoreError:
            raise InvalidValue(f"The {rtype.name.lower()} cannot be stored.") from None

    def _render(self, request: ScimRequest, rtype: ResourceType, stored: StoredResource) -> dict[str, Any]:
        return render(rtype, stored, request.base_url)

    @staticmethod
    def _etag_headers(stored: StoredResource) -> dict[str, str]:
        return {"ETag": stored.version}

    @staticmethod
    def _if_match(request: ScimRequest) -> str | None:
        return request.headers.get("if-match")

    @staticmethod
    def _check_if_match(expected: str | None, stored: StoredResource) -> None:
        """RFC 7644 §3.14 / RFC 7232 §3.1: 412 when no listed ETag matches the current version."""
        if expected is None:
            return
        candidates = [c.strip() for c in expected.split(",")]
        if "*" in candidates:
            return
        current = _opaque(stored.version)
        if not any(_opaque(c) == current for c in candidates):
            raise PreconditionFailed("The resource was modified: If-Match does not match its current version.")

    def _projection(
        self, request: ScimRequest, rtype: ResourceType, params: Mapping[str, Any] | None = None
    ) -> Projection:
        source = (
            params
            if params is not None
            else {"attributes": request.param("attributes"), "excludedAttributes": request.param("excludedAttributes")}
        )
        return parse_projection(rtype, _join(source.get("attributes")), _join(source.get("excludedAttributes")))

    # ---- read ----------------------------------------------------------------------------

    async def _get(self, request: ScimRequest, rtype: ResourceType, resource_id: str) -> ScimResponse:
        """Retrieve a resource (RFC 7644 §3.4.1); a group's members only when they are returned."""
        projection = self._projection(request, rtype)
        want_members = rtype is GROUP and projection.wants("members")
        stored = await self._call(
            self.store.get(request.tenant, rtype.name, resource_id, members=want_members), rtype, resource_id
        )
        headers = self._etag_headers(stored)
        if_none_match = request.headers.get("if-none-match")
        if if_none_match and _opaque(if_none_match) == _opaque(stored.version):
            return ScimResponse(304, None, headers)
        return ScimResponse(200, projection.apply(self._render(request, rtype, stored)), headers)

    @staticmethod
    def _query_params(request: ScimRequest) -> dict[str, Any]:
        return {name: request.param(name) for name in _LIST_PARAMETERS}

    def _search_params(self, request: ScimRequest) -> dict[str, Any]:
        """A SearchRequest body (RFC 7644 §3.4.3) as query parameters."""
        body = self._body(request)
        if not isinstance(body, dict):
            raise InvalidSyntax("A search request body must be a JSON object.")
        fields = {str(k).lower(): v for k, v in body.items()}
        return {name: fields.get(name.lower()) for name in _LIST_PARAMETERS}

    def _window(self, params: Mapping[str, Any]) -> tuple[int, int]:
        """``startIndex`` (1-based, at least 1) and ``count`` (0 to maxResults), RFC 7644 §3.4.2.4."""
        start = max(1, _int_param(params.get("startIndex"), 1, "startIndex"))
        count = min(
            max(0, _int_param(params.get("count"), self.limits.default_count, "count")), self.limits.max_results
        )
        return start, count

    @staticmethod
    def _list_response(total: int, start: int, resources: list[dict[str, Any]]) -> ScimResponse:
        body = {
            "schemas": [LIST_RESPONSE_URN],
            "totalResults": total,
            "itemsPerPage": len(resources),
            "startIndex": start,
            "Resources": resources,
        }
        return ScimResponse(200, body)

    async def _list(self, request: ScimRequest, rtype: ResourceType, params: Mapping[str, Any]) -> ScimResponse:
        """Query resources (RFC 7644 §3.4.2): filter, sort, paginate; 200 and an empty list on no match.

        With a ``cursor`` parameter (RFC 9865), pages follow resource ids: each request costs
        one page of storage reads (plus a bounded scan for filters the indexes cannot
        answer), whatever the tenant's size. Index pagination (``startIndex``) counts every
        match for ``totalResults``, so it costs O(matches) per page.
        """
        if params.get("cursor") is not None:
            return await self._cursor_page(request, rtype, params)
        start, count = self._window(params)
        total, resources = await self._page(request, rtype, params, start, count, WorkMeter())
        return self._list_response(total, start, resources)

    async def _cursor_page(self, request: ScimRequest, rtype: ResourceType, params: Mapping[str, Any]) -> ScimResponse:
        """One page of cursor pagination (RFC 9865 §2): ``nextCursor`` until the last page."""
        if params.get("startIndex") not in (None, ""):
            raise InvalidCursor("Use either cursor or startIndex, not both (RFC 9865 §2.1).")
        if params.get("sortBy"):
            raise InvalidCursor("sortBy cannot be combined with cursor pagination; page without sorting.")
        _, count = self._window(params)
        after = _decode_cursor(str(params.get("cursor") or ""))
        projection = self._projection(request, rtype, params)
        filter_text = params.get("filter")
        ast = parse_filter(filter_text) if isinstance(filter_text, str) and filter_text.strip() else None
        plan = plan_lookup(ast, rtype) if ast is not None else None
        meter = WorkMeter()
        if plan is not None and ast is not None:
            candidates = sorted(await self._from_index(request.tenant, rtype, plan), key=lambda c: c.id)
            matched = []
            for candidate in candidates:
                if (after is None or candidate.id > after) and await matches_async(
                    ast, self._render(request, rtype, candidate), rtype, meter
                ):
                    matched.append(candidate)
                await meter.checkpoint()
            window = matched[:count]
            resume = window[-1].id if len(matched) > count else None
        else:
            window, resume = await self._scan_matches(request, rtype, ast, after, count, meter)
        if rtype is GROUP and projection.wants("members"):
            window = await self._with_members(request.tenant, rtype, window)
        body: dict[str, Any] = {
            "schemas": [LIST_RESPONSE_URN],
            "itemsPerPage": len(window),
            "Resources": await self._projected(request, rtype, projection, window, meter),
        }
        if resume is not None:
            body["nextCursor"] = _encode_cursor(resume)
        return ScimResponse(200, body)

    async def _scan_matches(
        self, request: ScimRequest, rtype: ResourceType, ast: Any, after: str | None, count: int, meter: WorkMeter
    ) -> tuple[list[StoredResource], str | None]:
        """Up to ``count`` matches after ``after``, examining at most ``max_scan`` resources.

        Returns the matches and the id to resume after (None when the scan reached the end).
        A page may hold fewer than ``count`` resources, even none, when the bound is reached
        first (RFC 9865 allows short pages); the cursor then resumes the scan.
        """
        found: list[StoredResource] = []
        scanned = 0
        cursor = after
        while True:
            limit = max(1, min(1000, count - len(found))) if ast is None else 1000
            page = await self._call(self.store.scan(request.tenant, rtype.name, cursor=cursor, limit=limit), rtype)
            for position, stored in enumerate(page.resources):
                scanned += 1
                if ast is None or await matches_async(ast, self._render(request, rtype, stored), rtype, meter):
                    found.append(stored)
                at_end = page.cursor is None and position == len(page.resources) - 1
                if len(found) == count or scanned >= self.limits.max_scan:
                    return found, None if at_end else stored.id
                await meter.checkpoint()
            await meter.checkpoint()
            if page.cursor is None:
                return found, None
            cursor = page.cursor

    async def _search_all(self, request: ScimRequest) -> ScimResponse:
        """POST /.search (RFC 7644 §3.4.3): users then groups, paginated as one list."""
        params = self._search_params(request)
        start, count = self._window(params)
        meter = WorkMeter()
        user_total, users = await self._page(request, USER, params, start, count, meter)
        group_start = max(1, start - user_total)
        group_total, groups = await self._page(request, GROUP, params, group_start, count - len(users), meter)
        return self._list_response(user_total + group_total, start, users + groups)

    async def _page(
        self,
        request: ScimRequest,
        rtype: ResourceType,
        params: Mapping[str, Any],
        start: int,
        count: int,
        meter: WorkMeter,
    ) -> tuple[int, list[dict[str, Any]]]:
        """The total number of matches and the projected resources of one page.

        Rendering, filtering, sorting and projecting run in slices of ``meter``
        (:data:`~scim.core.filtering.SLICE_SECONDS`), counting the work against its budget.
        """
        projection = self._projection(request, rtype, params)
        filter_text = params.get("filter")
        if filter_text is not None and not isinstance(filter_text, str):
            raise InvalidSyntax("filter must be a string.")
        sort_by = params.get("sortBy")
        descending = str(params.get("sortOrder") or "ascending").lower() == "descending"
        ast = parse_filter(filter_text) if filter_text and filter_text.strip() else None
        want_members = rtype is GROUP and projection.wants("members")
        filter_needs_members = rtype is GROUP and ast is not None and "members" in str(ast).lower()

        path = _sort_path(str(sort_by)) if sort_by else None
        if ast is None and not sort_by:
            total, window = await self._scan_window(request.tenant, rtype, start, count, meter)
        else:
            candidates = await self._candidates(request.tenant, rtype, ast, meter)
            if filter_needs_members:
                candidates = await self._with_members(request.tenant, rtype, candidates)
            keyed: list[tuple[Any, StoredResource]] = []
            for candidate in candidates:
                rendered = self._render(request, rtype, candidate)
                if ast is None or await matches_async(ast, rendered, rtype, meter):
                    keyed.append((sort_key(rendered, rtype, path) if path is not None else candidate.id, candidate))
                await meter.checkpoint()
            keyed.sort(key=lambda pair: pair[0], reverse=descending and path is not None)
            total = len(keyed)
            window = [c for _, c in keyed[start - 1 : start - 1 + count]]
        if want_members and not filter_needs_members:
            window = await self._with_members(request.tenant, rtype, window)
        return total, await self._projected(request, rtype, projection, window, meter)

    async def _projected(
        self,
        request: ScimRequest,
        rtype: ResourceType,
        projection: Projection,
        window: list[StoredResource],
        meter: WorkMeter,
    ) -> list[dict[str, Any]]:
        """The page's resources rendered and projected, in slices of ``meter``."""
        projected: list[dict[str, Any]] = []
        for stored in window:
            projected.append(projection.apply(self._render(request, rtype, stored)))
            await meter.checkpoint()
        return projected

    async def _scan_window(
        self, tenant: str, rtype: ResourceType, start: int, count: int, meter: WorkMeter
    ) -> tuple[int, list[StoredResource]]:
        """Page through every resource, keeping the window and counting the total (O(tenant size))."""
        total = 0
        window: list[StoredResource] = []
        cursor: str | None = None
        while True:
            page = await self._call(self.store.scan(tenant, rtype.name, cursor=cursor, limit=1000), rtype)
            for stored in page.resources:
                total += 1
                if start <= total < start + count:
                    window.append(stored)
            await meter.checkpoint()
            cursor = page.cursor
            if cursor is None:
                return total, window

    async def _candidates(self, tenant: str, rtype: ResourceType, ast: Any, meter: WorkMeter) -> list[StoredResource]:
        """Resources a filter may match: from the index when it can answer, else a bounded scan."""
        plan = plan_lookup(ast, rtype) if ast is not None else None
        if plan is not None:
            return await self._from_index(tenant, rtype, plan)
        found: list[StoredResource] = []
        cursor: str | None = None
        while True:
            page = await self._call(self.store.scan(tenant, rtype.name, cursor=cursor, limit=1000), rtype)
            found.extend(page.resources)
            await meter.checkpoint()
            if len(found) > self.limits.max_scan:
                raise TooMany(
                    f"This query would examine more than {self.limits.max_scan} {rtype.name.lower()}s; "
                    "use an eq filter on userName, externalId, emails, displayName or id."
                )
            cursor = page.cursor
            if cursor is None:
                return found

    async def _from_index(self, tenant: str, rtype: ResourceType, plan: IndexPlan) -> list[StoredResource]:
        """The candidates of an index plan: one store operation (one storage time budget), at
        most ``max_scan`` of them (400 ``tooMany`` beyond)."""
        found = await self._call(
            self.store.find(
                tenant, rtype.name, ids=plan.ids, terms=plan.terms, prefixes=plan.prefixes, limit=self.limits.max_scan
            ),
            rtype,
        )
        if len(found) > self.limits.max_scan:
            raise TooMany(f"This filter matches more than {self.limits.max_scan} {rtype.name.lower()}s; narrow it.")
        return found

    async def _with_members(
        self, tenant: str, rtype: ResourceType, resources: list[StoredResource]
    ) -> list[StoredResource]:
        async def load(stored: StoredResource) -> StoredResource | None:
            try:
                return await self.store.get(tenant, rtype.name, stored.id, members=True)
            except ResourceNotFound:
                return None
            except StoreUnavailable:
                raise ServiceUnavailable() from None

        loaded = await asyncio.gather(*(load(s) for s in resources))
        return [s for s in loaded if s is not None]

    # ---- write ---------------------------------------------------------------------------

    async def _create(self, request: ScimRequest, rtype: ResourceType) -> ScimResponse:
        """Create a resource (RFC 7644 §3.3): 201 with ``Location``; 409 ``uniqueness`` on a taken key."""
        parsed = parse_resource(rtype, self._body(request))
        stored, members = await self._create_with_member_types(request.tenant, rtype, parsed.doc, parsed.members or [])
        if rtype is GROUP:
            stored = dataclasses.replace(stored, members=tuple(members))
        body = self._projection(request, rtype).apply(self._render(request, rtype, stored))
        headers = {
            "Location": body.get("meta", {}).get("location") or f"{request.base_url}{rtype.endpoint}/{stored.id}"
        }
        headers.update(self._etag_headers(stored))
        return ScimResponse(201, body, headers)

    async def _create_with_member_types(
        self, tenant: str, rtype: ResourceType, doc: dict[str, Any], members: list[Member]
    ) -> tuple[StoredResource, list[Member]]:
        """Create, keeping only the members that exist (see :meth:`_add_members`)."""
        candidates = _dedupe(members)
        for _ in range(3):
            try:
                stored = await self.store.create(tenant, rtype.name, doc, index_terms(rtype, doc), candidates)
                return stored, candidates
            except UnknownMembers as exc:
                candidates = _without_unknown(candidates, exc.ids)
            except StoreError as exc:
                await self._call(_raise(exc), rtype)
        raise ServiceUnavailable()

    async def _replace(self, request: ScimRequest, rtype: ResourceType, resource_id: str) -> ScimResponse:
        """Replace a resource (RFC 7644 §3.5.1). A group body without ``members`` keeps them."""
        parsed = parse_resource(rtype, self._body(request))
        if_match = self._if_match(request)
        if if_match is not None:
            current = await self._call(self.store.get(request.tenant, rtype.name, resource_id), rtype, resource_id)
            self._check_if_match(if_match, current)
            version: str | None = current.version
        else:
            version = None
        stored = await self._call(
            self.store.replace(
                request.tenant, rtype.name, resource_id, parsed.doc, index_terms(rtype, parsed.doc), if_version=version
            ),
            rtype,
            resource_id,
        )
        if rtype is GROUP and parsed.members is not None:
            await self._apply_member_changes(request.tenant, resource_id, [MemberChange("replace", parsed.members)])
        projection = self._projection(request, rtype)
        if (rtype is GROUP and projection.wants("members")) or parsed.members is not None:
            stored = await self._call(
                self.store.get(
                    request.tenant, rtype.name, resource_id, members=rtype is GROUP and projection.wants("members")
                ),
                rtype,
                resource_id,
            )
        body = projection.apply(self._render(request, rtype, stored))
        return ScimResponse(200, body, self._etag_headers(stored))

    async def _patch(self, request: ScimRequest, rtype: ResourceType, resource_id: str) -> ScimResponse:
        """Modify a resource (RFC 7644 §3.5.2): users answer 200 with the resource, groups 204 (docs/ENTRA.md §4)."""
        operations = parse_patch_request(self._body(request))
        if_match = self._if_match(request)
        # One budget for the whole request, retries included.
        meter = WorkMeter(hint="add or remove fewer values, or use fewer value-filtered paths, per PATCH request")
        member_only = await _member_only_changes(rtype, operations, meter) if if_match is None else None
        attempts = 0
        stored: StoredResource | None = None
        while True:
            attempts += 1
            current = await self._read_for_patch(request, rtype, resource_id, member_only, if_match)
            doc = current.doc if current else {}
            result = await apply_patch_async(rtype, doc, operations, meter) if current else None
            stored = current
            if result is not None and current is not None and result.doc != current.doc:
                try:
                    stored = await self.store.replace(
                        request.tenant,
                        rtype.name,
                        resource_id,
                        result.doc,
                        index_terms(rtype, result.doc),
                        if_version=current.version,
                    )
                except VersionMismatch:
                    if if_match is not None:
                        raise PreconditionFailed(
                            "The resource was modified: If-Match does not match its current version."
                        ) from None
                    if attempts >= self.limits.write_retries:
                        # 412 is only ever the answer to If-Match (RFC 7644 §3.14); without it, ask for a retry.
                        raise ServiceUnavailable(
                            "The resource is being modified by other requests; retry later."
                        ) from None
                    # Optimistic concurrency (RFC 7644 §3.14): read again and re-apply, after a short
                    # jittered pause so that competing writers spread out instead of colliding again.
                    await asyncio.sleep(random.uniform(0, 0.005 * min(attempts, 10)))
                    continue
                except (ResourceNotFound, UniquenessViolation, StoreError) as exc:
                    await self._call(_raise(exc), rtype, resource_id)
            break
        changes = result.member_changes if result is not None else member_only
        if changes:
            await self._apply_member_changes(request.tenant, resource_id, changes, meter)
        if rtype is GROUP:
            return ScimResponse(204)
        if changes or stored is None:  # a user PATCH always read the user: None never happens here
            stored = await self._call(self.store.get(request.tenant, rtype.name, resource_id), rtype, resource_id)
        body = self._projection(request, rtype).apply(self._render(request, rtype, stored))
        return ScimResponse(200, body, self._etag_headers(stored))

    async def _read_for_patch(
        self,
        request: ScimRequest,
        rtype: ResourceType,
        resource_id: str,
        member_only: list[MemberChange] | None,
        if_match: str | None,
    ) -> StoredResource | None:
        """The current resource, or None for a group PATCH that only changes members.

        A member-only PATCH (Entra's common case) needs no read: the store's membership
        transaction itself checks that the group exists.
        """
        if rtype is GROUP and if_match is None and member_only is not None:
            return None
        current = await self._call(self.store.get(request.tenant, rtype.name, resource_id), rtype, resource_id)
        self._check_if_match(if_match, current)
        return current

    async def _apply_member_changes(
        self, tenant: str, group_id: str, changes: list[MemberChange], meter: WorkMeter | None = None
    ) -> None:
        """Apply member changes in order, each as commuting store operations (no list rewrite)."""
        for change in changes:
            if change.kind == "add":
                await self._add_members(tenant, group_id, _dedupe(change.members))
            elif change.kind == "remove":
                ids = list(dict.fromkeys(m.value for m in change.members))
                await self._call(self.store.remove_members(tenant, group_id, ids), GROUP, group_id)
            else:
                group = await self._call(self.store.get(tenant, "Group", group_id, members=True), GROUP, group_id)
                existing = list(group.members or ())
                if change.kind == "replace":
                    wanted = {m.value for m in change.members}
                    doomed = [m.value for m in existing if m.value not in wanted]
                    current_ids = {m.value for m in existing}
                    await self._call(self.store.remove_members(tenant, group_id, doomed), GROUP, group_id)
                    await self._add_members(
                        tenant, group_id, [m for m in _dedupe(change.members) if m.value not in current_ids]
                    )
                else:
                    from scim.core.schema import GROUP_SCHEMA

                    members_attr = GROUP_SCHEMA.attribute("members")
                    meter = meter or WorkMeter()
                    doomed = []
                    for m in existing:
                        if change.filter is not None and item_matches(
                            change.filter, {"value": m.value, "type": m.type}, members_attr, meter
                        ):
                            doomed.append(m.value)
                        await meter.checkpoint()
                    await self._call(self.store.remove_members(tenant, group_id, doomed), GROUP, group_id)

    async def _add_members(self, tenant: str, group_id: str, members: list[Member]) -> None:
        """Add members; ids that name no user or group of the tenant are ignored (logged, not stored).

        A member sent without ``type`` may be a group (RFC 7643 §4.2): unknown user ids are
        retried as groups. Ids that are neither are dropped, as Microsoft's reference service
        and its conformance collection expect (204), rather than failing the whole PATCH; no
        membership of a missing resource is ever stored.
        """
        candidates = members
        for _ in range(3):
            if not candidates:
                return
            try:
                await self.store.add_members(tenant, group_id, candidates)
                return
            except UnknownMembers as exc:
                candidates = _without_unknown(candidates, exc.ids)
            except StoreError as exc:
                await self._call(_raise(exc), GROUP, group_id)
        raise ServiceUnavailable()

    async def _delete(self, request: ScimRequest, rtype: ResourceType, resource_id: str) -> ScimResponse:
        """Delete a resource (RFC 7644 §3.6): 204, then 404 for the same id."""
        if_match = self._if_match(request)
        version: str | None = None
        if if_match is not None:
            current = await self._call(self.store.get(request.tenant, rtype.name, resource_id), rtype, resource_id)
            self._check_if_match(if_match, current)
            version = current.version
        await self._call(
            self.store.delete(request.tenant, rtype.name, resource_id, if_version=version), rtype, resource_id
        )
        return ScimResponse(204)


# ---- small pure helpers ----------------------------------------------------------------

_LIST_PARAMETERS = (
    "filter",
    "startIndex",
    "count",
    "cursor",
    "attributes",
    "excludedAttributes",
    "sortBy",
    "sortOrder",
)
_CURSOR_PREFIX = "c1."


def _encode_cursor(last_id: str) -> str:
    """An opaque cursor (RFC 9865 §2.2): the last id of the page, base64url-encoded and versioned."""
    return _CURSOR_PREFIX + base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str | None:
    """The id a cursor continues after; an empty cursor asks for the first page (RFC 9865 §2.1)."""
    if not cursor:
        return None
    if not cursor.startswith(_CURSOR_PREFIX) or len(cursor) > 512:
        raise InvalidCursor("The cursor was not issued by this service.")
    encoded = cursor[len(_CURSOR_PREFIX) :]
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise InvalidCursor("The cursor was not issued by this service.") from None


async def _raise(exc: BaseException) -> Any:
    raise exc


def _opaque(etag: str) -> str:
    """Compare ETags weakly (RFC 7232 §2.3.2): ignore ``W/`` and surrounding quotes."""
    value = etag.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')


def _join(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _int_param(value: Any, default: int, name: str) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise InvalidValue(f"{name} must be an integer.")
    text = str(value).strip()
    if len(text) > 18:
        raise InvalidValue(f"{name} must be an integer of at most 18 digits.")
    try:
        return int(text)
    except ValueError:
        raise InvalidValue(f"{name} must be an integer.") from None


def _sort_path(text: str) -> Any:
    from scim2_models import Path
    from scim2_models.exceptions import SCIMException

    try:
        ast = Path(text.strip()).ast
    except (SCIMException, ValueError, RecursionError):
        raise InvalidValue("sortBy is not an attribute path.") from None
    from scim2_models.path import AttrPath

    if not isinstance(ast, AttrPath):
        raise InvalidValue("sortBy must be a plain attribute path (no filter).")
    return ast


def _dedupe(members: list[Member]) -> list[Member]:
    seen: dict[str, Member] = {}
    for member in members:
        seen.setdefault(member.value, member)
    return list(seen.values())


def _without_unknown(members: list[Member], unknown_ids: list[str]) -> list[Member]:
    """Unknown user ids become group ids (a member sent without ``type``); unknown group ids are dropped."""
    unknown = set(unknown_ids)
    result: list[Member] = []
    for member in members:
        if member.value not in unknown:
            result.append(member)
        elif member.type == "User":
            result.append(Member(member.value, "Group"))
        else:
            logger.info("ignored a member id that names no user or group of the tenant")
    return result


async def _member_only_changes(
    rtype: ResourceType, operations: list[Any], meter: WorkMeter
) -> list[MemberChange] | None:
    """For a group PATCH whose every op targets ``members``: the changes, computed without a read."""
    if rtype is not GROUP:
        return None
    for operation in operations:
        path = (operation.path or "").strip().lower()
        if not (path == "members" or path.startswith("members[")):
            return None
    return (await apply_patch_async(GROUP, {"displayName": "-"}, operations, meter)).member_changes
