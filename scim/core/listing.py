"""Querying resources (RFC 7644 §3.4.2): filter, sort, paginate, project; and ``POST /.search``
(RFC 7644 §3.4.3), over a :class:`~scim.store.base.DirectoryStore`.

Two ways to page:

- index pagination (``startIndex``/``count``, RFC 7644 §3.4.2.4) counts every match for
  ``totalResults``, so it costs O(matches) per page;
- cursor pagination (``cursor``, RFC 9865) follows resource ids (:mod:`scim.core.cursor`):
  each request costs one page of storage reads, plus a bounded scan for filters the indexes
  cannot answer, whatever the tenant's size.

A filter the indexes can answer (:func:`scim.core.lookup.plan_lookup`) is one store
``find``; any other examines at most ``max_scan`` resources (400 ``tooMany`` beyond). All
rendering, matching and projecting runs in slices of a :class:`~scim.core.work.WorkMeter`.
The result is a ListResponse body; :class:`scim.core.service.ScimService` answers it with 200.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scim.core.cursor import decode_cursor, encode_cursor
from scim.core.errors import InvalidCursor, InvalidSyntax, InvalidValue, ServiceUnavailable, TooMany
from scim.core.filtering import matches_async, parse_filter, sort_key
from scim.core.lookup import IndexPlan, plan_lookup
from scim.core.names import NameCache
from scim.core.projection import Projection, parse_projection
from scim.core.resource import render
from scim.core.schema import GROUP, USER, ResourceType
from scim.core.storecall import store_call
from scim.core.work import WorkMeter
from scim.store.base import DirectoryStore, ResourceNotFound, StoredResource, StoreUnavailable

__all__ = ["LIST_PARAMETERS", "LIST_RESPONSE_URN", "Limits", "Listing", "projection_for", "search_params"]

LIST_RESPONSE_URN = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
SEARCH_REQUEST_URN = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"

LIST_PARAMETERS = (
    "filter",
    "startIndex",
    "count",
    "cursor",
    "attributes",
    "excludedAttributes",
    "sortBy",
    "sortOrder",
)
"""The query parameters of a list (RFC 7644 §3.4.2, RFC 9865 §2), also the SearchRequest attributes."""


@dataclass(frozen=True)
class Limits:
    """Documented limits (README "Limits"; advertised in ServiceProviderConfig where RFC 7643 §5 has a field)."""

    default_count: int = 100
    max_results: int = 1000
    max_scan: int = 10_000
    max_body_bytes: int = 1024 * 1024
    write_retries: int = 40


def search_params(body: Any) -> dict[str, Any]:
    """A SearchRequest body (RFC 7644 §3.4.3) as query parameters."""
    if not isinstance(body, dict):
        raise InvalidSyntax("A search request body must be a JSON object.")
    fields = {str(k).lower(): v for k, v in body.items()}
    return {name: fields.get(name.lower()) for name in LIST_PARAMETERS}


def projection_for(rtype: ResourceType, params: Mapping[str, Any]) -> Projection:
    """``attributes`` / ``excludedAttributes`` (RFC 7644 §3.4.2.5), as a query string or a SearchRequest list."""
    return parse_projection(rtype, _join(params.get("attributes")), _join(params.get("excludedAttributes")))


class Listing:
    """Lists and searches one store's resources (RFC 7644 §3.4.2, §3.4.3; RFC 9865)."""

    def __init__(self, store: DirectoryStore, limits: Limits, names: NameCache | None = None) -> None:
        self.store = store
        self.limits = limits
        self.names = names  # remembers the names of the resources a query returns (scim.core.names)

    async def query(self, tenant: str, base_url: str, rtype: ResourceType, params: Mapping[str, Any]) -> dict[str, Any]:
        """Query resources (RFC 7644 §3.4.2): filter, sort, paginate; an empty list on no match.

        With a ``cursor`` parameter (RFC 9865), pages follow resource ids: each request costs
        one page of storage reads (plus a bounded scan for filters the indexes cannot
        answer), whatever the tenant's size. Index pagination (``startIndex``) counts every
        match for ``totalResults``, so it costs O(matches) per page.
        """
        if params.get("cursor") is not None:
            return await self._cursor_page(tenant, base_url, rtype, params)
        start, count = self._window(params)
        total, resources = await self._page(tenant, base_url, rtype, params, start, count, WorkMeter())
        return _list_response(total, start, resources)

    async def search_all(self, tenant: str, base_url: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """POST /.search (RFC 7644 §3.4.3): users then groups, paginated as one list."""
        start, count = self._window(params)
        meter = WorkMeter()
        user_total, users = await self._page(tenant, base_url, USER, params, start, count, meter)
        group_start = max(1, start - user_total)
        group_total, groups = await self._page(tenant, base_url, GROUP, params, group_start, count - len(users), meter)
        return _list_response(user_total + group_total, start, users + groups)

    def _window(self, params: Mapping[str, Any]) -> tuple[int, int]:
        """``startIndex`` (1-based, at least 1) and ``count`` (0 to maxResults), RFC 7644 §3.4.2.4."""
        start = max(1, _int_param(params.get("startIndex"), 1, "startIndex"))
        count = min(
            max(0, _int_param(params.get("count"), self.limits.default_count, "count")), self.limits.max_results
        )
        return start, count

    async def _cursor_page(
        self, tenant: str, base_url: str, rtype: ResourceType, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        """One page of cursor pagination (RFC 9865 §2): ``nextCursor`` until the last page."""
        if params.get("startIndex") not in (None, ""):
            raise InvalidCursor("Use either cursor or startIndex, not both (RFC 9865 §2.1).")
        if params.get("sortBy"):
            raise InvalidCursor("sortBy cannot be combined with cursor pagination; page without sorting.")
        _, count = self._window(params)
        after = decode_cursor(str(params.get("cursor") or ""))
        projection = projection_for(rtype, params)
        filter_text = params.get("filter")
        ast = parse_filter(filter_text) if isinstance(filter_text, str) and filter_text.strip() else None
        plan = plan_lookup(ast, rtype) if ast is not None else None
        meter = WorkMeter()
        if plan is not None and ast is not None:
            candidates = sorted(await self._from_index(tenant, rtype, plan), key=lambda c: c.id)
            matched = []
            for candidate in candidates:
                if (after is None or candidate.id > after) and await matches_async(
                    ast, render(rtype, candidate, base_url), rtype, meter
                ):
                    matched.append(candidate)
                await meter.checkpoint()
            window = matched[:count]
            resume = window[-1].id if len(matched) > count else None
        else:
            window, resume = await self._scan_matches(tenant, base_url, rtype, ast, after, count, meter)
        if rtype is GROUP and projection.wants("members"):
            window = await self._with_members(tenant, rtype, window)
        body: dict[str, Any] = {
            "schemas": [LIST_RESPONSE_URN],
            "itemsPerPage": len(window),
            "Resources": await self._projected(tenant, base_url, rtype, projection, window, meter),
        }
        if resume is not None:
            body["nextCursor"] = encode_cursor(resume)
        return body

    async def _scan_matches(
        self,
        tenant: str,
        base_url: str,
        rtype: ResourceType,
        ast: Any,
        after: str | None,
        count: int,
        meter: WorkMeter,
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
            page = await store_call(self.store.scan(tenant, rtype.name, cursor=cursor, limit=limit), rtype)
            for position, stored in enumerate(page.resources):
                scanned += 1
                if ast is None or await matches_async(ast, render(rtype, stored, base_url), rtype, meter):
                    found.append(stored)
                at_end = page.cursor is None and position == len(page.resources) - 1
                if len(found) == count or scanned >= self.limits.max_scan:
                    return found, None if at_end else stored.id
                await meter.checkpoint()
            await meter.checkpoint()
            if page.cursor is None:
                return found, None
            cursor = page.cursor

    async def _page(
        self,
        tenant: str,
        base_url: str,
        rtype: ResourceType,
        params: Mapping[str, Any],
        start: int,
        count: int,
        meter: WorkMeter,
    ) -> tuple[int, list[dict[str, Any]]]:
        """The total number of matches and the projected resources of one page.

        Rendering, filtering, sorting and projecting run in slices of ``meter``
        (:data:`~scim.core.work.SLICE_SECONDS`), counting the work against its budget.
        """
        projection = projection_for(rtype, params)
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
            total, window = await self._scan_window(tenant, rtype, start, count, meter)
        else:
            candidates = await self._candidates(tenant, rtype, ast, meter)
            if filter_needs_members:
                candidates = await self._with_members(tenant, rtype, candidates)
            keyed: list[tuple[Any, StoredResource]] = []
            for candidate in candidates:
                rendered = render(rtype, candidate, base_url)
                if ast is None or await matches_async(ast, rendered, rtype, meter):
                    keyed.append((sort_key(rendered, rtype, path) if path is not None else candidate.id, candidate))
                await meter.checkpoint()
            keyed.sort(key=lambda pair: pair[0], reverse=descending and path is not None)
            total = len(keyed)
            window = [c for _, c in keyed[start - 1 : start - 1 + count]]
        if want_members and not filter_needs_members:
            window = await self._with_members(tenant, rtype, window)
        return total, await self._projected(tenant, base_url, rtype, projection, window, meter)

    async def _projected(
        self,
        tenant: str,
        base_url: str,
        rtype: ResourceType,
        projection: Projection,
        window: list[StoredResource],
        meter: WorkMeter,
    ) -> list[dict[str, Any]]:
        """The page's resources rendered and projected; their names remembered."""
        if self.names is not None:
            self.names.note_all(tenant, window)
        return await _projected(base_url, rtype, projection, window, meter)

    async def _scan_window(
        self, tenant: str, rtype: ResourceType, start: int, count: int, meter: WorkMeter
    ) -> tuple[int, list[StoredResource]]:
        """Page through every resource, keeping the window and counting the total (O(tenant size))."""
        total = 0
        window: list[StoredResource] = []
        cursor: str | None = None
        while True:
            page = await store_call(self.store.scan(tenant, rtype.name, cursor=cursor, limit=1000), rtype)
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
            page = await store_call(self.store.scan(tenant, rtype.name, cursor=cursor, limit=1000), rtype)
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
        found = await store_call(
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


async def _projected(
    base_url: str, rtype: ResourceType, projection: Projection, window: list[StoredResource], meter: WorkMeter
) -> list[dict[str, Any]]:
    """The page's resources rendered and projected, in slices of ``meter``."""
    projected: list[dict[str, Any]] = []
    for stored in window:
        projected.append(projection.apply(render(rtype, stored, base_url)))
        await meter.checkpoint()
    return projected


def _list_response(total: int, start: int, resources: list[dict[str, Any]]) -> dict[str, Any]:
    """A ListResponse (RFC 7644 §3.4.2) of index pagination."""
    return {
        "schemas": [LIST_RESPONSE_URN],
        "totalResults": total,
        "itemsPerPage": len(resources),
        "startIndex": start,
        "Resources": resources,
    }


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
    """``sortBy`` (RFC 7644 §3.4.2.3) as an attribute path; a filter in it is a 400."""
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
