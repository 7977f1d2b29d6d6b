"""Reading request bodies as JSON, cheaply refusing hostile input (RFC 7644 §3.1, §3.12).

Refused with 400 ``invalidSyntax``:

- malformed JSON, or a body that is not UTF-8 (RFC 7644 §3.1, RFC 8259 §8.1);
- duplicate keys in one object, which would let two readers see different values
  (RFC 8259 §4 leaves them unpredictable; I-JSON, RFC 7493 §2.3, forbids them);
- nesting deeper than :data:`MAX_DEPTH`, or more than :data:`MAX_CONTAINERS` arrays and
  objects, checked on the bytes before the recursive parser runs (a 1 MiB ``[[[[…`` body
  costs a few milliseconds);
- numbers longer than :data:`MAX_NUMBER_DIGITS` characters (Python converts huge integers in
  quadratic time);
- strings holding an unpaired UTF-16 surrogate (``"\\ud800"``): they cannot be encoded as
  UTF-8, so such a value could be stored but never returned (I-JSON, RFC 7493 §2.1).

Refused with 400 ``invalidValue``: a number outside the range of an IEEE 754 double
(``1e999``), which would otherwise be stored as infinity and rendered as invalid JSON
(I-JSON, RFC 7493 §2.2).

The size limit (413) is checked by the caller before parsing.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from scim.core.errors import InvalidSyntax, InvalidValue

__all__ = ["MAX_CONTAINERS", "MAX_DEPTH", "MAX_NUMBER_DIGITS", "parse_json"]

MAX_DEPTH = 32
"""Deepest nesting of arrays and objects in a request body (a SCIM document needs 4)."""

MAX_NUMBER_DIGITS = 100
"""Longest number in a request body, in characters."""

MAX_CONTAINERS = 25_000
"""Most arrays and objects in one request body. A PATCH naming the 1,000 members a request
may carry holds about 1,000; a million tiny arrays would cost the parser about a second."""

_BRACKETS_AS_SQUARE = bytes.maketrans(b"{}", b"[]")
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'[]{}"')))
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_TOO_MANY_DIGITS = b"0" * (MAX_NUMBER_DIGITS + 1)
_TOO_MANY_OPENERS = b"[" * (MAX_DEPTH + 1)
# Only a \uD800-\uDFFF escape can put a surrogate into a string decoded from valid UTF-8.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)  # in C; only a duplicate makes the sizes differ
    if len(result) != len(pairs):
        seen: set[str] = set()
        key = ""
        for key, _ in pairs:
            if key in seen:
                break
            seen.add(key)
        raise InvalidSyntax(f"The JSON object has the key {key[:100]!r} twice.")
    return result


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise InvalidSyntax(f"A number in the body has more than {MAX_NUMBER_DIGITS} digits.")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_DIGITS:
        raise InvalidSyntax(f"A number in the body has more than {MAX_NUMBER_DIGITS} characters.")
    value = float(text)
    if not math.isfinite(value):
        raise InvalidValue(f"The number {text[:40]} is out of range (RFC 7493 §2.2: IEEE 754 double precision).")
    return value


def _structure_problem(body: bytes) -> str | None:
    """Why the body nests too deeply or holds too many arrays and objects, checked in C before parsing.

    On the UTF-8 bytes (a multi-byte character never contains an ASCII byte): escaped
    backslashes and quotes are dropped, so every remaining ``"`` delimits a string; every
    byte but brackets and quotes is deleted, ``{``/``}`` written as ``[``/``]`` (only depth
    matters: mismatched kinds are invalid JSON, left to the parser). Adjacent quotes ``""``
    are dropped (an empty string, or two strings with no bracket between them: parity is
    kept), and only if quotes remain (a string holding a bracket) are strings cut out by
    splitting. What is left has one ``[`` per array or object. ``MAX_DEPTH + 1`` openers in a
    row mean too deep; otherwise each pass removes every innermost ``[]``, so a document of
    depth *d* vanishes in exactly *d* passes, and a pair left after :data:`MAX_DEPTH` passes
    means it nests deeper. Every step is a built-in bytes operation: no Python loop per
    character or per node (a few milliseconds for 1 MiB).
    """
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = unescaped.translate(_BRACKETS_AS_SQUARE, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in brackets:
        brackets = b"".join(brackets.split(b'"')[::2])
    too_deep = f"The JSON body nests deeper than {MAX_DEPTH} levels."
    if _TOO_MANY_OPENERS in brackets:
        return too_deep
    if brackets.count(b"[") > MAX_CONTAINERS:
        return f"The JSON body holds more than {MAX_CONTAINERS} arrays and objects."
    for _ in range(MAX_DEPTH):
        reduced = brackets.replace(b"[]", b"")
        if len(reduced) == len(brackets):
            return None  # nothing left to pair (balanced: empty; unbalanced: the parser says so)
        brackets = reduced
    return too_deep if b"[]" in brackets else None


def _depth_ok(body: bytes) -> bool:
    """Whether the body nests at most :data:`MAX_DEPTH` levels (see :func:`_structure_problem`)."""
    problem = _structure_problem(body)
    return problem is None or "deeper" not in problem


def _has_long_number(body: bytes) -> bool:
    """Whether more than :data:`MAX_NUMBER_DIGITS` digits stand in a row (in C; strings included).

    Only then does the parser need the (slower) per-number hook that finds the culprit; a
    long digit run inside a string is harmless and passes that exact check.
    """
    return _TOO_MANY_DIGITS in body.translate(_DIGITS_AS_ZERO)


def _check_unicode(value: Any) -> None:
    """Refuse unpaired surrogates: re-encoding as UTF-8 fails on exactly those (runs in C)."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidSyntax(
            "A string in the body holds an unpaired UTF-16 surrogate (\\uD800-\\uDFFF), which is not valid Unicode."
        ) from None


def parse_json(body: bytes) -> Any:
    """Decode a UTF-8 JSON request body (a BOM is tolerated)."""
    if not body or not body.strip():
        raise InvalidSyntax("The request needs a JSON body.")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidSyntax("The request body is not valid UTF-8.") from None
    problem = _structure_problem(body)
    if problem is not None:
        raise InvalidSyntax(problem)
    try:
        parsed = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_int=_parse_int if _has_long_number(body) else None,
            parse_float=_parse_float,
            parse_constant=_reject_constant,
        )
    except (InvalidSyntax, InvalidValue):
        raise
    except RecursionError:
        raise InvalidSyntax(f"The JSON body nests deeper than {MAX_DEPTH} levels.") from None
    except ValueError as exc:
        raise InvalidSyntax(f"The request body is not valid JSON: {exc}") from None
    if _SURROGATE_ESCAPE.search(text):
        _check_unicode(parsed)
    return parsed


def _reject_constant(name: str) -> Any:
    raise InvalidSyntax(f"{name} is not valid JSON.")
