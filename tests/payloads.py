"""Loads request payloads named after their origin (``entra-…`` from Entra's documented traffic)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PAYLOADS = Path(__file__).parent / "payloads"


def payload(name: str, **substitutions: str) -> Any:
    """The payload ``name`` with placeholders (``USER_ID``, ``MANAGER_ID``) replaced."""
    text = (PAYLOADS / name).read_text()
    for key, value in substitutions.items():
        text = text.replace(key, value)
    return json.loads(text)
