"""The layout of the test suite (issue #11): test modules never import each other.

Helpers shared by several test modules live in shared modules (``tests/helpers.py``,
``tests/functions_client.py``, ``tests/scim_fixtures.py``, ...); fixtures shared by several
test modules live in ``tests/scim_fixtures.py`` or ``tests/conftest.py``. A test module that
imports another runs the other's import-time code and couples the two for no reason.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

TESTS = Path(__file__).parent
TEST_MODULES = frozenset(p.stem for p in TESTS.glob("test_*.py"))


def imported_test_modules(tree: ast.AST, test_modules: frozenset[str] = TEST_MODULES) -> Iterator[tuple[int, str]]:
    """(line, module) for every import of one of ``test_modules`` (``tests/test_*.py``), at any depth of ``tree``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if (node.level == 0 and module == "tests") or (node.level == 1 and not module):
                names = [alias.name for alias in node.names]  # from tests import test_x / from . import test_x
            else:
                names = [module.removeprefix("tests.") if node.level == 0 else module]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names = [node.args[0].value.removeprefix("tests.")]
        else:
            continue
        for name in names:
            head = name.removeprefix("tests.").split(".")[0]
            if head in test_modules:
                yield node.lineno, f"tests.{head}"


def test_the_detector_sees_every_form_of_import():
    # ``{t}`` stands for the module ``tests.test_a`` (spelled out, a grep for such imports would find these lines).
    source = "\n".join(
        [
            "from {t} import x",
            "import {t}",
            "from tests import test_a",
            "from .test_a import x",
            "from . import test_a",
            "def f():",
            "    from {t} import y",
            "importlib.import_module('{t}')",
            "from tests.helpers import x",
            "from tests import helpers",
            "import tests.functions_client",
        ]
    ).format(t="tests." + "test_a")
    found = sorted(line for line, _ in imported_test_modules(ast.parse(source), frozenset({"test_a"})))
    assert found == [1, 2, 3, 4, 5, 7, 8]


def test_no_module_of_the_suite_imports_a_test_module():
    offending = [
        f"{path.relative_to(TESTS.parent)}:{line} imports {module}"
        for path in sorted(TESTS.glob("*.py"))
        for line, module in imported_test_modules(ast.parse(path.read_text(), filename=str(path)))
    ]
    assert offending == [], "test modules must import shared helpers from tests/helpers.py:\n" + "\n".join(offending)
