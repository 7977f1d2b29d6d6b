"""Reading attribute values the way Entra sends them (docs/ENTRA.md §3, §4), against the schema.

Entra and other clients send attribute names in any case (``UserName``, ``Primary``),
booleans as strings (``"True"``), ``null`` for "absent", empty ``roles: []``, manager as a
bare id and roles as JSON serialised into strings. These functions turn such values into
the canonical form the service stores: canonical attribute names, JSON booleans, no nulls,
no empty containers. Values themselves (strings) are kept exactly as sent: Entra compares
what it reads with what it would write (docs/ENTRA.md §4, last point).
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from scim.core.errors import InvalidValue
from scim.core.schema import ENTERPRISE_USER_URN, Attribute

__all__ = [
    "MAX_VALUE_LENGTH",
    "check_values",
    "comparison_key",
    "is_empty",
    "kind_of",
    "normalize_value",
    "parse_bool",
    "utf16_length",
]

_TRUE = "true"
_FALSE = "false"

MAX_VALUE_LENGTH = 32_000
"""Longest string value (or attribute name) a resource may hold, in UTF-16 code units.

Azure Table Storage keeps a string property of at most 64 KiB of UTF-16 (32,768 code units;
learn.microsoft.com, "Understanding the Table service data model"). A resource document is
split over several properties, but a single value longer than one property is refused up
front with 400 ``invalidValue`` (RFC 7644 §3.12) naming the attribute, rather than becoming a
storage error; a group member's ``display`` is stored as one property and needs this bound.
No attribute Entra provisions comes near it (docs/ENTRA.md §3). A character outside the Basic
Multilingual Plane (an emoji) counts as 2, as it does in Table Storage.
"""


def utf16_length(text: str) -> int:
    """The length of ``text`` in UTF-16 code units (what Table Storage limits)."""
    if len(text) * 2 <= MAX_VALUE_LENGTH:
        return len(text)  # cannot exceed the limit even if every character took 2 units
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _too_long(text: str) -> bool:
    return len(text) > MAX_VALUE_LENGTH // 2 and utf16_length(text) > MAX_VALUE_LENGTH


_SURROGATE = re.compile("[\ud800-\udfff]")


def _bad_string(text: str, where: str) -> str | None:
    if _too_long(text):
        return (
            f"{where} is {utf16_length(text)} characters long; "
            f"values may have at most {MAX_VALUE_LENGTH} characters (UTF-16 code units)."
        )
    if _SURROGATE.search(text):
        return f"{where} holds an unpaired UTF-16 surrogate (\\uD800-\\uDFFF), which is not valid Unicode."
    return None


def check_values(value: Any, where: str = "") -> None:
    """Raise InvalidValue unless every string in ``value`` (and every key) can be stored and returned.

    A string may not be longer than :data:`MAX_VALUE_LENGTH`, nor hold an unpaired surrogate:
    request bodies cannot carry one (:mod:`scim.core.jsonbody`), but a filter literal in a PATCH
    path can (``emails[type eq "\\ud800"].value`` creates that entry, docs/ENTRA.md §4), and such a
    value could be stored but never encoded in a response (RFC 8259 §8.1: UTF-8).
    ``where`` names the attribute for the error ``detail``; nested keys are appended to it
    (``name.givenName``, ``emails[].value``), so the client learns which value to fix.
    """
    stack: list[tuple[str, Any, bool]] = [(where, value, False)]
    while stack:
        path, item, extension = stack.pop()
        if isinstance(item, str):
            problem = _bad_string(item, path or "A value")
            if problem:
                raise InvalidValue(problem)
        elif isinstance(item, dict):
            for key, inner in item.items():
                if isinstance(key, str):
                    problem = _bad_string(key, f"An attribute name in {path or 'the resource'}")
                    if problem:
                        raise InvalidValue(problem)
                # An extension's attributes are named urn:…:User:department (RFC 7644 §3.10).
                child = f"{path}{':' if extension else '.'}{key}" if path else str(key)
                stack.append((child, inner, not path and str(key).lower().startswith("urn:")))
        elif isinstance(item, list):
            stack.extend((f"{path}[]", inner, False) for inner in item)


def comparison_key(value: str, case_exact: bool) -> str:
    """The form under which a string is compared: NFC, and lowercased unless ``caseExact``.

    RFC 7643 §2.2: ``caseExact=false`` attributes (``userName``, ``emails.value``,
    ``displayName``) compare case-insensitively.
    """
    normalized = unicodedata.normalize("NFC", value)
    return normalized if case_exact else unicodedata.normalize("NFC", normalized.lower())


def kind_of(value: Any) -> str:
    """The JSON type of ``value`` for an error ``detail`` ("a string", "an array").

    Details name the attribute and what was wrong with its value, never the value itself:
    they are kept in the provisioning log and mailed in failure digests, which hold no
    request body content (README "Provisioning log"); the client knows what it sent.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string" if value else "an empty string"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a value of another type"


def parse_bool(value: Any, where: str) -> bool:
    """A JSON boolean, or Entra's ``"True"``/``"False"`` strings (docs/ENTRA.md §3, §4)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in (_TRUE, _FALSE):
        return value.strip().lower() == _TRUE
    raise InvalidValue(
        f'{where} must be a boolean (true or false, or the string "True" or "False"), not {kind_of(value)}.'
    )


def is_empty(value: Any) -> bool:
    """Whether a value counts as unassigned (RFC 7643 §2.5: null, empty array, empty object)."""
    return value is None or value == [] or value == {} or value == ""


def _canonical_key(attribute: Attribute, key: str) -> tuple[str, Attribute | None]:
    sub = attribute.sub(key)
    return (sub.name, sub) if sub else (key, None)


def _normalize_scalar(attribute: Attribute, value: Any, where: str) -> Any:
    kind = attribute.type
    if kind == "boolean":
        return parse_bool(value, where)
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidValue(f"{where} must be an integer.")
        return value
    if kind == "decimal":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidValue(f"{where} must be a number.")
        return value
    if kind == "complex":
        raise InvalidValue(f"{where} must be an object.")
    if not isinstance(value, str):
        raise InvalidValue(f"{where} must be a string, not {kind_of(value)}.")
    return value


def _normalize_complex(attribute: Attribute, value: Any, where: str) -> dict[str, Any] | None:
    if isinstance(value, str) and attribute.multi_valued:
        # Entra serialises app-role objects into strings inside PATCH values (docs/ENTRA.md §4).
        decoded = _json_object(value)
        value = decoded if decoded is not None else {"value": value}
    if not isinstance(value, dict):
        raise InvalidValue(f"{where} must be an object, not {kind_of(value)}.")
    result: dict[str, Any] = {}
    for key, item in value.items():
        name, sub = _canonical_key(attribute, key)
        if is_empty(item):
            continue
        result[name] = _normalize_scalar(sub, item, f"{where}.{name}") if sub else item
    return result or None


def _json_object(text: str) -> dict[str, Any] | None:
    stripped = text.strip()
    if not stripped.startswith("{"):
        return None
    try:
        decoded = json.loads(stripped)
    except ValueError:
        return None
    return decoded if isinstance(decoded, dict) else None


def normalize_value(attribute: Attribute, value: Any, *, urn: str | None = None) -> Any:
    """The canonical form of ``value`` for ``attribute``, or None if it is unassigned.

    Multi-valued attributes accept a single item as a one-item list. The enterprise
    ``manager`` accepts Entra's bare id string (docs/ENTRA.md §4) and ``""`` as "no manager".
    """
    where = attribute.name
    if is_empty(value):
        return None
    if urn == ENTERPRISE_USER_URN and attribute.name == "manager":
        # Entra sends a bare id (docs/ENTRA.md §4); $ref and displayName are the server's to compute.
        manager_id = value
        if isinstance(value, dict):
            manager_id = next((v for k, v in value.items() if k.lower() == "value"), None)
        if is_empty(manager_id):
            return None
        if not isinstance(manager_id, str):
            raise InvalidValue("manager must be a user id (a string) or an object with a 'value'.")
        return {"value": manager_id}
    if attribute.multi_valued:
        items = value if isinstance(value, list) else [value]
        normalized = [_normalize_item(attribute, item, where) for item in items if not is_empty(item)]
        normalized = [item for item in normalized if item is not None]
        return normalized or None
    if attribute.type == "complex":
        return _normalize_complex(attribute, value, where)
    return _normalize_scalar(attribute, value, where)


def _normalize_item(attribute: Attribute, item: Any, where: str) -> Any:
    if attribute.type == "complex":
        return _normalize_complex(attribute, item, f"{where}[]")
    return _normalize_scalar(attribute, item, f"{where}[]")
