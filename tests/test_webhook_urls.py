"""Which webhook URLs are accepted (:mod:`scim.webhooks.urls`, SSRF protection): table-driven, on
the pure check with given addresses, and through the resolver wrapper with a fake resolver."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from scim.webhooks.urls import (
    IPAddress,
    UnsafeWebhookUrl,
    address_refusal,
    check_target,
    check_url,
    parse_webhook_url,
    resolve,
)

PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"

# (address, refused in Azure because ..., allowed locally)
ADDRESSES = [
    (PUBLIC_V4, None, True),
    (PUBLIC_V6, None, True),
    ("127.0.0.1", "loopback", True),
    ("127.3.2.1", "loopback", True),
    ("::1", "loopback", True),
    ("::ffff:127.0.0.1", "loopback", True),
    ("10.0.0.5", "private", False),
    ("172.16.9.1", "private", False),
    ("192.168.1.1", "private", False),
    ("::ffff:10.0.0.5", "private", False),
    ("::ffff:192.168.1.1", "private", False),
    ("64:ff9b::a00:5", "private", False),  # NAT64 of 10.0.0.5
    ("2002:a00:5::", "private", False),  # 6to4 of 10.0.0.5
    ("169.254.169.254", "instance metadata endpoint", False),
    ("169.254.1.1", "link-local", False),
    ("::ffff:169.254.169.254", "instance metadata endpoint", False),
    ("fe80::1", "link-local", False),
    ("fc00::1", "unique-local", False),
    ("fd12:3456:789a::1", "unique-local", False),
    ("224.0.0.1", "multicast", False),
    ("239.255.255.250", "multicast", False),
    ("ff02::1", "multicast", False),
    ("0.0.0.0", "unspecified", False),
    ("::", "unspecified", False),
    ("100.64.0.1", "not a public address", False),
    ("192.0.2.1", "address", False),  # documentation
    ("240.0.0.1", "address", False),  # reserved
    ("168.63.129.16", "wire server", False),
]


@pytest.mark.parametrize(("address", "why", "local_ok"), ADDRESSES)
def test_addresses(address: str, why: str | None, local_ok: bool) -> None:
    in_azure = address_refusal(address, in_azure=True)
    assert (in_azure is None) == (why is None), in_azure
    if why is not None:
        assert in_azure is not None and why in in_azure and str(ipaddress.ip_address(address)) in in_azure
    assert (address_refusal(address, in_azure=False) is None) == local_ok


# (url, the addresses its host resolves to, refused in Azure because ... / None, refused locally because ... / None)
URLS: list[tuple[str, list[str], str | None, str | None]] = [
    ("https://hooks.example.com/scim", [PUBLIC_V4], None, None),
    ("https://hooks.example.com:8443/scim?x=1", [PUBLIC_V4, PUBLIC_V6], None, None),
    (f"https://{PUBLIC_V4}/hook", [], None, None),
    (f"https://[{PUBLIC_V6}]/hook", [], None, None),
    ("http://hooks.example.com/scim", [PUBLIC_V4], "only https://", "except http:// to this machine"),
    ("http://127.0.0.1:8080/hook", [], "only https://", None),
    ("https://127.0.0.1:8443/hook", [], "loopback", None),
    ("http://localhost:8080/hook", ["127.0.0.1", "::1"], "localhost is this machine", None),
    ("http://LOCALHOST./hook", ["127.0.0.1"], "localhost is this machine", None),
    ("http://[::1]:8080/hook", [], "only https://", None),
    ("https://[::1]/hook", [], "loopback", None),
    ("https://[::ffff:127.0.0.1]/hook", [], "loopback", None),
    ("https://[::ffff:7f00:1]/hook", [], "loopback", None),
    ("https://2130706433/hook", [], "loopback", None),  # decimal 127.0.0.1
    ("https://0177.0.0.1/hook", [], "loopback", None),  # octal
    ("https://0x7f.1/hook", [], "loopback", None),  # hex, two parts
    ("https://127.1/hook", [], "loopback", None),  # short form
    ("https://0x0a000005/hook", [], "private", "private"),  # hex 10.0.0.5
    ("https://169.254.169.254/metadata/instance", [], "metadata", "metadata"),
    ("https://2852039166/latest/meta-data", [], "metadata", "metadata"),  # decimal 169.254.169.254
    ("https://[fe80::1%25eth0]/hook", [], "link-local", "link-local"),
    ("https://[fd00:ec2::254]/hook", [], "unique-local", "unique-local"),
    ("https://0.0.0.0/hook", [], "unspecified", "unspecified"),
    ("https://[::]/hook", [], "unspecified", "unspecified"),
    ("https://224.0.0.1/hook", [], "multicast", "multicast"),
    # A public name with one private address among its answers is refused: every address counts.
    ("https://mixed.example.com/hook", [PUBLIC_V4, "10.1.2.3"], "10.1.2.3 is a private", "private"),
    ("https://rebind.example.com/hook", ["127.0.0.1"], "loopback", None),  # locally: this machine
    ("https://internal.example.com/hook", ["192.168.0.10"], "resolves to 192.168.0.10", "private"),
    ("https://nothing.example.com/hook", [], "resolves to no address", "resolves to no address"),
    ("http://mixed-local.example.com/hook", ["127.0.0.1", PUBLIC_V4], "only https://", "except http://"),
]


def _resolver(addresses: list[str]) -> Any:
    async def resolve(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(a) for a in addresses]

    return resolve


@pytest.mark.parametrize(("url", "addresses", "azure_why", "local_why"), URLS)
async def test_urls(url: str, addresses: list[str], azure_why: str | None, local_why: str | None) -> None:
    target = parse_webhook_url(url)
    resolved = addresses if target.literal is None else [str(target.literal)]
    for in_azure, why in ((True, azure_why), (False, local_why)):
        if why is None:
            check_target(target, resolved, in_azure=in_azure)
            checked, found = await check_url(url, in_azure=in_azure, resolver=_resolver(addresses))
            assert checked == target and [str(a) for a in found] == resolved
        else:
            with pytest.raises(UnsafeWebhookUrl, match=f"refused webhook URL .*{why}") as raised:
                check_target(target, resolved, in_azure=in_azure)
            assert raised.value.url == url
            with pytest.raises(UnsafeWebhookUrl, match=why):
                await check_url(url, in_azure=in_azure, resolver=_resolver(addresses))


def test_the_error_says_what_and_why() -> None:
    with pytest.raises(UnsafeWebhookUrl) as raised:
        check_target(parse_webhook_url("https://hooks.example.com/x"), ["169.254.169.254"], in_azure=True)
    assert str(raised.value) == (
        "refused webhook URL 'https://hooks.example.com/x': hooks.example.com resolves to 169.254.169.254 is a "
        "link-local address (the cloud's instance metadata endpoint); webhooks are sent to public addresses only "
        "(SSRF protection)"
    )


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("", "required"),
        ("hooks.example.com/scim", "starts with https://"),
        ("ftp://hooks.example.com/", "starts with https://"),
        ("file:///etc/passwd", "starts with https://"),
        ("gopher://127.0.0.1:25/", "starts with https://"),
        ("https://", "names no host"),
        ("https:///path", "names no host"),
        ("https://user:secret@hooks.example.com/", "credentials"),
        ("https://hooks.example.com@10.0.0.1/", "credentials"),
        ("https://hooks.example.com/#frag", "fragment"),
        ("https://hooks.example.com/ x", "spaces or control"),
        ("https://hooks.example.com/\nHost: evil", "spaces or control"),
        ("https://hooks.example.com:99999/", "not a valid URL"),
        ("https://hooks.example.com:0/", "port 0"),
        ("https://bücher.example/", "xn--"),
        ("https://hooks_example.com/", "ASCII letters"),
        ("https://hooks.example.com/" + "a" * 2100, "longer than 2048"),
    ],
)
def test_urls_of_no_usable_form(url: str, why: str) -> None:
    with pytest.raises(UnsafeWebhookUrl, match=why):
        parse_webhook_url(url)


def test_parsing() -> None:
    target = parse_webhook_url("HTTPS://Hooks.Example.COM/Path")
    assert (target.scheme, target.host, target.port, target.literal) == ("https", "hooks.example.com", 443, None)
    assert parse_webhook_url("http://127.0.0.1/").port == 80
    assert parse_webhook_url("https://[::1]:8443/").literal == ipaddress.ip_address("::1")
    assert parse_webhook_url("https://2130706433/").literal == ipaddress.ip_address("127.0.0.1")
    assert parse_webhook_url("https://1.2.3.4.5/").literal is None  # a name, resolved (and refused if it fails)


async def test_the_resolver_wrapper() -> None:
    assert {str(a) for a in await resolve("localhost", 80)} == {"127.0.0.1", "::1"}
    assert [str(a) for a in await resolve("127.0.0.1", 80)] == ["127.0.0.1"]  # a literal, no DNS
    with pytest.raises(UnsafeWebhookUrl, match="does not resolve"):
        await check_url("https://does-not-exist.invalid/hook", in_azure=True)
    target, found = await check_url("http://localhost:8080/hook", in_azure=False)
    assert target.host == "localhost" and found
