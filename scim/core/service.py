"""The SCIM protocol (RFC 7644 §3) for one tenant's request, over a :class:`DirectoryStore`.

No I/O happens here except through the store: the Functions adapter
(:mod:`scim.functions.http_adapter`) authenticates, builds a :class:`ScimRequest` and turns the
:class:`ScimResponse` into HTTP. Every behaviour Entra relies on (docs/ENTRA.md §2-§5) is
implemented here or in the pure modules it calls: :mod:`scim.core.routing` (which handler),
:mod:`scim.core.listing` (queries and pagination), :mod:`scim.core.resource`,
:mod:`scim.core.patching`, :mod:`scim.core.filtering`, :mod:`scim.core.projection`.

Errors are raised, never rendered here: a :class:`~scim.core.errors.ScimError` propagates to
the one choke point that turns it into a response (:func:`scim.functions.http_adapter.handle_http`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from scim.core import discovery, events, routing
from scim.core.errors import NotFound, PreconditionFailed, ServiceUnavailable
from scim.core.filtering import item_matches
from scim.core.jsonbody import parse_json
from scim.core.listing import LIST_PARAMETERS, LIST_RESPONSE_URN, Limits, Listing, projection_for, search_params
from scim.core.names import NameCache, resolve
from scim.core.patching import MAX_OPERATIONS, MemberChange, apply_patch_async, parse_patch_request
from scim.core.projection import Projection
from scim.core.resource import index_terms, parse_resource, render
from scim.core.schema import GROUP, ResourceType
from scim.core.storecall import store_call
from scim.core.work import WorkMeter
from scim.store.base import (
    DirectoryStore,
    Member,
    MembershipEventIntent,
    ResourceKind,
    ResourceNotFound,
    StoredResource,
    StoreError,
    UniquenessViolation,
    UnknownMembers,
    VersionMismatch,
)

__all__ = ["LIST_RESPONSE_URN", "Limits", "ScimRequest", "ScimResponse", "ScimService"]


logger = logging.getLogger("scim.core.service")


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


_Handler = Callable[["ScimRequest", routing.Target], Awaitable[ScimResponse]]


class ScimService:
    """Answers SCIM requests for any tenant from one store (RFC 7644 §3)."""

    def __init__(self, store: DirectoryStore, limits: Limits | None = None, names: NameCache | None = None) -> None:
        self.store = store
        self.names = names or NameCache()
        """The names of the resources this service has seen, for membership events (:mod:`scim.core.names`)."""
        self.listing = Listing(store, limits or Limits(), self.names)
        self._handlers: dict[routing.Handler, _Handler] = {
            "list": self._list,
            "search": self._search,
            "create": self._create,
            "get": self._get,
            "replace": self._replace,
            "patch": self._patch,
            "delete": self._delete,
            "search_all": self._search_all,
            "service_provider_config": self._service_provider_config,
            "schemas": self._schemas,
            "resource_types": self._resource_types,
        }

    @property
    def limits(self) -> Limits:
        """The limits of the handlers and of the listing (one value: setting it sets both)."""
        return self.listing.limits

    @limits.setter
    def limits(self, limits: Limits) -> None:
        self.listing.limits = limits

    async def handle(self, request: ScimRequest) -> ScimResponse:
        """Route and answer one request (:mod:`scim.core.routing`).

        Raises :class:`~scim.core.errors.ScimError` for every answer that is an error; the HTTP
        adapter renders it (the one error choke point).
        """
        target = routing.resolve(request.method, request.path)
        return await self._handlers[target.handler](request, target)

    # ---- discovery (RFC 7644 §4) ---------------------------------------------------------

    async def _service_provider_config(self, request: ScimRequest, target: routing.Target) -> ScimResponse:
        return ScimResponse(
            200,
            discovery.service_provider_config(
                request.base_url,
                max_operations=MAX_OPERATIONS,
                max_payload_size=self.limits.max_body_bytes,
                max_results=self.limits.max_results,
                default_page_size=self.limits.default_count,
            ),
        )

    async def _schemas(self, request: ScimRequest, target: routing.Target) -> ScimResponse:
        return _discovery(target.rest, discovery.schemas_list, discovery.schema_by_id, request, "Schema")

    async def _resource_types(self, request: ScimRequest, target: routing.Target) -> ScimResponse:
        return _discovery(
            target.rest, discovery.resource_types_list, discovery.resource_type_by_id, request, "ResourceType"
        )

    # ---- listing (delegated to scim.core.listing) ----------------------------------------

    async def _list(self, request: ScimRequest, target: routing.Target) -> ScimResponse:
        """GET /Users, /Groups (RFC 7644 §3.4.2) with the query parameters."""
        params = {name: request.param(name) for name in LIST_PARAMETERS}
        return ScimResponse(200, await self.listing.query(request.tenant, request.base_url, _rtype(target), params))

    async def _search(self, request: ScimRequest, target: routing.Target) -> ScimResponse:
        """POST /Users/.search, /Groups/.search (RFC 7644 §3.4.3)."""
        params = search_params(request.json())
        return ScimResponse(200, await self.listing.query(request.tenant, request.base_url, _rtype(target), params))

    async def _search_all(self, request: ScimRequest, target: routing.Target) -> ScimResponse:
        """POST /.search (RFC 7644 §3.4.3): users then groups, paginated as one list."""
        params = search_params(request.json())
        return ScimResponse(200, await self.listing.search_all(request.tenant, request.base_url, params))

    # ---- helpers -------------------------------------------------------------------------

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

    @staticmethod
    def _projection(request: ScimRequest, rtype: ResourceType) -> Projection:
        return projection_for(
            rtype,
            {"attributes": request.param("attributes"), "excludedAttributes": request.param("excludedAttributes")},
        )

    # ---- read ----------------------------------------------------------------------------

    async def _get(self, request: ScimRequest, target: routing.Target) -> ScimResponse:
        """Retrieve a resource (RFC 7644 §3.4.1); a group's members only when they are returned."""
        rtype, resource_id = _rtype(target), target.resource_id
        projection = self._projection(request, rtype)
        want_members = rtype is GROUP and projection.wants("members")
        stored = await store_call(
            self.store.get(request.tenant, rtype.name, resource_id, members=want_members), rtype, resource_id
        )
        self.names.note(request.tenant, stored)
        headers = self._etag_headers(stored)
        if_none_match = request.headers.get("if-none-match")
        if if_none_match and _opaque(if_none_match) == _opaque(stored.version):
            return ScimResponse(304, None, headers)
        return ScimResponse(200, projection.apply(self._render(request, rtype, stored)), headers)

    # ---- write ---------------------------------------------------------------------------

    async def _create(self, request: ScimRequest, target: routing.Target) -> ScimResponse:
        """Create a resource (RFC 7644 §3.3): 201 with ``Location``; 409 ``uniqueness`` on a taken key."""
        rtype = _rtype(target)
        parsed = parse_resource(rtype, request.json())
        stored, members = await self._create_with_member_types(
            request.tenant, rtype, parsed.doc, parsed.members or [], request.base_url
        )
        if rtype is GROUP:
            stored = dataclasses.replace(stored, members=tuple(members))
        body = self._projection(request, rtype).apply(self._render(request, rtype, stored))
        headers = {
            "Location": body.get("meta", {}).get("location") or f"{request.base_url}{rtype.endpoint}/{stored.id}"
        }
        headers.update(self._etag_headers(stored))
        return ScimResponse(201, body, headers)

    async def _create_with_member_types(
        self, tenant: str, rtype: ResourceType, doc: dict[str, Any], members: list[Member], base_url: str
    ) -> tuple[StoredResource, list[Member]]:
        """Create, keeping only the members that exist (see :meth:`_add_members`), with its
        ``*.created`` event (:mod:`scim.core.events`).

        A group's members are added after its creation, as a member PATCH adds them, so that each
        gets its ``group.member_added`` event (the events of a POST are those of a POST without
        members followed by that PATCH); if adding them fails, the group is deleted again (with
        ``group.deleted``), so the create happens entirely or not at all. When storage fails so
        that the delete fails too, the group stays with the members added so far, and the
        client's retry gets 409, finds it by ``displayName`` and PATCHes its members, as after a
        lost response. Then the group is read once for its final version.
        """
        candidates = _dedupe(members)
        if rtype is GROUP and candidates:
            group, _ = await self._create_with_member_types(tenant, rtype, doc, [], base_url)
            try:
                added = await self._add_members(tenant, group.id, candidates)
            except Exception:
                with contextlib.suppress(StoreError):
                    await self.store.delete(tenant, "Group", group.id, event=events.deleted(rtype, base_url))
                    self.names.forget(tenant, "Group", group.id)
                raise
            stored = await store_call(self.store.get(tenant, "Group", group.id), rtype, group.id)
            return stored, added
        event = events.created(rtype, base_url)
        for _ in range(3):
            try:
                stored = await self.store.create(
                    tenant, rtype.name, doc, index_terms(rtype, doc), candidates, event=event
                )
                self.names.note(tenant, stored)
                return stored, candidates
            except UnknownMembers as exc:
                candidates = _without_unknown(candidates, exc.ids)
            except StoreError as exc:
                await store_call(_raise(exc), rtype)
        raise ServiceUnavailable()

    async def _replace(self, request: ScimRequest, target: routing.Target) -> ScimResponse:
        """Replace a resource (RFC 7644 §3.5.1). A group body without ``members`` keeps them.

        Its event (``*.updated``, ``user.deactivated``/``reactivated``, or none when the document
        is unchanged) is classified by the store against the document it replaces."""
        rtype, resource_id = _rtype(target), target.resource_id
        parsed = parse_resource(rtype, request.json())
        if_match = self._if_match(request)
        if if_match is not None:
            current = await store_call(self.store.get(request.tenant, rtype.name, resource_id), rtype, resource_id)
            self._check_if_match(if_match, current)
            version: str | None = current.version
        else:
            version = None
        stored = await store_call(
            self.store.replace(
                request.tenant,
                rtype.name,
                resource_id,
                parsed.doc,
                index_terms(rtype, parsed.doc),
                if_version=version,
                event=events.replaced(rtype, request.base_url, parsed.doc),
            ),
            rtype,
            resource_id,
        )
        self.names.note(request.tenant, stored)
        if rtype is GROUP and parsed.members is not None:
            await self._apply_member_changes(request.tenant, resource_id, [MemberChange("replace", parsed.members)])
        projection = self._projection(request, rtype)
        if (rtype is GROUP and projection.wants("members")) or parsed.members is not None:
            stored = await store_call(
                self.store.get(
                    request.tenant, rtype.name, resource_id, members=rtype is GROUP and projection.wants("members")
                ),
                rtype,
                resource_id,
            )
        body = projection.apply(self._render(request, rtype, stored))
        return ScimResponse(200, body, self._etag_headers(stored))

    async def _patch(self, request: ScimRequest, target: routing.Target) -> ScimResponse:
        """Modify a resource (RFC 7644 §3.5.2): users answer 200 with the resource, groups 204 (docs/ENTRA.md §4).

        A PATCH whose result equals the current document writes nothing (so an Entra re-send
        gives no event); one that changes it commits the event :func:`scim.core.events.patched`
        classifies. Member changes give one event per member that joined or left the group
        (:meth:`_apply_member_changes`), after the group's own event."""
        rtype, resource_id = _rtype(target), target.resource_id
        operations = parse_patch_request(request.json())
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
                        event=events.patched(rtype, request.base_url, current.doc, result.doc),
                    )
                    self.names.note(request.tenant, stored)
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
                    await store_call(_raise(exc), rtype, resource_id)
            break
        changes = result.member_changes if result is not None else member_only
        if changes:
            await self._apply_member_changes(request.tenant, resource_id, changes, meter)
        if rtype is GROUP:
            return ScimResponse(204)
        if changes or stored is None:  # a user PATCH always read the user: None never happens here
            stored = await store_call(self.store.get(request.tenant, rtype.name, resource_id), rtype, resource_id)
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
        current = await store_call(self.store.get(request.tenant, rtype.name, resource_id), rtype, resource_id)
        self.names.note(request.tenant, current)
        self._check_if_match(if_match, current)
        return current

    async def _apply_member_changes(
        self, tenant: str, group_id: str, changes: list[MemberChange], meter: WorkMeter | None = None
    ) -> None:
        """Apply member changes in order, each as commuting store operations (no list rewrite),
        each with its membership events (:meth:`_membership_event` names them)."""
        for change in changes:
            if change.kind == "add":
                await self._add_members(tenant, group_id, _dedupe(change.members))
            elif change.kind == "remove":
                ids = list(dict.fromkeys(m.value for m in change.members))
                await self._remove_members(tenant, group_id, ids)
            else:
                group = await store_call(self.store.get(tenant, "Group", group_id, members=True), GROUP, group_id)
                self.names.note(tenant, group)
                existing = list(group.members or ())
                if change.kind == "replace":
                    wanted = {m.value for m in change.members}
                    doomed = [m.value for m in existing if m.value not in wanted]
                    current_ids = {m.value for m in existing}
                    await self._remove_members(tenant, group_id, doomed)
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
                    await self._remove_members(tenant, group_id, doomed)

    async def _membership_event(
        self, tenant: str, group_id: str, members: list[Member]
    ) -> tuple[MembershipEventIntent, dict[str, ResourceKind]]:
        """The intent of a member change, and the type of each member found: the group's and the
        members' names from the service's name cache, the missing ones read first, concurrently
        (:func:`scim.core.names.resolve`). 404 if the group does not exist."""
        group, names = await store_call(resolve(self.names, self.store, tenant, group_id, members), GROUP, group_id)
        if group is None:
            raise NotFound(f"Group {group_id:.100} not found.")
        kinds: dict[str, ResourceKind] = {
            member_id: "Group" if kind == "Group" else "User" for kind, member_id in names
        }
        return events.membership(group_id, group.name, names, group.last_modified), kinds

    async def _remove_members(self, tenant: str, group_id: str, ids: list[str]) -> None:
        """Remove members, with a ``group.member_removed`` event per member that was in the group."""
        event = (await self._membership_event(tenant, group_id, [Member(i) for i in ids]))[0] if ids else None
        await store_call(self.store.remove_members(tenant, group_id, ids, event=event), GROUP, group_id)

    async def _add_members(self, tenant: str, group_id: str, members: list[Member]) -> list[Member]:
        """Add members and return those added (or there already); ids that name no user or group
        of the tenant are ignored (logged, not stored).

        A member sent without ``type`` may be a group (RFC 7643 §4.2): unknown user ids are
        retried as groups. Ids that are neither are dropped, as Microsoft's reference service
        and its conformance collection expect (204), rather than failing the whole PATCH; no
        membership of a missing resource is ever stored.
        """
        if not members:
            return []
        event, kinds = await self._membership_event(tenant, group_id, members)
        # A member sent without type that names a group is sent as one (no failed attempt); one
        # of a known type that the store does not find was deleted meanwhile: dropped at once.
        candidates = [Member(m.value, kinds.get(m.value, m.type), m.display) for m in members]
        for _ in range(3):
            if not candidates:
                return []
            try:
                await self.store.add_members(tenant, group_id, candidates, event=event)
                return candidates
            except UnknownMembers as exc:
                gone = set(exc.ids) & set(kinds)
                candidates = _without_unknown([m for m in candidates if m.value not in gone], exc.ids)
            except StoreError as exc:
                await store_call(_raise(exc), GROUP, group_id)
        raise ServiceUnavailable()

    async def _delete(self, request: ScimRequest, target: routing.Target) -> ScimResponse:
        """Delete a resource (RFC 7644 §3.6): 204, then 404 for the same id."""
        rtype, resource_id = _rtype(target), target.resource_id
        if_match = self._if_match(request)
        version: str | None = None
        if if_match is not None:
            current = await store_call(self.store.get(request.tenant, rtype.name, resource_id), rtype, resource_id)
            self._check_if_match(if_match, current)
            version = current.version
        event = events.deleted(rtype, request.base_url)
        await store_call(
            self.store.delete(request.tenant, rtype.name, resource_id, if_version=version, event=event),
            rtype,
            resource_id,
        )
        self.names.forget(request.tenant, rtype.name, resource_id)
        return ScimResponse(204)


# ---- small pure helpers ----------------------------------------------------------------


def _rtype(target: routing.Target) -> ResourceType:
    """The resource type of a ``/Users`` or ``/Groups`` route (always set by the routing table)."""
    assert target.rtype is not None
    return target.rtype


def _discovery(
    rest: tuple[str, ...],
    listing: Callable[[str], dict[str, Any]],
    by_id: Callable[[str, str], dict[str, Any] | None],
    request: ScimRequest,
    kind: str,
) -> ScimResponse:
    """A discovery list, or one entry by id (RFC 7644 §4): 404 for an unknown id."""
    if not rest:
        return ScimResponse(200, listing(request.base_url))
    found = by_id(request.base_url, "/".join(rest))
    if found is None or len(rest) > 1:
        raise NotFound(f"No {kind} with id {'/'.join(rest)[:200]!r}.")
    return ScimResponse(200, found)


async def _raise(exc: BaseException) -> Any:
    raise exc


def _opaque(etag: str) -> str:
    """Compare ETags weakly (RFC 7232 §2.3.2): ignore ``W/`` and surrounding quotes."""
    value = etag.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')


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
