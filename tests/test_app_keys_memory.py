"""The application key contract (``tests/app_key_contract.py``) on
:class:`~scim.store.app_keys_memory.MemoryAppKeyRegistry`, and the ``app-key`` commands' output
and refusals (:mod:`scim.admin.app_keys`) without storage."""

from __future__ import annotations

import json
from typing import Any

import pytest

from scim.admin import __main__ as cli
from scim.admin import app_keys as commands
from scim.app_keys import KEY_PREFIX, AppKeyExists, AppKeyNotFound
from scim.store.app_keys_memory import MemoryAppKeyRegistry
from tests.app_key_contract import KEY_SHAPE, AppKeyRegistryContract


class TestMemoryAppKeyRegistry(AppKeyRegistryContract):
    @pytest.fixture
    def registry(self) -> MemoryAppKeyRegistry:
        return MemoryAppKeyRegistry()

    async def stored_text(self, registry: Any) -> str:
        return repr(vars(registry))


async def _run(keys: MemoryAppKeyRegistry, *argv: str) -> int:
    return await commands.run(cli._parser().parse_args(["app-key", *argv]), keys, "https://scim.example.com")


async def test_the_commands_print_the_key_once_and_list_and_revoke(capsys: pytest.CaptureFixture[str]) -> None:
    keys = MemoryAppKeyRegistry()
    assert await _run(keys, "create", "reporting") == 0
    out, err = capsys.readouterr()
    key = out.strip().removeprefix("Application key reporting: ")
    assert KEY_SHAPE.match(key), out
    assert await keys.authenticate(key) == "reporting"
    assert "will not be shown again" in err and "SHA-256" in err
    assert "https://scim.example.com/api/v1/tenants/{tenant}/events" in err and "not for Entra" in err

    assert await _run(keys, "create", "billing", "--json") == 0
    out, _ = capsys.readouterr()
    created = json.loads(out)
    assert set(created) == {"name", "key"} and created["name"] == "billing"
    assert created["key"].startswith(KEY_PREFIX) and await keys.authenticate(created["key"]) == "billing"

    assert await _run(keys, "list") == 0
    out, _ = capsys.readouterr()
    assert [line.split("\t")[0] for line in out.splitlines()] == ["billing", "reporting"]
    assert key not in out and created["key"] not in out
    assert await _run(keys, "list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [k["name"] for k in listed] == ["billing", "reporting"] and all(
        set(k) == {"name", "created"} for k in listed
    )

    assert await _run(keys, "revoke", "reporting", "--yes") == 0
    assert "Revoked application key reporting" in capsys.readouterr().out
    assert await keys.authenticate(key) is None
    with pytest.raises(AppKeyNotFound):
        await _run(keys, "revoke", "reporting", "--yes")
    with pytest.raises(AppKeyExists):
        await _run(keys, "create", "billing")
    await keys.revoke("billing")
    assert await _run(keys, "list") == 0
    out, err = capsys.readouterr()
    assert out == "" and "no application keys" in err


def test_revoke_without_a_terminal_needs_yes_and_names_are_checked_first(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused before any storage I/O (no storage is configured to be reached here)."""

    def no_storage(*_: Any) -> Any:
        raise AssertionError("storage was opened")

    monkeypatch.setattr(commands, "open_registry", no_storage)
    monkeypatch.setattr("sys.stdin", None)
    assert cli.main(["app-key", "revoke", "reporting"]) == 1
    assert "pass --yes" in capsys.readouterr().err
    assert cli.main(["app-key", "create", "Not Valid"]) == 1
    assert "invalid application key name" in capsys.readouterr().err
    assert cli.main(["app-key", "revoke", "dev\n", "--yes"]) == 1
    assert "invalid application key name" in capsys.readouterr().err


def test_revoke_on_a_terminal_asks_for_the_name(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Terminal:
        def __init__(self, answer: str) -> None:
            self.answer = answer

        def isatty(self) -> bool:
            return True

        def readline(self) -> str:
            return self.answer

    monkeypatch.setattr("sys.stdin", Terminal("other\n"))
    assert commands.confirm_revoke("reporting") == "the name typed does not match; nothing was revoked"
    assert "Type the key name to confirm" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", Terminal("reporting\n"))
    assert commands.confirm_revoke("reporting") is None
