"""PATCH (RFC 7644 §3.5.2) on stored documents, in both of Entra's dialects (docs/ENTRA.md §4).

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
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

from scim.core.errors import InvalidPath, InvalidSyntax, InvalidValue, Mutability, NoTarget, TooMany
from scim.core.filtering import MAX_FILTER_TERMS, filter_shape_problem, filter_terms, item_matches, syntax_error_detail
from scim.core.resource import (
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
from scim.core.schema import Attribute, ResourceType
from scim.core.values import check_values, is_empty
from scim.core.work import WorkMeter
from scim.store.base import Member

if TYPE_CHECKING:
    from scim2_models.path import FilterNode

__all__ = [
    "MAX_FILTERED_PATHS",
    "MAX_OPERATIONS",
    "MemberChange",
    "PatchResult",
    "apply_patch",
    "apply_patch_async",
    "parse_patch_request",
]

PATCH_OP_URN = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
MAX_OPERATIONS = 1000
"""Largest number of operations in one PATCH request (advertised in ServiceProviderConfig)."""

MAX_FILTERED_PATHS = 20
"""Most paths with a value filter (``emails[type eq "work"].value``) in one PATCH request,
counting ``path``s and the keys of path-less operations; more answers 400 ``tooMany``.

Each is parsed (up to 4,096 characters, :data:`~scim.core.filtering.MAX_FILTER_LENGTH`) and
evaluated on every value of its attribute: a 1 MiB PATCH of value-path operations took
4.9 s. Entra sends one per changed email, phone number and address field, about 10 at most
(``emails[type eq "work"].value``, three ``phoneNumbers``, six ``addresses[type eq "work"]``
fields); Microsoft's Postman collection sends one.
"""


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


@dataclass
class _Run:
    """One application of a PATCH: its result so far, its work meter and its value-filtered paths."""

    result: PatchResult
    meter: WorkMeter
    filtered_paths: int = 0
    members: int = 0


def parse_patch_request(body: Any) -> list[Operation]:
    """Read a PatchOp message (RFC 7644 §3.5.2): ``Operations`` with ``op``, ``path``, ``value``.

    Keys are matched case-insensitively; the ``schemas`` member may be missing.
    """
    if not isinstance(body, dict):
        raise InvalidSyntax("A PATCH body must be a JSON object with an 'Operations' array.")
    fields = {str(k).lower(): v for k, v in body.items()}
    schemas = fields.get("schemas")
    if schemas is not None and (
        not isinstance(schemas, list)
        or not any(isinstance(s, str) and s.lower() == PATCH_OP_URN.lower() for s in schemas)
    ):
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
        raise InvalidSyntax(f"Operations[{index}].op must be add, replace or remove, not {str(op)[:20]!r}.")
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
    return Operation(cast(Op, lowered), path.strip() if path else None, fields.get("value"), "value" in fields)


def apply_patch(
    rtype: ResourceType, doc: dict[str, Any], operations: list[Operation], meter: WorkMeter | None = None
) -> PatchResult:
    """Apply operations in order to a copy of ``doc`` (RFC 7644 §3.5.2: all or nothing).

    The limits are checked on the result, before anything is stored: at most
    :data:`~scim.core.resource.MAX_MEMBERS_PER_REQUEST` members named by all operations together
    (400 ``tooMany``), and no value longer than :data:`~scim.core.values.MAX_VALUE_LENGTH`
    (400 ``invalidValue``). While applying: at most :data:`MAX_FILTERED_PATHS` value-filtered
    paths, and the work ``meter`` (:data:`~scim.core.work.MAX_WORK`) for value filters and
    multi-valued merges (400 ``tooMany``).
    """
    steps = _patch_steps(rtype, doc, operations, meter if meter is not None else WorkMeter())
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return cast(PatchResult, stop.value)


async def apply_patch_async(
    rtype: ResourceType, doc: dict[str, Any], operations: list[Operation], meter: WorkMeter
) -> PatchResult:
    """:func:`apply_patch`, handing the event loop back whenever ``meter``'s slice is over
    (between paths, and between the values a filter or a merge examines)."""
    steps = _patch_steps(rtype, doc, operations, meter)
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return cast(PatchResult, stop.value)
        await meter.pause()


def _patch_steps(
    rtype: ResourceType, doc: dict[str, Any], operations: list[Operation], meter: WorkMeter
) -> Generator[None, None, PatchResult]:
    """:func:`apply_patch` as a generator that yields when ``meter``'s slice is over."""
    run = _Run(PatchResult(copy.deepcopy(doc), []), meter)
    result = run.result
    for operation in operations:
        if operation.path is None:
            yield from _apply_pathless(rtype, run, operation)
        else:
            yield from _apply_path(rtype, run, operation.op, operation.path, operation.value, operation.has_value)
        if meter.due():
            yield
    check_required(rtype, result.doc)
    _check_member_count(result)
    check_values(result.doc)
    return result


def _check_member_count(result: PatchResult) -> None:
    member_count = sum(len(change.members) for change in result.member_changes)
    if member_count > MAX_MEMBERS_PER_REQUEST:
        raise TooMany(
            f"A PATCH may name at most {MAX_MEMBERS_PER_REQUEST} members in all its operations, not {member_count}; "
            "send the rest in further PATCH requests."
        )


def _count_filtered_path(run: _Run) -> None:
    """Count a path with a value filter (:data:`MAX_FILTERED_PATHS`), before it is parsed.

    ``members[value eq "id"]`` paths (Entra's member removal under ``aadOptscim062020``)
    are not counted: they name members, bounded by ``MAX_MEMBERS_PER_REQUEST``, and are
    never evaluated on values.
    """
    run.filtered_paths += 1
    if run.filtered_paths > MAX_FILTERED_PATHS:
        raise TooMany(
            f"A PATCH may carry at most {MAX_FILTERED_PATHS} paths with a value filter "
            "(such as 'emails[type eq \"work\"].value'); send the rest in further PATCH requests."
        )


def _apply_pathless(rtype: ResourceType, run: _Run, operation: Operation) -> Generator[None, None, None]:
    """A path-less op: each key of ``value`` is a path (Entra's ``aadOptscim062020`` dialect)."""
    if not isinstance(operation.value, dict):
        raise InvalidValue(f"A {operation.op} without a path needs an object value of attributes.")
    for key, value in operation.value.items():
        if not isinstance(key, str):
            continue
        if key.lower() == rtype.schema.id.lower() and isinstance(value, dict):
            for inner_key, inner_value in value.items():
                yield from _apply_path(rtype, run, operation.op, inner_key, inner_value, True)
            continue
        yield from _apply_path(rtype, run, operation.op, key, value, True)
        if run.meter.due():
            yield


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
        raise InvalidPath(f"A path {problem}.")
    try:
        ast = Path(path).ast
    except (SCIMException, ValueError, RecursionError) as exc:
        # The detail names the position and the kind of token, never the path's values
        # (emails, ids): it is kept in the provisioning log and mailed in digests.
        raise InvalidPath(f"A path is not valid: {syntax_error_detail(exc, 'path')}") from None
    if not isinstance(ast, (AttrPath, ValuePath)):
        raise InvalidPath("A path is a filter, not an attribute (e.g. 'title' or 'emails[type eq \"work\"].value').")
    if isinstance(ast, ValuePath):
        terms = filter_terms(ast.val_filter)
        if terms > MAX_FILTER_TERMS:
            raise InvalidPath(f"A path's value filter has {terms} terms; at most {MAX_FILTER_TERMS} are allowed.")
    return ast


def _apply_path(
    rtype: ResourceType, run: _Run, op: Op, path: str, value: Any, has_value: bool
) -> Generator[None, None, None]:
    from scim2_models.path import ValuePath

    result = run.result
    doc = result.doc
    extension = extension_location(rtype, path, doc, value)
    if extension is not None:
        yield from _apply_extension(rtype, run, op, extension, value, has_value)
        return
    members_path = rtype.name == "Group" and path.partition("[")[0].strip().lower().rpartition(":")[2] == "members"
    if "[" in path and not members_path:
        _count_filtered_path(run)
    ast = _parse_path(path)
    if isinstance(ast, ValuePath):
        attr_path, value_filter, sub_attr = ast.attr_path, ast.val_filter, ast.sub_attr
    else:
        attr_path, value_filter, sub_attr = ast, None, ast.sub_attr
    name = f"{attr_path.uri}:{attr_path.attr}" if attr_path.uri else attr_path.attr
    lowered = attr_path.attr.lower()
    if attr_path.uri is None or attr_path.uri.lower() == rtype.schema.id.lower():
        mutability = rtype.mutability_of(attr_path.attr)
        if lowered == "schemas" or mutability == "writeOnly":
            return  # not stored (see scim.core.resource: the service keeps no password)
        if mutability == "readOnly":
            raise Mutability(f"{attr_path.attr} is read-only.")
        if rtype.name == "Group" and lowered == "members":
            changes = _member_changes(op, value_filter, sub_attr, value, has_value)
            if any(change.kind == "remove_matching" for change in changes):
                _count_filtered_path(run)  # evaluated on every member of the group
            result.member_changes.extend(changes)
            run.members += sum(len(change.members) for change in changes)
            if run.members > MAX_MEMBERS_PER_REQUEST:  # checked as they come: each path is parsed
                _check_member_count(result)
            return
    location = locate(rtype, name, doc)
    if location.attribute is None and location.container is None:
        raise NoTarget(f"{attr_path.attr} is not an attribute of a {rtype.name}.")
    if location.attribute is not None and location.attribute.mutability == "readOnly":
        raise Mutability(f"{location.name} is read-only.")
    if value_filter is not None:
        yield from _apply_filtered(location, op, value_filter, sub_attr, value, doc, run.meter)
    elif sub_attr is not None:
        _apply_sub_attribute(location, op, sub_attr, value, doc)
    else:
        yield from _apply_attribute(location, op, value, has_value, doc, run.meter)


def _apply_extension(
    rtype: ResourceType, run: _Run, op: Op, location: AttributeLocation, value: Any, has_value: bool
) -> Generator[None, None, None]:
    """An op whose path is a whole extension URN: remove it, or apply each attribute of ``value``."""
    if op == "remove" and not has_value:
        run.result.doc.pop(location.name, None)
        return
    if not isinstance(value, dict):
        raise InvalidValue(f"The value for {location.name} must be an object of its attributes.")
    for key, item in value.items():
        if key.lower() != "schemas":
            yield from _apply_path(rtype, run, op, f"{location.name}:{key}", item, True)
            if run.meter.due():
                yield


def _unmatched(items: list[Any], others: list[Any], meter: WorkMeter) -> Generator[None, None, list[Any]]:
    """The items of ``items`` that are the same item (:func:`_same_item`) as none of ``others``.

    Costs one unit of ``meter``'s work per pair compared, charged up front, so that an
    add of 25,000 values to an attribute of 25,000 is refused before it starts.
    """
    meter.charge(len(items) * len(others))
    kept: list[Any] = []
    for item in items:
        if not any(_same_item(item, other) for other in others):
            kept.append(item)
        if meter.due():
            yield
    return kept


def _apply_attribute(
    location: AttributeLocation, op: Op, value: Any, has_value: bool, doc: dict[str, Any], meter: WorkMeter
) -> Generator[None, None, None]:
    """add/replace/remove on a whole attribute (RFC 7644 §3.5.2.1-3)."""
    attribute = location.attribute
    current = get_at(doc, location)
    multi = attribute.multi_valued if attribute else isinstance(current, list) or isinstance(value, list)
    if op == "remove":
        if has_value and multi and not is_empty(value) and isinstance(current, list):
            # Entra: Remove with a value removes only the listed values (docs/ENTRA.md §4).
            doomed = normalize_at(location, value) or []
            remaining = yield from _unmatched(current, doomed, meter)
            set_at(doc, location, remaining or None)
        else:
            set_at(doc, location, None)
        return
    new_value = normalize_at(location, value)
    if multi:
        new_items = new_value or []
        if op == "add" and isinstance(current, list):
            merged = list(current) + (yield from _unmatched(new_items, current, meter))
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
    """The enterprise manager is replaced whole: a new id is a new manager (docs/ENTRA.md §4)."""
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
    from scim.core.values import normalize_value

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
    meter: WorkMeter,
) -> Generator[None, None, None]:
    """Ops on ``emails[type eq "work"]`` or ``emails[type eq "work"].value`` (RFC 7644 §3.5.2)."""
    attribute = location.attribute
    current = get_at(doc, location)
    items = [dict(i) if isinstance(i, dict) else i for i in current] if isinstance(current, list) else []
    matched: list[int] = []
    for i, item in enumerate(items):
        if isinstance(item, dict) and item_matches(value_filter, item, attribute, meter):
            matched.append(i)
        if meter.due():
            yield
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
        # Entra: Add/Replace on emails[type eq "work"].value creates the entry (docs/ENTRA.md §4).
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

    terms = (
        value_filter.terms
        if isinstance(value_filter, LogicalExpr) and value_filter.op.value == "and"
        else (value_filter,)
    )
    entry: dict[str, Any] = {}
    for term in terms:
        if not isinstance(term, Comparison) or term.op.value != "eq" or term.attr_path.sub_attr:
            # The filter is not echoed: its values are emails and ids (see _parse_path).
            raise NoTarget(
                f"No value of {location.name} matches the path's filter, and the filter does not describe a new one "
                "(only eq comparisons joined by and can)."
            )
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
    """Group ``members`` ops as store-level changes (docs/ENTRA.md §4, both dialects)."""
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
    removal = (
        MemberChange("remove", [Member(i) for i in ids])
        if ids is not None
        else MemberChange("remove_matching", filter=value_filter)
    )
    return [removal, MemberChange("add", parse_members(value))]


def _ids_in_filter(value_filter: FilterNode) -> list[str] | None:
    """The ids of ``value eq "a" or value eq "b"``; None if the filter is anything else."""
    from scim2_models.path import Comparison, LogicalExpr

    terms = (
        value_filter.terms
        if isinstance(value_filter, LogicalExpr) and value_filter.op.value == "or"
        else (value_filter,)
    )
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
