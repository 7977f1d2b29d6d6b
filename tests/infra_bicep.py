"""``infra/``'s Bicep as pycep parses it (the parser checkov uses), shared by
``tests/test_infra.py`` and ``tests/test_infra_kql.py``: the parsed files, parameter defaults and
the log search alert rules of ``infra/alerts.bicep`` with their queries as text.

pycep-parser lives in ``.venv-infra`` (``make venv-infra``: its pins conflict with
requirements-dev.txt) and runs as a subprocess, once per session.
"""

from __future__ import annotations

import json
import os
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
INFRA = ROOT / "infra"
TOOLS = ROOT / ".venv-infra"
TOOLS_PYTHON = TOOLS / "bin" / "python"
CHECKOV = TOOLS / "bin" / "checkov"
# pycep caches its parser tables in TMPDIR; make venv-infra builds them there (about a minute).
TOOLS_TMP = TOOLS / "tmp"

# Tables of the Log Analytics workspace that the alert and workbook queries may read.
TABLES = {"AppMetrics", "AppRequests", "AppDependencies", "AppTraces", "AppExceptions"}


def _tool_env() -> dict[str, str]:
    TOOLS_TMP.mkdir(exist_ok=True)
    return {**os.environ, "TMPDIR": str(TOOLS_TMP), "PYTHONDONTWRITEBYTECODE": "1"}


def _require_tools() -> None:
    if not (TOOLS_PYTHON.exists() and CHECKOV.exists()):
        pytest.fail(f"{TOOLS} is missing: run `make venv-infra` (make test does)", pytrace=False)


_PARSE_SCRIPT = """
import json, sys
from pathlib import Path
import pycep
parser = pycep.BicepParser()
out = {}
for name in sys.argv[1:]:
    try:
        out[Path(name).name] = {"json": parser.parse(file_path=Path(name))}
    except Exception as exc:
        out[Path(name).name] = {"error": f"{type(exc).__name__}: {exc}"}
print(json.dumps(out, default=str))
"""


@cache
def parsed_files() -> dict[str, dict[str, Any]]:
    """``{file name: {"json": pycep's JSON} | {"error": message}}`` for every infra/*.bicep."""
    _require_tools()
    files = sorted(str(p) for p in INFRA.glob("*.bicep"))
    done = subprocess.run(
        [str(TOOLS_PYTHON), "-c", _PARSE_SCRIPT, *files],
        capture_output=True,
        text=True,
        env=_tool_env(),
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def bicep(name: str) -> dict[str, Any]:
    entry = parsed_files()[name]
    assert "json" in entry, f"{name}: {entry['error']}"
    return entry["json"]


def param_default(name: str, param: str) -> Any:
    return bicep(name)["parameters"][param]["default"]


def bicep_text(value: str) -> str:
    return value.replace("\\'", "'")


def alert_rules() -> list[dict[str, Any]]:
    """alerts.bicep's rules, each with its query resolved to text."""
    variables = bicep("alerts.bicep")["variables"]
    rules = []
    for rule in variables["rules"]["value"]:
        query = variables[rule["query"]]["value"]
        if isinstance(query, dict):
            query = query["function"]["parameters"]["format_string"]
        rules.append({**rule, "query_text": query})
    return rules
