"""``attributes`` and ``excludedAttributes`` (RFC 7644 §3.4.2.5, §3.9).

Entra sends ``excludedAttributes=members`` on every group lookup (docs/ENTRA.md §2); the
service uses :func:`wants` to skip reading members entirely when they are not returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scim.core.errors import TooMany
from scim.core.schema import ResourceType

__all__ = ["MAX_ATTRIBUTE_NAMES", "Projection", "parse_projection"]

MAX_ATTRIBUTE_NAMES = 100
"""Most attribute names in ``attributes`` and in ``excludedAttributes`` (each); more answers
400 ``tooMany``.

Projecting a resource costs one step per attribute of the resource and name asked for: a
list of 100,000 names took about 10 ms per resource, 10 s for a page of 1,000. Entra sends
one name (``excludedAttributes=members``), Microsoft's Postman collection at most two, and
a User has about 25 attributes in all.
"""

_ALWAYS = {"id", "schemas"}


@dataclass(frozen=True)
class _Ref:
    container: str | None  # extension URN (lower-cased) or None for core
    attr: str | None  # lower-cased; None = the whole extension
    sub: str | None


def _parse_ref(rtype: ResourceType, text: str) -> _Ref:
    text = text.strip()
    if "[" in text:
        # "emails[type eq \"work\"]" is not RFC 7644 §3.10 notation; project the whole attribute.
        head, _, tail = text.partition("[")
        text = head + tail.partition("]")[2]
    lowered = text.lower()
    if lowered.startswith("urn:"):
        schema = rtype.schema_for_urn(text)
        if schema is not None:
            if schema.id == rtype.schema.id:
                return _Ref(None, None, None)
            return _Ref(schema.id.lower(), None, None)
        prefix, _, rest = text.rpartition(":")
        container = None if prefix.lower() == rtype.schema.id.lower() else prefix.lower()
    else:
        container, rest = None, text
    attr, _, sub = rest.partition(".")
    return _Ref(container, attr.lower(), sub.lower() or None)


@dataclass(frozen=True)
class Projection:
    """Which attributes a response carries."""

    include: tuple[_Ref, ...] = ()
    exclude: tuple[_Ref, ...] = ()

    def wants(self, attribute: str) -> bool:
        """Whether a core attribute (e.g. ``members``) will appear in the response."""
        name = attribute.lower()
        if self.include:
            return any(r.container is None and (r.attr == name or r.attr is None) for r in self.include)
        return not any(r.container is None and r.attr == name and r.sub is None for r in self.exclude)

    def apply(self, resource: dict[str, Any]) -> dict[str, Any]:
        """The resource with only the requested attributes (``id`` and ``schemas`` always stay)."""
        if self.include:
            return self._include(resource)
        if self.exclude:
            return self._exclude(resource)
        return resource

    def _include(self, resource: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in resource.items():
            lowered = key.lower()
            if lowered in _ALWAYS:
                result[key] = value
                continue
            if lowered.startswith("urn:") and isinstance(value, dict):
                refs = [r for r in self.include if r.container == lowered]
                if any(r.attr is None for r in refs) or any(
                    r.container is None and r.attr is None for r in self.include
                ):
                    result[key] = value
                elif refs:
                    kept = _select(value, refs)
                    if kept:
                        result[key] = kept
                continue
            refs = [r for r in self.include if r.container is None and (r.attr == lowered or r.attr is None)]
            if refs:
                kept_value = _select_value(value, refs)
                if kept_value not in (None, [], {}):
                    result[key] = kept_value
        return result

    def _exclude(self, resource: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in resource.items():
            lowered = key.lower()
            if lowered in _ALWAYS:
                result[key] = value
                continue
            if lowered.startswith("urn:") and isinstance(value, dict):
                refs = [r for r in self.exclude if r.container == lowered]
                if any(r.attr is None for r in refs):
                    continue
                kept = {k: v for k, v in value.items() if not any(r.attr == k.lower() and r.sub is None for r in refs)}
                if kept:
                    result[key] = kept
                continue
            refs = [r for r in self.exclude if r.container is None and r.attr == lowered]
            if any(r.sub is None for r in refs):
                continue
            if refs:
                value = _drop_subs(value, {r.sub for r in refs if r.sub})
            result[key] = value
        return result


def _select(container: dict[str, Any], refs: list[_Ref]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key, value in container.items():
        matching = [r for r in refs if r.attr == key.lower()]
        if matching:
            kept[key] = _select_value(value, matching)
    return {k: v for k, v in kept.items() if v not in (None, [], {})}


def _select_value(value: Any, refs: list[_Ref]) -> Any:
    if any(r.sub is None for r in refs):
        return value
    subs = {r.sub for r in refs}
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k.lower() in subs}
    if isinstance(value, list):
        items = [{k: v for k, v in i.items() if k.lower() in subs} if isinstance(i, dict) else i for i in value]
        return [i for i in items if i not in ({}, None)]
    return value


def _drop_subs(value: Any, subs: set[str | None]) -> Any:
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k.lower() not in subs}
    if isinstance(value, list):
        return [{k: v for k, v in i.items() if k.lower() not in subs} if isinstance(i, dict) else i for i in value]
    return value


def parse_projection(rtype: ResourceType, attributes: str | None, excluded: str | None) -> Projection:
    """Read the ``attributes``/``excludedAttributes`` query parameters (comma-separated paths).

    Each may name at most :data:`MAX_ATTRIBUTE_NAMES` attributes (400 ``tooMany``).
    """
    include = tuple(_parse_ref(rtype, part) for part in _names(attributes, "attributes"))
    exclude = tuple(_parse_ref(rtype, part) for part in _names(excluded, "excludedAttributes"))
    return Projection(include=include, exclude=exclude)


def _names(value: str | None, parameter: str) -> list[str]:
    names = [part for part in (value or "").split(",") if part.strip()]
    if len(names) > MAX_ATTRIBUTE_NAMES:
        raise TooMany(
            f"{parameter} names {len(names)} attributes; at most {MAX_ATTRIBUTE_NAMES} are allowed. "
            "Ask for fewer attributes (or for all of them, without the parameter)."
        )
    return names
