"""The webhook endpoint contract (``tests/webhook_contract.py``) on
:class:`~scim.store.webhooks_memory.MemoryWebhookRegistry`, and the ``webhook`` commands' output
and refusals (:mod:`scim.admin.webhooks`) without storage."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from scim.admin import __main__ as cli
from scim.admin import webhooks as commands
from scim.store.webhooks_memory import MemoryWebhookRegistry
from scim.webhooks import WebhookNotFound
from scim.webhooks.urls import IPAddress, UnsafeWebhookUrl
from tests.webhook_contract import ID_SHAPE, SECRET_SHAPE, WebhookRegistryContract


class TestMemoryWebhookRegistry(WebhookRegistryContract):
    @pytest.fixture
    def registry(self) -> MemoryWebhookRegistry:
        return MemoryWebhookRegistry()


def _resolver(*addresses: str) -> Any:
    async def resolve(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(a) for a in addresses]

    return resolve


async def _run(hooks: MemoryWebhookRegistry, *argv: str, in_azure: bool = False, resolver: Any = None) -> int:
    args = cli._parser().parse_args(["webhook", *argv])
    assert commands.precheck(args) is None
    return await commands.run(args, hooks, in_azure=in_azure, resolver=resolver or _resolver("93.184.215.14"))


async def test_add_prints_the_secret_once_and_list_never(capsys: pytest.CaptureFixture[str]) -> None:
    hooks = MemoryWebhookRegistry()
    assert await _run(hooks, "add", "https://hooks.example.com/scim") == 0
    out, err = capsys.readouterr()
    first_line, second_line = out.splitlines()
    endpoint_id = first_line.removeprefix("Webhook endpoint ").removesuffix(": https://hooks.example.com/scim")
    secret = second_line.removeprefix("Signing secret: ")
    assert ID_SHAPE.match(endpoint_id) and SECRET_SHAPE.match(secret), out
    assert (await hooks.get(endpoint_id)).secret == secret
    assert "shown once" in err and "from standardwebhooks import Webhook" in err and ".verify(" in err
    assert "Events committed from now on are delivered" in err

    assert (
        await _run(
            hooks, "add", "https://b.example.com/", "--tenant", "contoso", "--events", "user.created,user.deleted"
        )
        == 0
    )
    out, _ = capsys.readouterr()
    assert await _run(hooks, "add", "https://c.example.com/", "--events", "group.created", "--json") == 0
    created = json.loads(capsys.readouterr().out)
    assert set(created) == {"id", "url", "secret"} and created["url"] == "https://c.example.com/"
    assert (await hooks.get(created["id"])).events == ("group.created",)

    assert await _run(hooks, "list") == 0
    out, _ = capsys.readouterr()
    assert secret not in out and created["secret"] not in out and "whsec_" not in out
    lines = out.splitlines()
    assert len(lines) == 3 and lines[0].startswith(endpoint_id + "\thttps://hooks.example.com/scim\tenabled")
    assert "tenants contoso\tevents user.created,user.deleted" in lines[1]
    assert "tenants all\tevents all" in lines[0] and "last success never" in lines[0]
    assert await _run(hooks, "list", "--json") == 0
    out = capsys.readouterr().out
    listed = json.loads(out)
    assert "whsec_" not in out and listed[0]["id"] == endpoint_id
    assert listed[1]["tenants"] == ["contoso"] and listed[0]["tenants"] is None and listed[0]["state"] == "enabled"
    assert {"last_success", "last_error", "disabled_reason", "created", "events", "url"} <= set(listed[0])


async def test_rotate_and_remove(capsys: pytest.CaptureFixture[str]) -> None:
    hooks = MemoryWebhookRegistry()
    endpoint_id, first = await hooks.add("https://hooks.example.com/")
    assert await _run(hooks, "rotate-secret", endpoint_id, "--json") == 0
    rotated = json.loads(capsys.readouterr().out)
    assert set(rotated) == {"id", "secret", "previous_until"} and SECRET_SHAPE.match(rotated["secret"])
    endpoint = await hooks.get(endpoint_id)
    assert endpoint.signing_secrets() == [rotated["secret"], first]
    assert endpoint.previous_secret_until == rotated["previous_until"]
    assert await _run(hooks, "rotate-secret", endpoint_id) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"New signing secret for {endpoint_id}: whsec_") and "both the new and the previous" in err

    assert await _run(hooks, "remove", endpoint_id, "--yes") == 0
    assert f"Removed webhook endpoint {endpoint_id}" in capsys.readouterr().out
    assert await hooks.list() == []
    with pytest.raises(WebhookNotFound):
        await _run(hooks, "remove", endpoint_id, "--yes")


async def test_add_applies_the_url_policy_before_storing(capsys: pytest.CaptureFixture[str]) -> None:
    hooks = MemoryWebhookRegistry()
    with pytest.raises(UnsafeWebhookUrl, match=r"10\.0\.0\.5 is a private address"):
        await _run(hooks, "add", "https://internal.example.com/", in_azure=True, resolver=_resolver("10.0.0.5"))
    with pytest.raises(UnsafeWebhookUrl, match="in Azure only https://"):
        await _run(hooks, "add", "http://127.0.0.1:8080/hook", in_azure=True)
    assert await hooks.list() == []
    assert await _run(hooks, "add", "http://127.0.0.1:8080/hook", "--json") == 0  # locally: this machine
    assert json.loads(capsys.readouterr().out)["url"] == "http://127.0.0.1:8080/hook"


def test_refusals_come_before_any_storage_or_dns(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_storage(*_: Any) -> Any:
        raise AssertionError("storage was opened")

    monkeypatch.setattr(commands, "open_registry", no_storage)
    monkeypatch.setattr("sys.stdin", None)
    some_id = "ep_" + "a" * 32
    for argv, expected in (
        (["remove", some_id], "pass --yes"),
        (["remove", "nope", "--yes"], "no webhook endpoint 'nope'"),
        (["rotate-secret", "ep_x"], "no webhook endpoint 'ep_x'"),
        (["add", "ftp://example.com/"], "refused webhook URL 'ftp://example.com/'"),
        (["add", "https://example.com/", "--tenant", "Not Valid"], "invalid tenant name"),
        (
            ["add", "https://example.com/", "--events", "user.created,user.exploded"],
            "unknown event type 'user.exploded'",
        ),
    ):
        assert cli.main(["webhook", *argv]) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expected in err, (argv, err)


def test_remove_on_a_terminal_asks_for_the_id(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Terminal:
        def __init__(self, answer: str) -> None:
            self.answer = answer

        def isatty(self) -> bool:
            return True

        def readline(self) -> str:
            return self.answer

    endpoint_id = "ep_" + "b" * 32
    monkeypatch.setattr("sys.stdin", Terminal("other\n"))
    assert commands.confirm_remove(endpoint_id) == "the id typed does not match; nothing was removed"
    assert "Type the endpoint id to confirm" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", Terminal(endpoint_id + "\n"))
    assert commands.confirm_remove(endpoint_id) is None


def test_the_azure_policy_applies_from_a_machine_working_on_azure_storage() -> None:
    from scim.settings import Settings

    local = Settings.from_env({"SCIM_TABLE_CONNECTION_STRING": "UseDevelopmentStorage=true"})
    remote = Settings.from_env({"SCIM_TABLE_ENDPOINT": "https://acct.table.core.windows.net"})
    in_azure = Settings.from_env(
        {"SCIM_TABLE_ENDPOINT": "https://acct.table.core.windows.net", "WEBSITE_SITE_NAME": "x"}
    )
    assert [commands.azure_policy(s) for s in (local, remote, in_azure)] == [False, True, True]
