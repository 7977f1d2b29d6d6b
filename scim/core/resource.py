"""Resource documents: reading request bodies into stored form, and rendering responses.

A stored document (``doc``) holds client-writable attributes under their canonical names:
core attributes at the top level, each extension's attributes in an object keyed by its
schema URN (RFC 7643 §3.3). Extensions and attributes this service does not know (custom
``urn:ietf:params:scim:schemas:extension:<Name>:2.0:User`` that Entra may map) are kept as
sent. ``id``, ``meta``, ``schemas``, a user's ``groups`` and a group's ``members`` are not
part of the document: the store and the renderer own them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from scim.core.errors import InvalidSyntax, InvalidValue, TooMany
from scim.core.schema import ENTERPRISE_USER_URN, Attribute, ResourceType
from scim.core.values import check_values, comparison_key, is_empty, normalize_value
from scim.store.base import IndexTerms, Member, StoredResource

__all__ = [
    "MAX_INDEXED_VALUES",
    "MAX_MEMBERS_PER_REQUEST",
    "AttributeLocation",
    "ParsedResource",
    "index_terms",
    "locate",
    "parse_members",
    "parse_resource",
    "render",
]


def _ignored(rtype: ResourceType, name: str) -> bool:
    """A POST/PUT attribute that is not stored: ``schemas`` (the service writes its own), readOnly
    attributes (RFC 7643 §2.2: "SHALL be ignored"; ``id``, ``meta``, a user's ``groups``), and
    writeOnly ones (``password``: this service does no password authentication and never keeps a
    secret it cannot use). Mutability comes from the schema registry."""
    return name.lower() == "schemas" or rtype.mutability_of(name) in ("readOnly", "writeOnly")


MAX_MEMBERS_PER_REQUEST = 1000
"""Most group members one request may list: a POST or PUT body's ``members``, or all the
``members`` values of one PATCH's operations together. More answer 400 ``tooMany``.

Entra sends one member per PATCH in practice, and sometimes many (docs/ENTRA.md §2); each
member costs storage writes (49 per transaction), so the bound keeps a request well inside
Entra's 60 s timeout (docs/ENTRA.md §1) while allowing large batches. Larger changes are sent as
several PATCHes (RFC 7644 §3.5.2 gives each its own ``add``/``remove``).
"""


MAX_INDEXED_VALUES = 45
"""Most distinct values a resource may be found by: a user's ``userName``, ``externalId``,
``displayName`` and each distinct ``emails.value`` (so at most 42 distinct email addresses);
more answer 400 ``invalidValue``.

Each value is an index row, written in the same entity-group transaction as the resource
(100 operations at most: docs/table-layout.md). With at most 45, a create (1 + 45) and a
replace that changes every value (1 + 45 + 45) each fit in one transaction, so every write
stays atomic. Entra sends one to three emails per user (docs/ENTRA.md §3).
"""


@dataclass(frozen=True)
class AttributeLocation:
    """Where an attribute lives in a document.

    ``container`` is None for a core attribute, else the key of its extension object.
    ``name`` is the key inside that container. ``attribute`` is its schema definition,
    or None for an attribute no schema declares (kept as sent).
    ``whole_extension`` is True when the path names an extension object itself.
    """

    container: str | None
    name: str
    attribute: Attribute | None
    urn: str | None = None
    whole_extension: bool = False


def _existing_key(doc: dict[str, Any] | None, key: str) -> str:
    """The spelling under which ``key`` already exists in ``doc`` (case-insensitive), else ``key``."""
    if doc:
        lowered = key.lower()
        for existing in doc:
            if existing.lower() == lowered:
                return existing
    return key


def locate(rtype: ResourceType, key: str, doc: dict[str, Any] | None = None) -> AttributeLocation:
    """Resolve an attribute name as a client may spell it (RFC 7644 §3.10, case-insensitive).

    Accepts ``userName``, ``urn:...:core:2.0:User:userName``, ``urn:...:enterprise:2.0:User``
    (the extension object) and ``urn:...:enterprise:2.0:User:department``; unknown URNs
    are split at their last colon, and matched against ``doc``'s existing spelling.
    """
    if key.lower().startswith("urn:"):
        schema = rtype.schema_for_urn(key)
        if schema is not None:
            if schema.id == rtype.schema.id:
                raise InvalidValue(f"{key} names the core schema, not an attribute.")
            return AttributeLocation(schema.id, schema.id, None, urn=schema.id, whole_extension=True)
        prefix, _, name = key.rpartition(":")
        schema = rtype.schema_for_urn(prefix)
        if schema is not None:
            attribute = schema.attribute(name)
            canonical = attribute.name if attribute else _existing_key((doc or {}).get(schema.id), name)
            container = None if schema.id == rtype.schema.id else schema.id
            return AttributeLocation(container, canonical, attribute, urn=schema.id)
        container = _existing_key(doc, prefix)
        existing = (doc or {}).get(container)
        if isinstance(existing, dict) or _looks_like_schema_urn(prefix):
            inner = existing if isinstance(existing, dict) else None
            return AttributeLocation(container, _existing_key(inner, name), None, urn=container)
        return AttributeLocation(None, _existing_key(doc, key), None)
    found = rtype.attribute(key)
    if found is not None:
        return AttributeLocation(None, found[1].name, found[1], urn=rtype.schema.id)
    return AttributeLocation(None, _existing_key(doc, key), None)


def extension_location(rtype: ResourceType, key: str, doc: dict[str, Any], value: Any) -> AttributeLocation | None:
    """The location of a whole extension object named by ``key``, or None.

    A known extension URN always names its object; an unknown URN does when the
    document already holds an object under it or when the value is an object (a custom
    ``urn:ietf:params:scim:schemas:extension:<Name>:2.0:User`` that Entra maps).
    """
    if not key.lower().startswith("urn:"):
        return None
    schema = rtype.schema_for_urn(key)
    if schema is not None:
        return None if schema.id == rtype.schema.id else locate(rtype, key, doc)
    if rtype.schema_for_urn(key.rpartition(":")[0]) is not None:
        return None  # "urn:…:enterprise:2.0:User:manager" is an attribute of a known schema
    existing_key = _existing_key(doc, key)
    names_resource = key.rpartition(":")[2].lower() == rtype.name.lower()
    if isinstance(doc.get(existing_key), dict) or (isinstance(value, dict) and names_resource):
        return AttributeLocation(existing_key, existing_key, None, urn=existing_key, whole_extension=True)
    return None


def _looks_like_schema_urn(prefix: str) -> bool:
    return prefix.lower().startswith("urn:ietf:params:scim:schemas:") or prefix.count(":") >= 4


def _strip_nulls(value: Any) -> Any:
    """Drop nulls and empty containers recursively from an attribute no schema declares."""
    if isinstance(value, dict):
        cleaned = {k: _strip_nulls(v) for k, v in value.items()}
        return {k: v for k, v in cleaned.items() if not is_empty(v)}
    if isinstance(value, list):
        cleaned_list = [_strip_nulls(v) for v in value]
        return [v for v in cleaned_list if not is_empty(v)]
    return value


def normalize_at(location: AttributeLocation, value: Any) -> Any:
    """The stored form of ``value`` for the attribute at ``location`` (None when unassigned)."""
    if location.attribute is None:
        cleaned = _strip_nulls(value)
        return None if is_empty(cleaned) else cleaned
    return normalize_value(location.attribute, value, urn=location.urn)


def set_at(doc: dict[str, Any], location: AttributeLocation, value: Any) -> None:
    """Assign (or, for None, remove) the value at ``location``; empty extension objects disappear."""
    if location.container is None:
        target = doc
    else:
        target = doc.setdefault(location.container, {})
        if not isinstance(target, dict):
            target = doc[location.container] = {}
    if value is None:
        target.pop(location.name, None)
    else:
        target[location.name] = value
    if location.container is not None and not doc.get(location.container):
        doc.pop(location.container, None)


def get_at(doc: dict[str, Any], location: AttributeLocation) -> Any:
    """The value at ``location``, or None."""
    target = doc if location.container is None else doc.get(location.container)
    if not isinstance(target, dict):
        return None
    return target.get(location.name)


@dataclass(frozen=True)
class ParsedResource:
    """A request body read into a document, plus a group's ``members``."""

    doc: dict[str, Any]
    members: list[Member] | None


def parse_resource(rtype: ResourceType, body: Any) -> ParsedResource:
    """Read a POST or PUT body (RFC 7644 §3.3, §3.5.1) with Entra's tolerances (docs/ENTRA.md §3)."""
    if not isinstance(body, dict):
        raise InvalidSyntax("The request body must be a JSON object.")
    doc: dict[str, Any] = {}
    members: list[Member] | None = None
    for key, value in body.items():
        if not isinstance(key, str):
            continue
        lowered = key.lower()
        if _ignored(rtype, key):
            continue
        if rtype.name == "Group" and lowered == "members":
            members = parse_members(value)
            continue
        if lowered == rtype.schema.id.lower():
            if isinstance(value, dict):
                nested = parse_resource(rtype, value)
                doc.update(nested.doc)
                members = nested.members if nested.members is not None else members
            continue
        extension = extension_location(rtype, key, doc, value)
        if extension is not None:
            _merge_extension(rtype, doc, extension, value)
            continue
        location = locate(rtype, key, doc)
        if location.attribute is None and location.container is None:
            continue  # RFC 7644 §3.3: attributes no schema defines are ignored (URN extensions are kept)
        set_at(doc, location, normalize_at(location, value))
    _check_required(rtype, doc)
    check_values(doc)
    return ParsedResource(doc, members)


def _merge_extension(rtype: ResourceType, doc: dict[str, Any], location: AttributeLocation, value: Any) -> None:
    if is_empty(value):
        return
    if not isinstance(value, dict):
        raise InvalidValue(f"{location.container} must be an object of extension attributes.")
    for key, item in value.items():
        if key.lower() == "schemas":
            continue
        inner = locate(rtype, f"{location.container}:{key}", doc)
        set_at(doc, inner, normalize_at(inner, item))


def _check_required(rtype: ResourceType, doc: dict[str, Any]) -> None:
    for attribute in rtype.schema.attributes:
        if attribute.required and is_empty(doc.get(attribute.name)):
            raise InvalidValue(f"{attribute.name} is required.")


def check_required(rtype: ResourceType, doc: dict[str, Any]) -> None:
    """Raise InvalidValue if a required attribute (``userName``, group ``displayName``) is missing."""
    _check_required(rtype, doc)


def parse_members(value: Any) -> list[Member]:
    """Read a ``members`` value (RFC 7643 §4.2): items with ``value`` and optional ``type``.

    Entra sends ``{"$ref": null, "value": "<id>"}`` (docs/ENTRA.md §4); ``$ref`` is ignored since
    the id decides; ``display`` (or ``displayName``, as Microsoft's test collection sends) is
    kept and returned as sent. At most :data:`MAX_MEMBERS_PER_REQUEST` items (400 ``tooMany``);
    ``value`` and ``display`` are bounded like every value (:data:`scim.core.values.MAX_VALUE_LENGTH`).
    """
    if is_empty(value):
        return []
    items = value if isinstance(value, list) else [value]
    if len(items) > MAX_MEMBERS_PER_REQUEST:
        raise TooMany(
            f"A request may list at most {MAX_MEMBERS_PER_REQUEST} members, not {len(items)}; "
            "send the rest in further PATCH requests."
        )
    members: list[Member] = []
    for item in items:
        if isinstance(item, str):
            decoded = _decode_json_object(item)
            item = decoded if decoded is not None else {"value": item}
        if not isinstance(item, dict):
            raise InvalidValue("Each member must be an object with a 'value' (the member's id).")
        fields = {str(k).lower(): v for k, v in item.items()}
        member_id = fields.get("value")
        if not isinstance(member_id, str) or not member_id:
            raise InvalidValue("Each member needs a 'value' holding the member's id.")
        kind = fields.get("type")
        display = fields.get("display", fields.get("displayname"))
        display = display if isinstance(display, str) and display else None
        check_values({"value": member_id, "display": display}, "members[]")
        members.append(
            Member(member_id, "Group" if isinstance(kind, str) and kind.lower() == "group" else "User", display)
        )
    return members


def _decode_json_object(text: str) -> dict[str, Any] | None:
    try:
        decoded = json.loads(text)
    except ValueError:
        return None
    return decoded if isinstance(decoded, dict) else None


def index_terms(rtype: ResourceType, doc: dict[str, Any]) -> IndexTerms:
    """What the store indexes a resource by, for Entra's lookups (docs/ENTRA.md §2).

    Users: ``userName`` (unique, case-insensitive); ``externalId`` (not unique, case-exact,
    RFC 7643 §3.1); every ``emails.value`` (case-insensitive); ``displayName``.
    Groups: ``displayName`` (unique, case-insensitive); ``externalId``.
    More than :data:`MAX_INDEXED_VALUES` answer 400 ``invalidValue``.
    """
    multi: set[tuple[str, str]] = set()
    unique: dict[str, str] = {}
    for path in rtype.indexed:
        case_exact = rtype.indexed_attribute(path).case_exact
        for value in _indexed_values(doc, path):
            if path in rtype.unique:
                unique[path] = comparison_key(value, case_exact)
            else:
                multi.add((path, comparison_key(value, case_exact)))
    if len(unique) + len(multi) > MAX_INDEXED_VALUES:
        raise InvalidValue(
            f"A {rtype.name.lower()} may be found by at most {MAX_INDEXED_VALUES} distinct values (userName, externalId,"
            f" displayName and each distinct email address); this one has {len(unique) + len(multi)}: remove email addresses."
        )
    return IndexTerms(unique=unique, multi=frozenset(multi))


def _indexed_values(doc: dict[str, Any], path: str) -> list[str]:
    """The string values at an indexed path: ``userName`` or each item's ``value`` of ``emails.value``."""
    name, _, sub = path.partition(".")
    value = doc.get(name)
    if not sub:
        return [value] if isinstance(value, str) else []
    items = value if isinstance(value, list) else []
    return [item[sub] for item in items if isinstance(item, dict) and isinstance(item.get(sub), str)]


def render(
    rtype: ResourceType,
    stored: StoredResource,
    base_url: str,
) -> dict[str, Any]:
    """The SCIM representation of a stored resource (RFC 7643 §3, §4; RFC 7644 §3.4.1).

    ``schemas`` lists the core schema and every extension present; the enterprise
    ``manager`` is returned as an object with ``value`` and ``$ref`` (docs/ENTRA.md §4: a bare
    string breaks Entra); ``groups`` and ``members`` carry ``$ref``.
    """
    doc = stored.doc
    schemas = [rtype.schema.id] + [
        key for key, value in doc.items() if key.lower().startswith("urn:") and isinstance(value, dict)
    ]
    body: dict[str, Any] = {"schemas": schemas, "id": stored.id}
    for key, value in doc.items():
        body[key] = value
    enterprise = body.get(ENTERPRISE_USER_URN)
    if isinstance(enterprise, dict) and isinstance(enterprise.get("manager"), dict):
        manager = dict(enterprise["manager"])
        if isinstance(manager.get("value"), str):
            manager["$ref"] = f"{base_url}/Users/{manager['value']}"
        body[ENTERPRISE_USER_URN] = {**enterprise, "manager": manager}
    if stored.groups:
        body["groups"] = [{"value": gid, "$ref": f"{base_url}/Groups/{gid}", "type": "direct"} for gid in stored.groups]
    if stored.members is not None:
        body["members"] = [_render_member(m, base_url) for m in stored.members]
    body["meta"] = {
        "resourceType": rtype.name,
        "created": stored.created,
        "lastModified": stored.last_modified,
        "location": f"{base_url}{rtype.endpoint}/{stored.id}",
        "version": stored.version,
    }
    return body


def _render_member(member: Member, base_url: str) -> dict[str, Any]:
    rendered: dict[str, Any] = {
        "value": member.value,
        "$ref": f"{base_url}/{member.type}s/{member.value}",
        "type": member.type,
    }
    if member.display:
        rendered["display"] = member.display
    return rendered
