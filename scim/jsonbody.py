"""Reading request bodies as JSON, cheaply refusing hostile input (RFC 7644 §3.1, §3.12).

Refused with 400 ``invalidSyntax``: malformed JSON, duplicate keys in one object (which
would let two readers see different values), nesting deeper than :data:`MAX_DEPTH`, and
numbers longer than :data:`MAX_NUMBER_DIGITS` digits (Python parses huge integers in
quadratic time). The size limit (413) is checked by the caller before parsing.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import InvalidSyntax

__all__ = ["MAX_DEPTH", "MAX_NUMBER_DIGITS", "parse_json"]

MAX_DEPTH = 32
MAX_NUMBER_DIGITS = 100


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidSyntax(f"The JSON object has the key {key[:100]!r} twice.")
        result[key] = value
    return result


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise InvalidSyntax(f"A number in the body has more than {MAX_NUMBER_DIGITS} digits.")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_DIGITS:
        raise InvalidSyntax(f"A number in the body has more than {MAX_NUMBER_DIGITS} characters.")
    return float(text)


def _depth_ok(raw: str) -> bool:
    """Check nesting depth in one linear pass, before the recursive parser sees the text."""
    depth = 0
    in_string = False
    escaped = False
    for char in raw:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return False
        elif char in "]}":
            depth -= 1
    return True


def parse_json(body: bytes) -> Any:
    """Decode a UTF-8 JSON request body (a BOM is tolerated)."""
    if not body or not body.strip():
        raise InvalidSyntax("The request needs a JSON body.")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidSyntax("The request body is not valid UTF-8.") from None
    if not _depth_ok(text):
        raise InvalidSyntax(f"The JSON body nests deeper than {MAX_DEPTH} levels.")
    try:
        return json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_reject_constant,
        )
    except InvalidSyntax:
        raise
    except (ValueError, RecursionError) as exc:
        raise InvalidSyntax(f"The request body is not valid JSON: {exc}") from None


def _reject_constant(name: str) -> Any:
    raise InvalidSyntax(f"{name} is not valid JSON.")
