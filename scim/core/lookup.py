"""Index planning for filters (RFC 7644 §3.4.2.2): which index rows find every resource a filter
may match, so that Entra's lookups (docs/ENTRA.md §2) are point reads or range queries instead of
scans. The indexed attributes come from the schema registry
(:attr:`scim.core.schema.ResourceType.indexed`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from scim.core.errors import InvalidFilter
from scim.core.schema import ResourceType
from scim.core.values import comparison_key

if TYPE_CHECKING:
    from scim2_models.path import AttrPath, FilterNode

__all__ = ["MAX_INDEX_TERMS", "IndexPlan", "plan_lookup"]

MAX_INDEX_TERMS = 10
"""Most index lookups one filter may ask for: ``eq`` and ``sw`` on ``userName``,
``externalId``, ``emails``/``emails.value`` and ``displayName``, and ``id eq``, after
duplicates are merged; more answers 400 ``invalidFilter``.

Each costs its own storage queries (docs/table-layout.md). Entra asks for one per lookup.
"""


@dataclass(frozen=True)
class IndexPlan:
    """How to find a filter's candidates without scanning: ids, or index (attribute, key) pairs.

    Candidates are always re-checked against the whole filter.
    """

    ids: frozenset[str] = frozenset()
    terms: frozenset[tuple[str, str]] = frozenset()
    prefixes: frozenset[tuple[str, str]] = frozenset()

    @property
    def lookups(self) -> int:
        """How many index lookups the plan makes (each of its ids, terms and prefixes)."""
        return len(self.ids) + len(self.terms) + len(self.prefixes)


def _indexed(rtype: ResourceType, attr: str, sub_attr: str | None) -> tuple[str, bool] | None:
    """The indexed path (and its ``caseExact``) a filter's attribute path names, if any
    (:attr:`ResourceType.indexed`); ``emails eq x`` compares each email's ``value``."""
    for path in rtype.indexed:
        name, _, sub = path.partition(".")
        if name.lower() == attr and (sub_attr or (sub or None) or "").lower() == sub.lower():
            return path, rtype.indexed_attribute(path).case_exact
    return None


def plan_lookup(node: FilterNode, rtype: ResourceType) -> IndexPlan | None:
    """An index plan that finds every resource the filter can match, or None if a scan is needed.

    Answers Entra's lookups (docs/ENTRA.md §2): ``userName eq``, ``externalId eq``,
    ``emails[type eq "work"].value eq``, ``displayName eq``, ``id eq``, and ``sw`` on the same
    attributes as a range of the index; ``and`` uses its cheapest indexable term, ``or`` needs
    every term indexable. A plan of more than :data:`MAX_INDEX_TERMS` lookups answers 400
    ``invalidFilter``.
    """
    plan = _plan(node, rtype)
    if plan is not None:
        lookups = plan.lookups
        if lookups > MAX_INDEX_TERMS:
            raise InvalidFilter(
                f"The filter asks for {lookups} index lookups (eq or sw on userName, externalId, emails or "
                f"displayName, and id eq); at most {MAX_INDEX_TERMS} are allowed in one filter."
            )
    return plan


def _plan(node: FilterNode, rtype: ResourceType) -> IndexPlan | None:
    from scim2_models.path import Comparison, LogicalExpr, ValuePath

    if isinstance(node, LogicalExpr):
        plans = [_plan(term, rtype) for term in node.terms]
        if node.op.value == "and":
            return min((p for p in plans if p is not None), key=lambda p: p.lookups, default=None)
        if any(p is None for p in plans):
            return None
        return IndexPlan(
            ids=frozenset().union(*(p.ids for p in plans if p)),
            terms=frozenset().union(*(p.terms for p in plans if p)),
            prefixes=frozenset().union(*(p.prefixes for p in plans if p)),
        )
    if isinstance(node, ValuePath):
        if _foreign_uri(node.attr_path, rtype) or node.attr_path.sub_attr is not None:
            return None
        return _value_path_plan(rtype, node.attr_path.attr.lower(), node.val_filter)
    if not isinstance(node, Comparison) or node.op.value not in ("eq", "sw") or not isinstance(node.value, str):
        return None
    path = node.attr_path
    if _foreign_uri(path, rtype):
        return None
    attr = path.attr.lower()
    if path.sub_attr is None and attr == "id":
        return IndexPlan(ids=frozenset({node.value})) if node.op.value == "eq" else None
    indexed = _indexed(rtype, attr, path.sub_attr)
    if indexed is None:
        return None
    name, case_exact = indexed
    term = frozenset({(name, comparison_key(node.value, case_exact))})
    return IndexPlan(terms=term) if node.op.value == "eq" else IndexPlan(prefixes=term)


def _foreign_uri(path: AttrPath, rtype: ResourceType) -> bool:
    return path.uri is not None and path.uri.lower() != rtype.schema.id.lower()


def _value_path_plan(rtype: ResourceType, attr: str, val_filter: FilterNode) -> IndexPlan | None:
    """``emails[type eq "work" and value eq "x"]`` (Entra's matching by work email): the index of
    an indexed sub-attribute named by an ``eq`` term of the value filter's ``and``."""
    from scim2_models.path import Comparison, LogicalExpr

    terms = val_filter.terms if isinstance(val_filter, LogicalExpr) and val_filter.op.value == "and" else (val_filter,)
    for term in terms:
        if isinstance(term, Comparison) and term.op.value == "eq" and isinstance(term.value, str):
            indexed = _indexed(rtype, attr, term.attr_path.attr.lower())
            if indexed is not None:
                path, case_exact = indexed
                return IndexPlan(terms=frozenset({(path, comparison_key(term.value, case_exact))}))
    return None
