"""Reading attribute values the way Entra sends them (ENTRA.md §3, §4), against the schema.

Entra and other clients send attribute names in any case (``UserName``, ``Primary``),
booleans as strings (``"True"``), ``null`` for "absent", empty ``roles: []``, manager as a
bare id and roles as JSON serialised into strings. These functions turn such values into
the canonical form the service stores: canonical attribute names, JSON booleans, no nulls,
no empty containers. Values themselves (strings) are kept exactly as sent: Entra compares
what it reads with what it would write (ENTRA.md §4, last point).
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

from .errors import InvalidValue
from .schema import ENTERPRISE_USER_URN, Attribute

__all__ = ["comparison_key", "is_empty", "normalize_value", "parse_bool"]

_TRUE = "true"
_FALSE = "false"


def comparison_key(value: str, case_exact: bool) -> str:
    """The form under which a string is compared: NFC, and lowercased unless ``caseExact``.

    RFC 7643 §2.2: ``caseExact=false`` attributes (``userName``, ``emails.value``,
    ``displayName``) compare case-insensitively.
    """
    normalized = unicodedata.normalize("NFC", value)
    return normalized if case_exact else unicodedata.normalize("NFC", normalized.lower())


def parse_bool(value: Any, where: str) -> bool:
    """A JSON boolean, or Entra's ``"True"``/``"False"`` strings (ENTRA.md §3, §4)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in (_TRUE, _FALSE):
        return value.strip().lower() == _TRUE
    raise InvalidValue(f"{where} must be a boolean (true or false), not {json.dumps(value)[:80]}.")


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
        raise InvalidValue(f"{where} must be a string, not {json.dumps(value)[:80]}.")
    return value


def _normalize_complex(attribute: Attribute, value: Any, where: str) -> dict[str, Any] | None:
    if isinstance(value, str) and attribute.multi_valued:
        # Entra serialises app-role objects into strings inside PATCH values (ENTRA.md §4).
        decoded = _json_object(value)
        value = decoded if decoded is not None else {"value": value}
    if not isinstance(value, dict):
        raise InvalidValue(f"{where} must be an object, not {json.dumps(value)[:80]}.")
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
    ``manager`` accepts Entra's bare id string (ENTRA.md §4) and ``""`` as "no manager".
    """
    where = attribute.name
    if is_empty(value):
        return None
    if urn == ENTERPRISE_USER_URN and attribute.name == "manager":
        # Entra sends a bare id (ENTRA.md §4); $ref and displayName are the server's to compute.
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
