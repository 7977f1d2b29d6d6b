"""Filters (RFC 7644 §3.4.2.2): parsing and evaluation on documents (index planning:
:mod:`scim.core.lookup`; the work budget: :mod:`scim.core.work`).

Parsing is done by ``scim2-models`` (its grammar accepts Entra's
``emails[type eq "work"].value eq "x"``). Its evaluator works on pydantic models, which
drop the custom extension attributes Entra maps, so evaluation here walks the JSON
representation instead, with the schema's ``caseExact`` and types. ``scim2_models`` is
imported on first use: it costs about a second, which cold starts should not pay.
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from scim.core.errors import InvalidFilter
from scim.core.schema import Attribute, ResourceType
from scim.core.values import comparison_key
from scim.core.work import WorkMeter

if TYPE_CHECKING:
    from scim2_models.path import AttrPath, FilterNode

__all__ = [
    "MAX_FILTER_DEPTH",
    "MAX_FILTER_LENGTH",
    "MAX_FILTER_TERMS",
    "filter_shape_problem",
    "filter_terms",
    "item_matches",
    "matches",
    "matches_async",
    "parse_filter",
    "sort_key",
    "syntax_error_detail",
    "values_at",
]

MAX_FILTER_LENGTH = 4096
"""Longest filter (and PATCH ``path``), in characters; longer answers 400 ``invalidFilter``."""

MAX_FILTER_DEPTH = 16
"""Deepest nesting of ``( )`` and ``[ ]`` groupings in a filter or PATCH path.

Entra's filters nest at most once (``emails[type eq "work"].value eq "…"``, docs/ENTRA.md §2);
the parser and the evaluator recurse once per level, so deeper input is refused before it
reaches them (400 ``invalidFilter``, RFC 7644 §3.4.2.2) instead of costing a deep recursion.
"""

MAX_FILTER_TERMS = 50
"""Most attribute tests in one filter (or PATCH path): every comparison and ``pr`` test,
wherever it stands, plus one for each value filter ``attr[...]``; more answers 400
``invalidFilter``.

Evaluating a filter costs about one comparison per term and attribute value, so a 4 KB
filter of 93 ``emails[value co "…" or type co "…"]`` (279 terms) kept one worker busy for
8 s on 1,000 users. Entra's largest filter has 3 terms
(``emails[type eq "work"].value eq "…"``), Microsoft's Postman collection's also 3.
"""

_VALUE_CHUNK = 256
"""Values compared between two checks of the slice clock inside one attribute."""


def filter_shape_problem(expression: str) -> str | None:
    """Why ``expression`` is too long or nests too deeply to parse, or None if it is fine.

    Brackets inside ``"…"`` string literals (with ``\\"`` escapes) do not count. Shared by
    filters (:func:`parse_filter`) and PATCH paths (:mod:`scim.core.patching`).
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

    Filters longer than :data:`MAX_FILTER_LENGTH`, nested deeper than
    :data:`MAX_FILTER_DEPTH` (both refused before parsing) or with more than
    :data:`MAX_FILTER_TERMS` terms are refused with the same error. The ``detail`` of a
    filter that does not parse names the position and the kind of token where parsing
    failed, never the filter's values (they are userNames and emails, and the detail is
    kept in the provisioning log and mailed in failure digests).
    """
    problem = filter_shape_problem(expression)
    if problem is not None:
        raise InvalidFilter(f"The filter {problem}.")
    from scim2_models import ScimFilter
    from scim2_models.exceptions import SCIMException

    try:
        ast = ScimFilter(expression).ast
    except (SCIMException, ValueError, RecursionError) as exc:
        lenient = _quote_bare_values(expression)
        if lenient == expression:
            raise InvalidFilter(f"The filter is not valid: {syntax_error_detail(exc, 'filter')}") from None
        try:
            ast = ScimFilter(lenient).ast
        except (SCIMException, ValueError, RecursionError):
            raise InvalidFilter(f"The filter is not valid: {syntax_error_detail(exc, 'filter')}") from None
    terms = filter_terms(ast)
    if terms > MAX_FILTER_TERMS:
        raise InvalidFilter(
            f"The filter has {terms} terms (comparisons, pr tests and value filters); "
            f"at most {MAX_FILTER_TERMS} are allowed in one filter."
        )
    return ast


def filter_terms(node: Any) -> int:
    """The number of terms of a filter: comparisons and ``pr`` tests, plus one per value filter."""
    from scim2_models.path import LogicalExpr, Not, ValuePath

    if isinstance(node, LogicalExpr):
        return sum(filter_terms(term) for term in node.terms)
    if isinstance(node, Not):
        return filter_terms(node.expr)
    if isinstance(node, ValuePath):
        return 1 + filter_terms(node.val_filter)
    return 1


_TOKEN_KINDS = {
    "$END": "the end of the {what}",
    "STRING": "a string",
    "NUMBER": "a number",
    "TRUE": "true",
    "FALSE": "false",
    "NULL": "null",
    "ATTR_PATH": "an attribute name",
    "SUB_ATTR": "a sub-attribute name",
    "COMPARE_OP": "an operator (eq, ne, co, sw, ew, gt, ge, lt, le)",
    "PR": "pr",
    "_AND": "and",
    "_OR": "or",
    "_NOT": "not",
    "_LPAR": "'('",
    "_RPAR": "')'",
    "_LBRACKET": "'['",
    "_RBRACKET": "']'",
    "_DOT": "'.'",
}
_SHOWN_CHARACTERS = frozenset("'`(){}[]<>=!&|,;:.\\")


def _kind(token_type: str, what: str) -> str:
    return _TOKEN_KINDS.get(token_type, "a token").format(what=what)


def syntax_error_detail(exc: BaseException, what: str) -> str:
    """Where and why a filter or PATCH path (``what``) did not parse, without its values.

    Names the position (1-based character) and the kind of token found there (``a
    string``, ``an attribute name``, ``the end of the filter``) and what the grammar
    expected; never the text of a string literal, a name or a number.
    """
    from lark.exceptions import UnexpectedCharacters, UnexpectedToken, VisitError

    cause = exc.__cause__ if exc.__cause__ is not None else exc
    if isinstance(cause, UnexpectedToken):
        position = (cause.pos_in_stream or 0) + 1
        found = _kind(cause.token.type, what)
        expected = sorted({_kind(t, what) for t in (cause.expected or ()) if t in _TOKEN_KINDS})
        wanted = f"; expected {' or '.join(expected)}" if expected else ""
        return f"unexpected {found} at position {position}{wanted}."
    if isinstance(cause, UnexpectedCharacters):
        position = (cause.pos_in_stream or 0) + 1
        char = cause.char
        if char == '"':
            return f"a string at position {position} is not terminated or has an invalid escape (strings are JSON strings in double quotes)."
        shown = f" {char!r}" if char in _SHOWN_CHARACTERS else ""
        return f"unexpected character{shown} at position {position}."
    if isinstance(cause, VisitError):
        message = str(cause.orig_exc)
        if message.startswith("number out of range"):
            return "a number is out of range."
        if "is not an attribute name" in message or "is not a schema URN" in message:
            return "an attribute name or schema URN is not valid."
        if "value selection cannot apply" in message:
            return "a value filter ([...]) applies to a sub-attribute; apply it to the attribute."
        return f"the {what} uses a construct SCIM does not allow."
    if isinstance(cause, RecursionError):
        return f"the {what} nests too deeply."
    detail = str(getattr(exc, "detail", "") or "")
    if "nests more than" in detail:
        return f"the {what} nests too deeply."
    return "invalid syntax."


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
        return f"{match.group(1)}{match.group(2)}{json.dumps(value)}"

    return _BARE_VALUE.sub(quote, expression)


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
        from scim.core.schema import COMMON_ATTRIBUTES

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


def _key(value: str, case_exact: bool) -> str:
    """:func:`~scim.core.values.comparison_key`, without its two normalisations for ASCII text (NFC of ASCII is itself)."""
    if value.isascii():
        return value if case_exact else value.lower()
    return comparison_key(value, case_exact)


def _compare(actual: Any, expected: Any, op: str, attribute: Attribute | None) -> bool:
    """One comparison (RFC 7644 §3.4.2.2); values of incomparable types never match."""
    if attribute is not None and attribute.type == "dateTime":
        left_dt, right_dt = _as_datetime(actual), _as_datetime(expected)
        if left_dt is not None and right_dt is not None:
            actual, expected = left_dt, right_dt
    if isinstance(actual, str) and isinstance(expected, str):
        case_exact = attribute.case_exact if attribute is not None else False
        actual, expected = _key(actual, case_exact), _key(expected, case_exact)
    elif isinstance(actual, bool) != isinstance(expected, bool):
        return op == "ne"
    if op == "eq":
        return bool(actual == expected)
    if op == "ne":
        return bool(actual != expected)
    if op in ("co", "sw", "ew"):
        if not isinstance(actual, str) or not isinstance(expected, str):
            return False
        return (
            expected in actual
            if op == "co"
            else actual.startswith(expected)
            if op == "sw"
            else actual.endswith(expected)
        )
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


class _Nodes:
    """The filter node classes of ``scim2_models`` (imported on first use, see the module docstring)."""

    loaded = False
    Comparison: Any
    LogicalExpr: Any
    Not: Any
    Present: Any
    ValuePath: Any

    @classmethod
    def load(cls) -> type[_Nodes]:
        if not cls.loaded:
            from scim2_models.path import Comparison, LogicalExpr, Not, Present, ValuePath

            cls.Comparison, cls.LogicalExpr, cls.Not, cls.Present, cls.ValuePath = (
                Comparison,
                LogicalExpr,
                Not,
                Present,
                ValuePath,
            )
            cls.loaded = True
        return cls


def matches(node: FilterNode, resource: dict[str, Any], rtype: ResourceType, meter: WorkMeter | None = None) -> bool:
    """Whether a rendered resource satisfies a filter (all at once: see :func:`matches_async`)."""
    run = _evaluate(node, resource, rtype, meter if meter is not None else WorkMeter())
    while True:
        try:
            next(run)
        except StopIteration as stop:
            return bool(stop.value)


async def matches_async(node: FilterNode, resource: dict[str, Any], rtype: ResourceType, meter: WorkMeter) -> bool:
    """Whether a rendered resource satisfies a filter, counting the work on ``meter`` and
    handing the event loop back every :data:`SLICE_SECONDS`, even inside one resource
    (an attribute may hold tens of thousands of values)."""
    run = _evaluate(node, resource, rtype, meter)
    while True:
        try:
            next(run)
        except StopIteration as stop:
            return bool(stop.value)
        await meter.pause()


def _evaluate(
    node: Any, resource: dict[str, Any], rtype: ResourceType, meter: WorkMeter
) -> Generator[None, None, bool]:
    """The evaluator: a generator that yields when ``meter``'s slice is over, and returns the result.

    Each term evaluated costs one unit of work and each value it examines one more.
    """
    nodes = _Nodes.load()
    kind = type(node)
    if kind is nodes.LogicalExpr:
        want_all = bool(node.op == "and")  # a StrEnum: compared as the string, without Enum.value
        for term in node.terms:
            if (yield from _evaluate(term, resource, rtype, meter)) is not want_all:
                return not want_all
        return want_all
    if kind is nodes.Not:
        return not (yield from _evaluate(node.expr, resource, rtype, meter))
    if kind is nodes.ValuePath:
        container = _container(resource, rtype, node.attr_path.uri)
        items = _lookup_key(container, node.attr_path.attr) if container else None
        parent = _attribute_for(rtype, node.attr_path)
        if not isinstance(items, list):
            items = [items] if isinstance(items, dict) else []
        meter.charge(1)
        for item in items:
            if isinstance(item, dict) and _item_matches(node.val_filter, item, parent, meter):
                return True
            if meter.due():
                yield
        return False
    if kind is nodes.Present:
        values = values_at(resource, rtype, node.attr_path)
        meter.charge(1 + len(values))
        return any(v not in ("", [], {}) for v in values)
    if kind is nodes.Comparison:
        attribute = _attribute_for(rtype, node.attr_path)
        values = values_at(resource, rtype, node.attr_path)
        op: str = node.op
        expected = node.value
        meter.charge(1)
        if not values:
            return (op == "eq" and expected is None) or (op == "ne" and expected is not None)
        for start in range(0, len(values), _VALUE_CHUNK):
            chunk = values[start : start + _VALUE_CHUNK]
            meter.charge(len(chunk))
            if op == "ne":
                if not all(_compare(v, expected, op, attribute) for v in chunk):
                    return False
            elif any(_compare(v, expected, op, attribute) for v in chunk):
                return True
            if meter.due():
                yield
        return op == "ne"
    raise InvalidFilter(f"Unsupported filter expression ({kind.__name__}).")


def item_matches(
    node: FilterNode, item: dict[str, Any], parent: Attribute | None, meter: WorkMeter | None = None
) -> bool:
    """Whether one item of a multi-valued attribute satisfies a value filter (``emails[type eq "work"]``).

    Costs at most one unit of ``meter``'s work per term of the filter (at most
    :data:`MAX_FILTER_TERMS`); callers looping over many items check the meter's slice.
    """
    return _item_matches(node, item, parent, meter if meter is not None else WorkMeter())


def _item_matches(node: Any, item: dict[str, Any], parent: Attribute | None, meter: WorkMeter) -> bool:
    nodes = _Nodes.load()
    kind = type(node)
    if kind is nodes.LogicalExpr:
        want_all = bool(node.op == "and")
        for term in node.terms:
            if _item_matches(term, item, parent, meter) is not want_all:
                return not want_all
        return want_all
    if kind is nodes.Not:
        return not _item_matches(node.expr, item, parent, meter)
    if kind is not nodes.Present and kind is not nodes.Comparison:
        raise InvalidFilter(f"Unsupported expression inside a value filter ({kind.__name__}).")
    meter.charge(1)
    name = node.attr_path.attr
    value = _lookup_key(item, name)
    if kind is nodes.Present:
        return value not in (None, "", [], {})
    op = node.op
    if value is None:
        return (op == "eq" and node.value is None) or (op == "ne" and node.value is not None)
    return _compare(value, node.value, op, _sub_attribute(parent, name) if parent is not None else None)


_SUBS: dict[tuple[int, str], tuple[Attribute, Attribute | None]] = {}


def _sub_attribute(parent: Attribute, name: str) -> Attribute | None:
    """``parent.sub(name)``, remembered: schema attributes live as long as the process."""
    key = (id(parent), name)
    cached = _SUBS.get(key)
    if cached is not None and cached[0] is parent:
        return cached[1]
    found = parent.sub(name)
    if len(_SUBS) > 4096:
        _SUBS.clear()
    _SUBS[key] = (parent, found)
    return found


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
