"""Filters (RFC 7644 §3.4.2.2): parsing, evaluation on documents, and index planning.

Parsing is done by ``scim2-models`` (its grammar accepts Entra's
``emails[type eq "work"].value eq "x"``). Its evaluator works on pydantic models, which
drop the custom extension attributes Entra maps, so evaluation here walks the JSON
representation instead, with the schema's ``caseExact`` and types. ``scim2_models`` is
imported on first use: it costs about a second, which cold starts should not pay.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .errors import InvalidFilter
from .schema import Attribute, ResourceType
from .values import comparison_key

if TYPE_CHECKING:
    from scim2_models.path import AttrPath, FilterNode

__all__ = [
    "MAX_FILTER_DEPTH",
    "MAX_FILTER_LENGTH",
    "IndexPlan",
    "filter_shape_problem",
    "matches",
    "parse_filter",
    "plan_lookup",
    "sort_key",
    "values_at",
]

MAX_FILTER_LENGTH = 4096
"""Longest filter (and PATCH ``path``), in characters; longer answers 400 ``invalidFilter``."""

MAX_FILTER_DEPTH = 16
"""Deepest nesting of ``( )`` and ``[ ]`` groupings in a filter or PATCH path.

Entra's filters nest at most once (``emails[type eq "work"].value eq "…"``, ENTRA.md §2);
the parser and the evaluator recurse once per level, so deeper input is refused before it
reaches them (400 ``invalidFilter``, RFC 7644 §3.4.2.2) instead of costing a deep recursion.
"""


def filter_shape_problem(expression: str) -> str | None:
    """Why ``expression`` is too long or nests too deeply to parse, or None if it is fine.

    Brackets inside ``"…"`` string literals (with ``\\"`` escapes) do not count. Shared by
    filters (:func:`parse_filter`) and PATCH paths (:mod:`scim.patching`).
    """
    if len(expression) > MAX_FILTER_LENGTH:
        return f"is longer than {MAX_FILTER_LENGTH} characters"
    depth = 0
    in_string = escaped = False
    for char in expression:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "([":
            depth += 1
            if depth > MAX_FILTER_DEPTH:
                return f"nests deeper than {MAX_FILTER_DEPTH} levels of ( ) and [ ]"
        elif char in ")]":
            depth -= 1
    return None


def parse_filter(expression: str) -> FilterNode:
    """Parse a filter; a filter that does not parse answers 400 ``invalidFilter`` (RFC 7644 §3.4.2.2).

    Filters longer than :data:`MAX_FILTER_LENGTH` or nested deeper than
    :data:`MAX_FILTER_DEPTH` are refused before parsing, with the same error.
    """
    problem = filter_shape_problem(expression)
    if problem is not None:
        raise InvalidFilter(f"The filter {problem}.")
    from scim2_models import ScimFilter
    from scim2_models.exceptions import SCIMException

    try:
        return ScimFilter(expression).ast
    except (SCIMException, ValueError, RecursionError) as exc:
        lenient = _quote_bare_values(expression)
        if lenient != expression:
            try:
                return ScimFilter(lenient).ast
            except (SCIMException, ValueError, RecursionError):
                pass
        raise InvalidFilter(f"The filter {expression[:200]!r} is not valid: {_detail(exc)}") from None


_BARE_VALUE = re.compile(r"(?i)\b(eq|ne|co|sw|ew|gt|ge|lt|le)(\s+)(?![\"(])([^\s()\[\]\"]+)")
_LITERAL = re.compile(r"(?i)^(true|false|null|-?\d+(\.\d+)?([eE][+-]?\d+)?)$")


def _quote_bare_values(expression: str) -> str:
    """Quote unquoted comparison values (``userName sw O``), as Microsoft's reference server accepts.

    RFC 7644 §3.4.2.2 requires JSON string literals; this fallback only runs on a filter
    that did not parse, so a valid filter is never reinterpreted.
    """

    def quote(match: re.Match[str]) -> str:
        value = match.group(3)
        if _LITERAL.match(value):
            return match.group(0)
        return f'{match.group(1)}{match.group(2)}{json.dumps(value)}'

    return _BARE_VALUE.sub(quote, expression)


def _detail(exc: Exception) -> str:
    return str(getattr(exc, "detail", None) or exc)


def _lookup_key(data: dict[str, Any], name: str) -> Any:
    """Case-insensitive key lookup (RFC 7644 §3.10: attribute names are case-insensitive)."""
    if name in data:
        return data[name]
    lowered = name.lower()
    for key, value in data.items():
        if key.lower() == lowered:
            return value
    return None


def _attribute_for(rtype: ResourceType, path: AttrPath) -> Attribute | None:
    """The schema attribute (or sub-attribute) a path names, if any schema declares it."""
    name = f"{path.uri}:{path.attr}" if path.uri else path.attr
    found = rtype.attribute(name)
    if found is None:
        from .schema import COMMON_ATTRIBUTES

        found_common = next((a for a in COMMON_ATTRIBUTES if a.name.lower() == path.attr.lower()), None)
        if found_common is None or path.uri:
            return None
        attribute = found_common
    else:
        attribute = found[1]
    if path.sub_attr:
        return attribute.sub(path.sub_attr)
    return attribute


def _container(resource: dict[str, Any], rtype: ResourceType, uri: str | None) -> dict[str, Any] | None:
    if uri is None or uri.lower() == rtype.schema.id.lower():
        return resource
    value = _lookup_key(resource, uri)
    return value if isinstance(value, dict) else None


def values_at(resource: dict[str, Any], rtype: ResourceType, path: AttrPath) -> list[Any]:
    """Every value a path designates in a resource (multi-valued attributes yield several)."""
    container = _container(resource, rtype, path.uri)
    if container is None:
        return []
    value = _lookup_key(container, path.attr)
    items = value if isinstance(value, list) else [value]
    found: list[Any] = []
    for item in items:
        if item is None:
            continue
        if path.sub_attr:
            if isinstance(item, dict):
                found.append(_lookup_key(item, path.sub_attr))
        elif isinstance(item, dict) and isinstance(value, list):
            # "emails eq x" compares the primary value of each item (RFC 7644 §3.4.2.2).
            found.append(_lookup_key(item, "value"))
        else:
            found.append(item)
    return [v for v in found if v is not None]


def _as_datetime(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


def _compare(actual: Any, expected: Any, op: str, attribute: Attribute | None) -> bool:
    """One comparison (RFC 7644 §3.4.2.2); values of incomparable types never match."""
    if attribute is not None and attribute.type == "dateTime":
        left_dt, right_dt = _as_datetime(actual), _as_datetime(expected)
        if left_dt is not None and right_dt is not None:
            actual, expected = left_dt, right_dt
    if isinstance(actual, str) and isinstance(expected, str):
        case_exact = attribute.case_exact if attribute is not None else False
        actual, expected = comparison_key(actual, case_exact), comparison_key(expected, case_exact)
    elif isinstance(actual, bool) != isinstance(expected, bool):
        return op == "ne"
    if op == "eq":
        return bool(actual == expected)
    if op == "ne":
        return bool(actual != expected)
    if op in ("co", "sw", "ew"):
        if not isinstance(actual, str) or not isinstance(expected, str):
            return False
        return expected in actual if op == "co" else actual.startswith(expected) if op == "sw" else actual.endswith(expected)
    if isinstance(actual, bool) or isinstance(expected, bool):
        return False
    try:
        if op == "gt":
            return bool(actual > expected)
        if op == "ge":
            return bool(actual >= expected)
        if op == "lt":
            return bool(actual < expected)
        if op == "le":
            return bool(actual <= expected)
    except TypeError:
        return False
    return False


def matches(node: FilterNode, resource: dict[str, Any], rtype: ResourceType) -> bool:
    """Whether a rendered resource satisfies a filter."""
    from scim2_models.path import Comparison, LogicalExpr, Not, Present, ValuePath

    if isinstance(node, LogicalExpr):
        results = (matches(term, resource, rtype) for term in node.terms)
        return all(results) if node.op.value == "and" else any(results)
    if isinstance(node, Not):
        return not matches(node.expr, resource, rtype)
    if isinstance(node, Present):
        return any(v not in ("", [], {}) for v in values_at(resource, rtype, node.attr_path))
    if isinstance(node, Comparison):
        attribute = _attribute_for(rtype, node.attr_path)
        values = values_at(resource, rtype, node.attr_path)
        op = node.op.value
        if not values:
            return (op == "eq" and node.value is None) or (op == "ne" and node.value is not None)
        if op == "ne":
            return all(_compare(v, node.value, op, attribute) for v in values)
        return any(_compare(v, node.value, op, attribute) for v in values)
    if isinstance(node, ValuePath):
        container = _container(resource, rtype, node.attr_path.uri)
        items = _lookup_key(container, node.attr_path.attr) if container else None
        parent = _attribute_for(rtype, node.attr_path)
        if not isinstance(items, list):
            items = [items] if isinstance(items, dict) else []
        return any(isinstance(item, dict) and _item_matches(node.val_filter, item, parent) for item in items)
    raise InvalidFilter(f"Unsupported filter expression: {node}")


def item_matches(node: FilterNode, item: dict[str, Any], parent: Attribute | None) -> bool:
    """Whether one item of a multi-valued attribute satisfies a value filter (``emails[type eq "work"]``)."""
    return _item_matches(node, item, parent)


def _item_matches(node: FilterNode, item: dict[str, Any], parent: Attribute | None) -> bool:
    from scim2_models.path import Comparison, LogicalExpr, Not, Present

    if isinstance(node, LogicalExpr):
        results = (_item_matches(term, item, parent) for term in node.terms)
        return all(results) if node.op.value == "and" else any(results)
    if isinstance(node, Not):
        return not _item_matches(node.expr, item, parent)
    name = node.attr_path.attr  # type: ignore[attr-defined]
    sub = parent.sub(name) if parent is not None else None
    value = _lookup_key(item, name)
    if isinstance(node, Present):
        return value not in (None, "", [], {})
    if isinstance(node, Comparison):
        op = node.op.value
        if value is None:
            return (op == "eq" and node.value is None) or (op == "ne" and node.value is not None)
        return _compare(value, node.value, op, sub)
    raise InvalidFilter(f"Unsupported expression inside a value filter: {node}")


@dataclass(frozen=True)
class IndexPlan:
    """How to find a filter's candidates without scanning: ids, or index (attribute, key) pairs.

    Candidates are always re-checked against the whole filter.
    """

    ids: frozenset[str] = frozenset()
    terms: frozenset[tuple[str, str]] = frozenset()
    prefixes: frozenset[tuple[str, str]] = frozenset()


_INDEXED = {
    "User": {"username": ("userName", False), "externalid": ("externalId", True), "displayname": ("displayName", False)},
    "Group": {"displayname": ("displayName", False), "externalid": ("externalId", True)},
}


def plan_lookup(node: FilterNode, rtype: ResourceType) -> IndexPlan | None:
    """An index plan that finds every resource the filter can match, or None if a scan is needed.

    Answers Entra's lookups (ENTRA.md §2): ``userName eq``, ``externalId eq``,
    ``emails[type eq "work"].value eq``, ``displayName eq``, ``id eq``, and ``sw`` on the same
    attributes as a range of the index; ``and`` uses the first indexable term, ``or`` needs
    every term indexable.
    """
    from scim2_models.path import Comparison, LogicalExpr, ValuePath

    if isinstance(node, LogicalExpr):
        plans = [plan_lookup(term, rtype) for term in node.terms]
        if node.op.value == "and":
            return next((p for p in plans if p is not None), None)
        if any(p is None for p in plans):
            return None
        return IndexPlan(
            ids=frozenset().union(*(p.ids for p in plans if p)),
            terms=frozenset().union(*(p.terms for p in plans if p)),
            prefixes=frozenset().union(*(p.prefixes for p in plans if p)),
        )
    if isinstance(node, ValuePath):
        if node.attr_path.attr.lower() == "emails" and rtype.name == "User" and not _foreign_uri(node.attr_path, rtype):
            return _email_plan(node.val_filter)
        return None
    if not isinstance(node, Comparison) or node.op.value not in ("eq", "sw") or not isinstance(node.value, str):
        return None
    path = node.attr_path
    if _foreign_uri(path, rtype):
        return None
    attr = path.attr.lower()
    if path.sub_attr is None and attr == "id":
        return IndexPlan(ids=frozenset({node.value})) if node.op.value == "eq" else None
    if rtype.name == "User" and attr == "emails" and (path.sub_attr or "value").lower() == "value":
        name, case_exact = "emails.value", False
    else:
        indexed = _INDEXED[rtype.name].get(attr)
        if indexed is None or path.sub_attr is not None:
            return None
        name, case_exact = indexed
    term = frozenset({(name, comparison_key(node.value, case_exact))})
    return IndexPlan(terms=term) if node.op.value == "eq" else IndexPlan(prefixes=term)


def _foreign_uri(path: AttrPath, rtype: ResourceType) -> bool:
    return path.uri is not None and path.uri.lower() != rtype.schema.id.lower()


def _email_plan(val_filter: FilterNode) -> IndexPlan | None:
    from scim2_models.path import Comparison, LogicalExpr

    terms = val_filter.terms if isinstance(val_filter, LogicalExpr) and val_filter.op.value == "and" else (val_filter,)
    for term in terms:
        if (
            isinstance(term, Comparison)
            and term.op.value == "eq"
            and term.attr_path.attr.lower() == "value"
            and isinstance(term.value, str)
        ):
            return IndexPlan(terms=frozenset({("emails.value", comparison_key(term.value, False))}))
    return None


def sort_key(resource: dict[str, Any], rtype: ResourceType, path: AttrPath) -> tuple[int, Any]:
    """The sort key of a resource for ``sortBy`` (RFC 7644 §3.4.2.3); missing values sort last."""
    values = values_at(resource, rtype, path)
    if not values:
        return (1, "")
    value = values[0]
    attribute = _attribute_for(rtype, path)
    if isinstance(value, str):
        return (0, comparison_key(value, attribute.case_exact if attribute else False))
    return (0, str(value))
