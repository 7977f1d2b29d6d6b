"""Text from SCIM requests, made safe to print on the operator's terminal."""

from __future__ import annotations

import re

__all__ = ["printable"]

# C0 controls, DEL, C1 controls, and the Unicode line/paragraph separators and bidi controls,
# which can move the cursor, clear the screen, or reorder what the operator reads.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(value: object) -> str:
    """``value`` as text safe to print on a terminal: control characters as ``\\xNN``/``\\uNNNN``."""
    return _UNSAFE.sub(_escaped, "" if value is None else str(value))
