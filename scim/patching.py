"""PATCH (RFC 7644 §3.5.2) on stored documents, in both of Entra's dialects (ENTRA.md §4).

Tolerances, each required by Entra:
- op names in any case (``Add``/``add``); Add and Replace used interchangeably;
- a path-less op whose value has dotted and URN keys (``name.givenName``,
  ``urn:...:enterprise:2.0:User:employeeNumber``), under ``?aadOptscim062020``;
- booleans as strings (``"False"``), manager as a bare id (``""`` removes it);
- ``Add``/``Replace`` on ``emails[type eq "work"].value`` with no such entry *creates* it;
- ``Remove`` with a ``value`` removes only the listed values (members in particular: an
  RFC-literal reading would empty the group);
- app roles serialised into strings.

Member changes of a group are not applied to the document: they are returned as
:class:`MemberChange` items for the store, which applies them without reading the member
list (that is what keeps concurrent single-member PATCHes from losing updates).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .errors import InvalidPath, InvalidSyntax, InvalidValue, Mutability, NoTarget, TooMany
from .filtering import filter_shape_problem, item_matches
from .resource import (
    MAX_MEMBERS_PER_REQUEST,
    AttributeLocation,
    check_required,
    extension_location,
    get_at,
    locate,
    normalize_at,
    parse_members,
    set_at,
)
from .schema import Attribute, ResourceType
from .store.base import Member
from .values import check_values, is_empty

if TYPE_CHECKING:
    from scim2_models.path import FilterNode

__all__ = ["MAX_OPERATIONS", "MemberChange", "PatchResult", "apply_patch", "parse_patch_request"]

PATCH_OP_URN = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
MAX_OPERATIONS = 1000
"""Largest number of operations in one PATCH request (advertised in ServiceProviderConfig)."""

_READ_ONLY = {"id", "meta", "groups"}
_IGNORED = {"schemas", "password"}

Op = Literal["add", "replace", "remove"]


@dataclass(frozen=True)
class Operation:
    """One PATCH operation, with ``op`` lower-cased (Entra sends ``Add``, RFC says ``add``)."""

    op: Op
    path: str | None
    value: Any
    has_value: bool


@dataclass
class MemberChange:
    """A change to a group's members, applied by the store (never by rewriting a list).

    ``kind``: ``add``, ``remove`` (the listed ids), ``replace`` (the whole set) or
    ``remove_matching`` (the members matching ``filter``, which needs the member list).
    """

    kind: Literal["add", "remove", "replace", "remove_matching"]
    members: list[Member] = field(default_factory=list)
    filter: FilterNode | None = None


@dataclass
class PatchResult:
    """The document after the operations, and the member changes to apply in order."""

    doc: dict[str, Any]
    member_changes: list[MemberChange]


def parse_patch_request(body: Any) -> list[Operation]:
    """Read a PatchOp message (RFC 7644 §3.5.2): ``Operations`` with ``op``, ``path``, ``value``.

    Keys are matched case-insensitively; the ``schemas`` member may be missing.
    """
    if not isinstance(body, dict):
        raise InvalidSyntax("A PATCH body must be a JSON object with an 'Operations' array.")
    fields = {str(k).lower(): v for k, v in body.items()}
    schemas = fields.get("schemas")
    if schemas is not None and (not isinstance(schemas, list) or not any(
        isinstance(s, str) and s.lower() == PATCH_OP_URN.lower() for s in schemas
    )):
        raise InvalidSyntax(f"A PATCH body's 'schemas' must contain {PATCH_OP_URN}.")
    raw_ops = fields.get("operations")
    if not isinstance(raw_ops, list) or not raw_ops:
        raise InvalidSyntax("A PATCH body needs a non-empty 'Operations' array.")
    if len(raw_ops) > MAX_OPERATIONS:
        raise TooMany(f"A PATCH request may carry at most {MAX_OPERATIONS} operations.")
    return [_parse_operation(raw, index) for index, raw in enumerate(raw_ops)]


def _parse_operation(raw: Any, index: int) -> Operation:
    if not isinstance(raw, dict):
        raise InvalidSyntax(f"Operations[{index}] must be an object.")
    fields = {str(k).lower(): v for k, v in raw.items()}
    op = fields.get("op")
    if not isinstance(op, str) or op.lower() not in ("add", "replace", "remove"):
        raise InvalidSyntax(f"Operations[{index}].op must be add, replace or remove, not {op!r}.")
    path = fields.get("path")
    if path is not None and not isinstance(path, str):
        raise InvalidPath(f"Operations[{index}].path must be a string.")
    if isinstance(path, str) and not path.strip():
        path = None
    lowered = op.lower()
    if lowered != "remove" and "value" not in fields:
        raise InvalidValue(f"Operations[{index}] ({lowered}) needs a 'value'.")
    if lowered == "remove" and path is None and not isinstance(fields.get("value"), dict):
        raise NoTarget(f"Operations[{index}] (remove) needs a 'path'.")
    return Operation(lowered, path.strip() if path else None, fields.get("value"), "value" in fields)  # type: ignore[arg-type]


def apply_patch(rtype: ResourceType, doc: dict[str, Any], operations: list[Operation]) -> PatchResult:
    """Apply operations in order to a copy of ``doc`` (RFC 7644 §3.5.2: all or nothing).

    The limits are checked on the result, before anything is stored: at most
    :data:`~scim.resource.MAX_MEMBERS_PER_REQUEST` members named by all operations together
    (400 ``tooMany``), and no value longer than :data:`~scim.values.MAX_VALUE_LENGTH`
    (400 ``invalidValue``).
    """
    result = PatchResult(copy.deepcopy(doc), [])
    for operation in operations:
        if operation.path is None:
            _apply_pathless(rtype, result, operation)
        else:
            _apply_path(rtype, result, operation.op, operation.path, operation.value, operation.has_value)
    check_required(rtype, result.doc)
    member_count = sum(len(change.members) for change in result.member_changes)
    if member_count > MAX_MEMBERS_PER_REQUEST:
        raise TooMany(
            f"A PATCH may name at most {MAX_MEMBERS_PER_REQUEST} members in all its operations, not {member_count}; "
            "send the rest in further PATCH requests."
        )
    check_values(result.doc)
    return result


def _apply_pathless(rtype: ResourceType, result: PatchResult, operation: Operation) -> None:
    """A path-less op: each key of ``value`` is a path (Entra's ``aadOptscim062020`` dialect)."""
    if not isinstance(operation.value, dict):
        raise InvalidValue(f"A {operation.op} without a path needs an object value of attributes.")
    for key, value in operation.value.items():
        if not isinstance(key, str):
            continue
        if key.lower() == rtype.schema.id.lower() and isinstance(value, dict):
            for inner_key, inner_value in value.items():
                _apply_path(rtype, result, operation.op, inner_key, inner_value, True)
            continue
        _apply_path(rtype, result, operation.op, key, value, True)


def _parse_path(path: str) -> Any:
    """The parsed path: an ``attrPath`` or a ``valuePath`` (RFC 7644 §3.5.2, ``PATH`` rule).

    invalidPath if it does not parse, is too long or nests too deeply, is empty (a key
    ``""`` in a path-less op's value), or is a bare filter (``userName eq "x"``,
    ``emails pr``), which the parser accepts (errata 7122) but which names no attribute.
    """
    from scim2_models import Path
    from scim2_models.exceptions import SCIMException
    from scim2_models.path import AttrPath, ValuePath

    problem = filter_shape_problem(path)
    if problem is not None:
        raise InvalidPath(f"The path {path[:200]!r} {problem}.")
    try:
        ast = Path(path).ast
    except SCIMException as exc:
        raise InvalidPath(f"The path {path[:200]!r} is not valid: {getattr(exc, 'detail', None) or exc}") from None
    except (ValueError, RecursionError) as exc:
        raise InvalidPath(f"The path {path[:200]!r} is not valid: {exc}") from None
    if not isinstance(ast, (AttrPath, ValuePath)):
        raise InvalidPath(f"The path {path[:200]!r} does not name an attribute (e.g. 'title' or 'emails[type eq \"work\"].value').")
    return ast


def _apply_path(rtype: ResourceType, result: PatchResult, op: Op, path: str, value: Any, has_value: bool) -> None:
    from scim2_models.path import ValuePath

    doc = result.doc
    extension = extension_location(rtype, path, doc, value)
    if extension is not None:
        _apply_extension(rtype, result, op, extension, value, has_value)
        return
    ast = _parse_path(path)
    if isinstance(ast, ValuePath):
        attr_path, value_filter, sub_attr = ast.attr_path, ast.val_filter, ast.sub_attr
    else:
        attr_path, value_filter, sub_attr = ast, None, ast.sub_attr
    name = f"{attr_path.uri}:{attr_path.attr}" if attr_path.uri else attr_path.attr
    lowered = attr_path.attr.lower()
    if attr_path.uri is None or attr_path.uri.lower() == rtype.schema.id.lower():
        if lowered in _IGNORED:
            return
        if lowered in _READ_ONLY:
            raise Mutability(f"{attr_path.attr} is read-only.")
        if rtype.name == "Group" and lowered == "members":
            result.member_changes.extend(_member_changes(op, value_filter, sub_attr, value, has_value))
            return
    location = locate(rtype, name, doc)
    if location.attribute is None and location.container is None:
        raise NoTarget(f"{attr_path.attr} is not an attribute of a {rtype.name}.")
    if location.attribute is not None and location.attribute.mutability == "readOnly":
        raise Mutability(f"{location.name} is read-only.")
    if value_filter is not None:
        _apply_filtered(location, op, value_filter, sub_attr, value, doc)
    elif sub_attr is not None:
        _apply_sub_attribute(location, op, sub_attr, value, doc)
    else:
        _apply_attribute(location, op, value, has_value, doc)


def _apply_extension(
    rtype: ResourceType, result: PatchResult, op: Op, location: AttributeLocation, value: Any, has_value: bool
) -> None:
    """An op whose path is a whole extension URN: remove it, or apply each attribute of ``value``."""
    if op == "remove" and not has_value:
        result.doc.pop(location.name, None)
        return
    if not isinstance(value, dict):
        raise InvalidValue(f"The value for {location.name} must be an object of its attributes.")
    for key, item in value.items():
        if key.lower() != "schemas":
            _apply_path(rtype, result, op, f"{location.name}:{key}", item, True)


def _apply_attribute(location: AttributeLocation, op: Op, value: Any, has_value: bool, doc: dict[str, Any]) -> None:
    """add/replace/remove on a whole attribute (RFC 7644 §3.5.2.1-3)."""
    attribute = location.attribute
    current = get_at(doc, location)
    multi = attribute.multi_valued if attribute else isinstance(current, list) or isinstance(value, list)
    if op == "remove":
        if has_value and multi and not is_empty(value) and isinstance(current, list):
            # Entra: Remove with a value removes only the listed values (ENTRA.md §4).
            doomed = normalize_at(location, value) or []
            remaining = [item for item in current if not any(_same_item(item, d) for d in doomed)]
            set_at(doc, location, remaining or None)
        else:
            set_at(doc, location, None)
        return
    new_value = normalize_at(location, value)
    if multi:
        new_items = new_value or []
        if op == "add" and isinstance(current, list):
            merged = list(current) + [item for item in new_items if not any(_same_item(item, c) for c in current)]
        else:
            merged = list(new_items)
        set_at(doc, location, _single_primary(merged, new_items) or None)
        return
    if isinstance(new_value, dict) and isinstance(current, dict) and not _is_reference(location):
        # Complex attribute: sub-attributes not in the value are left unchanged (RFC 7644 §3.5.2.3).
        set_at(doc, location, {**current, **new_value})
        return
    set_at(doc, location, new_value)


def _is_reference(location: AttributeLocation) -> bool:
    """The enterprise manager is replaced whole: a new id is a new manager (ENTRA.md §4)."""
    return location.attribute is not None and location.attribute.name == "manager"


def _apply_sub_attribute(location: AttributeLocation, op: Op, sub_name: str, value: Any, doc: dict[str, Any]) -> None:
    """Ops on ``name.givenName`` or ``emails.value`` (a sub-attribute without a filter)."""
    attribute = location.attribute
    sub = attribute.sub(sub_name) if attribute else None
    if attribute is not None and attribute.type != "complex":
        raise InvalidPath(f"{location.name} has no sub-attributes.")
    canonical = sub.name if sub else sub_name
    current = get_at(doc, location)
    new_sub = None if op == "remove" else _normalize_sub(sub, value, f"{location.name}.{canonical}")
    if isinstance(current, list) or (attribute is not None and attribute.multi_valued):
        items = [dict(i) for i in current] if isinstance(current, list) else []
        if not items and op != "remove":
            items = [{}]
        for item in items:
            _set_key(item, canonical, new_sub)
        set_at(doc, location, [i for i in items if i] or None)
        return
    target = dict(current) if isinstance(current, dict) else {}
    _set_key(target, canonical, new_sub)
    set_at(doc, location, target or None)


def _normalize_sub(sub: Attribute | None, value: Any, where: str) -> Any:
    if sub is None:
        return None if is_empty(value) else value
    from .values import normalize_value

    return normalize_value(sub, value)


def _set_key(item: dict[str, Any], name: str, value: Any) -> None:
    existing = next((k for k in item if k.lower() == name.lower()), name)
    if value is None:
        item.pop(existing, None)
    else:
        item.pop(existing, None)
        item[name] = value


def _apply_filtered(
    location: AttributeLocation,
    op: Op,
    value_filter: FilterNode,
    sub_name: str | None,
    value: Any,
    doc: dict[str, Any],
) -> None:
    """Ops on ``emails[type eq "work"]`` or ``emails[type eq "work"].value`` (RFC 7644 §3.5.2)."""
    attribute = location.attribute
    current = get_at(doc, location)
    items = [dict(i) if isinstance(i, dict) else i for i in current] if isinstance(current, list) else []
    matched = [i for i, item in enumerate(items) if isinstance(item, dict) and item_matches(value_filter, item, attribute)]
    sub = attribute.sub(sub_name) if attribute and sub_name else None
    canonical = sub.name if sub else sub_name
    if op == "remove":
        if canonical is None:
            items = [item for i, item in enumerate(items) if i not in matched]
        else:
            for i in matched:
                _set_key(items[i], canonical, None)
        set_at(doc, location, [i for i in items if i] or None)
        return
    if not matched:
        # Entra: Add/Replace on emails[type eq "work"].value creates the entry (ENTRA.md §4).
        items.append(_entry_from_filter(value_filter, location))
        matched = [len(items) - 1]
    for i in matched:
        if canonical is not None:
            _set_key(items[i], canonical, _normalize_sub(sub, value, f"{location.name}.{canonical}"))
        else:
            replacement = normalize_at(AttributeLocation(None, location.name, attribute), value)
            new_item = (replacement or [None])[0] if isinstance(replacement, list) else replacement
            if not isinstance(new_item, dict):
                raise InvalidValue(f"The value for {location.name}[...] must be an object.")
            items[i] = {**items[i], **new_item} if op == "add" else new_item
    set_at(doc, location, _single_primary([i for i in items if i], [items[i] for i in matched]) or None)


def _entry_from_filter(value_filter: FilterNode, location: AttributeLocation) -> dict[str, Any]:
    """The entry a filter describes: its ``eq`` comparisons joined by ``and``; otherwise noTarget."""
    from scim2_models.path import Comparison, LogicalExpr

    terms = value_filter.terms if isinstance(value_filter, LogicalExpr) and value_filter.op.value == "and" else (value_filter,)
    entry: dict[str, Any] = {}
    for term in terms:
        if not isinstance(term, Comparison) or term.op.value != "eq" or term.attr_path.sub_attr:
            raise NoTarget(f"No value of {location.name} matches the filter {value_filter}.")
        sub = location.attribute.sub(term.attr_path.attr) if location.attribute else None
        name = sub.name if sub else term.attr_path.attr
        # The filter's literal becomes a stored value: it must fit the sub-attribute's type
        # (``addresses[type eq 1]`` would otherwise store a number as ``type``, RFC 7643 §2.3).
        value = _normalize_sub(sub, term.value, f"{location.name}.{name}")
        if value is not None:
            entry[name] = value
    return entry


def _same_item(left: Any, right: Any) -> bool:
    """Two multi-valued items are the same value when their ``value`` (or whole item) is equal."""
    if isinstance(left, dict) and isinstance(right, dict):
        if "value" in left and "value" in right:
            same = left["value"] == right["value"]
            return same and (left.get("type") == right.get("type") or "type" not in right)
        return left == right
    return bool(left == right)


def _single_primary(items: list[Any], new_items: list[Any]) -> list[Any]:
    """At most one item is ``primary`` (RFC 7643 §2.4): a newly written primary wins."""
    new_primary = [item for item in new_items if isinstance(item, dict) and item.get("primary") is True]
    if not new_primary:
        return items
    winner = new_primary[-1]
    for item in items:
        if isinstance(item, dict) and item is not winner and item.get("primary") is True and item != winner:
            item["primary"] = False
    return items


def _member_changes(
    op: Op, value_filter: FilterNode | None, sub_attr: str | None, value: Any, has_value: bool
) -> list[MemberChange]:
    """Group ``members`` ops as store-level changes (ENTRA.md §4, both dialects)."""
    if sub_attr is not None:
        raise InvalidPath("Members are changed as a whole ('members' or 'members[value eq \"id\"]').")
    if value_filter is None:
        if op == "add":
            return [MemberChange("add", parse_members(value))]
        if op == "replace":
            return [MemberChange("replace", parse_members(value))]
        if has_value and not is_empty(value):
            return [MemberChange("remove", parse_members(value))]
        return [MemberChange("replace", [])]
    ids = _ids_in_filter(value_filter)
    if op == "remove":
        if ids is not None:
            return [MemberChange("remove", [Member(i) for i in ids])]
        return [MemberChange("remove_matching", filter=value_filter)]
    removal = MemberChange("remove", [Member(i) for i in ids]) if ids is not None else MemberChange("remove_matching", filter=value_filter)
    return [removal, MemberChange("add", parse_members(value))]


def _ids_in_filter(value_filter: FilterNode) -> list[str] | None:
    """The ids of ``value eq "a" or value eq "b"``; None if the filter is anything else."""
    from scim2_models.path import Comparison, LogicalExpr

    terms = value_filter.terms if isinstance(value_filter, LogicalExpr) and value_filter.op.value == "or" else (value_filter,)
    ids: list[str] = []
    for term in terms:
        if not (
            isinstance(term, Comparison)
            and term.op.value == "eq"
            and term.attr_path.attr.lower() == "value"
            and term.attr_path.sub_attr is None
            and isinstance(term.value, str)
        ):
            return None
        ids.append(term.value)
    return ids
