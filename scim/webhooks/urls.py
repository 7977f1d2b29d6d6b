"""Which webhook URLs the service may POST to (server-side request forgery, SSRF).

A webhook URL is chosen by an operator, but the service is what sends the requests, from inside
Azure: a URL naming the instance metadata endpoint (``169.254.169.254``), the Azure platform's
wire server, ``localhost`` or a private network address would make the service call something
only it can reach, with directory data in the body. So:

- **In Azure** (:attr:`scim.settings.Settings.in_azure`) only ``https://`` URLs are accepted,
  and the host must resolve only to **public** addresses: every address it resolves to is
  checked, and one refused address refuses the URL. Refused: private (RFC 1918, 100.64/10 shared
  address space), loopback, link-local (169.254/16 with the metadata endpoint, fe80::/10),
  unique-local (fc00::/7), multicast, unspecified (0.0.0.0, ::), reserved and documentation
  ranges (anything :mod:`ipaddress` does not call global), and Azure's wire server
  ``168.63.129.16``. IPv4 addresses inside IPv6 ones (``::ffff:127.0.0.1``, ``::127.0.0.1``,
  6to4, Teredo) are judged as the IPv4 address they carry.
- **Locally** (not in Azure) the same, except that this machine is allowed, over ``http://`` or
  ``https://``: ``http://127.0.0.1:8080/hook``, ``http://localhost/...``, ``http://[::1]/...``
  (a receiver during development). ``http://`` to anything else is refused there too.

Host names that are IP literals are parsed as the network stack would parse them: besides
``ipaddress``' forms, the legacy ``inet_aton`` ones (``2130706433``, ``0x7f.1``, ``0177.0.0.1``,
``127.1``) are read as the address they name, and judged as such.

:func:`check_target` is pure: it takes the addresses the host resolved to, so the delivery
engine can check them again when it connects (a name may resolve to a public address at
registration and to a private one later: DNS rebinding), and should connect to an address it
checked. :func:`resolve` and :func:`check_url` do the DNS lookup for the CLI.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = [
    "MAX_URL_LENGTH",
    "IPAddress",
    "UnsafeWebhookUrl",
    "WebhookTarget",
    "address_refusal",
    "check_target",
    "check_url",
    "parse_webhook_url",
    "resolve",
    "url_origin",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_URL_LENGTH = 2048
"""Longest webhook URL accepted."""
AZURE_WIRE_SERVER = ipaddress.IPv4Address("168.63.129.16")
"""Azure's platform address (DNS, health probes, the VM agent): public in form, internal in use."""
_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})
_INET_ATON_PART = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_HOST_CHARS = re.compile(r"[A-Za-z0-9.-]+")


class UnsafeWebhookUrl(ValueError):
    """A URL the service will not send webhooks to; ``str()`` says which URL and why."""

    def __init__(self, url: str, why: str) -> None:
        super().__init__(f"refused webhook URL {url!r}: {why}")
        self.url = url
        self.why = why


@dataclass(frozen=True)
class WebhookTarget:
    """A URL taken apart: ``scheme`` (``http``/``https``), ``host`` (lower case, IPv6 without
    brackets), ``port`` (explicit or the scheme's), and ``literal`` when the host is an IP
    address (in any form the network stack reads)."""

    url: str
    scheme: str
    host: str
    port: int
    literal: IPAddress | None


def _inet_aton(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address the C library's ``inet_aton`` reads in ``host`` (1 to 4 parts, decimal,
    octal with a leading 0, hex with 0x), or None if it is not such a literal."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_INET_ATON_PART.fullmatch(p) and p.lower() != "0x" for p in parts):
        return None
    values = [int(p[2:], 16) if p[:2].lower() == "0x" else int(p, 8) if p[:1] == "0" else int(p) for p in parts]
    *leading, last = values
    if any(v > 255 for v in leading) or last >= 256 ** (5 - len(parts)):
        return None
    number = 0
    for v in leading:
        number = number * 256 + v
    number = number * 256 ** (5 - len(parts)) + last
    return ipaddress.IPv4Address(number)


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    return _inet_aton(host.rstrip("."))


def parse_webhook_url(url: str) -> WebhookTarget:
    """Take ``url`` apart, refusing what is no usable webhook URL whatever the policy: not
    ``http``/``https``, no host, user info (``user:pass@``: credentials do not belong in a
    stored URL), a fragment, a bad port, control characters or spaces, a non-ASCII host (write
    it in its ``xn--`` form), or more than :data:`MAX_URL_LENGTH` characters."""
    if not isinstance(url, str) or not url:
        raise UnsafeWebhookUrl(str(url), "a webhook URL is required")
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeWebhookUrl(url[:64] + "...", f"longer than {MAX_URL_LENGTH} characters")
    if any(ch <= " " or ch == "\x7f" for ch in url):
        raise UnsafeWebhookUrl(url, "it contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeWebhookUrl(url, f"not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeWebhookUrl(url, "a webhook URL starts with https:// (or http:// to this machine, locally)")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise UnsafeWebhookUrl(url, "credentials in the URL (user:password@) are not accepted")
    if parts.fragment or url.endswith("#"):
        raise UnsafeWebhookUrl(url, "a webhook URL has no fragment (#...)")
    host = (parts.hostname or "").lower()
    if not host:
        raise UnsafeWebhookUrl(url, "the URL names no host")
    literal = _literal(host)
    if literal is None and not (host.isascii() and _HOST_CHARS.fullmatch(host)):
        raise UnsafeWebhookUrl(
            url, "the host name must be ASCII letters, digits, dots and hyphens (IDN: its xn-- form)"
        )
    if port == 0:
        raise UnsafeWebhookUrl(url, "port 0 is not a port")
    return WebhookTarget(url, scheme, host, port or (443 if scheme == "https" else 80), literal)


def _embedded_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries (mapped, compatible, 6to4, Teredo), else itself."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:  # 64:ff9b::a.b.c.d, the well-known NAT64 prefix
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if int(address) >> 32 == 0 and int(address) > 1:  # ::a.b.c.d, IPv4-compatible (deprecated)
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def address_refusal(address: IPAddress | str, *, in_azure: bool) -> str | None:
    """Why the service must not connect to ``address``, or None if it may.

    Loopback is allowed only when not ``in_azure`` (a local receiver)."""
    original = ipaddress.ip_address(address) if isinstance(address, str) else address
    ip = _embedded_ipv4(original)
    shown = str(original) if ip == original else f"{original} (which carries {ip})"
    if ip.is_unspecified:
        return f"{shown} is the unspecified address"
    if ip.is_loopback:
        return None if not in_azure else f"{shown} is a loopback address (this machine)"
    if ip.is_link_local:
        metadata = " (the cloud's instance metadata endpoint)" if str(ip) == "169.254.169.254" else ""
        return f"{shown} is a link-local address{metadata}"
    if ip.is_multicast:
        return f"{shown} is a multicast address"
    if isinstance(ip, ipaddress.IPv6Address) and ip in ipaddress.IPv6Network("fc00::/7"):
        return f"{shown} is a unique-local address (a private network)"
    if ip.is_private:
        return f"{shown} is a private address"
    if ip == AZURE_WIRE_SERVER:
        return f"{shown} is Azure's platform address (wire server)"
    if ip.is_reserved or not ip.is_global:
        return f"{shown} is not a public address (reserved, shared or documentation range)"
    return None


def check_target(target: WebhookTarget, addresses: Iterable[IPAddress | str], *, in_azure: bool) -> None:
    """Raise :class:`UnsafeWebhookUrl` unless ``target`` may be sent to, given every address its
    host resolved to (``addresses``; for an IP literal, the literal itself). Pure: the delivery
    engine calls it again with the addresses it is about to connect to."""
    found = [ipaddress.ip_address(a) if isinstance(a, str) else a for a in addresses]
    if target.literal is not None and target.literal not in found:
        found.append(target.literal)
    if in_azure and target.host in _LOOPBACK_NAMES:
        raise UnsafeWebhookUrl(target.url, "localhost is this machine; webhooks go to public https:// URLs in Azure")
    if in_azure and target.scheme != "https":
        raise UnsafeWebhookUrl(target.url, "in Azure only https:// URLs are accepted (the events carry directory data)")
    if not found:
        raise UnsafeWebhookUrl(target.url, f"{target.host} resolves to no address")
    reasons = [why for why in (address_refusal(a, in_azure=in_azure) for a in found) if why]
    if reasons:
        where = "it is" if target.literal is not None else f"{target.host} resolves to"
        raise UnsafeWebhookUrl(
            target.url,
            f"{where} {'; '.join(reasons)}; webhooks are sent to public addresses only (SSRF protection)",
        )
    if target.scheme != "https" and not all(_embedded_ipv4(a).is_loopback for a in found):
        raise UnsafeWebhookUrl(
            target.url, "only https:// URLs are accepted, except http:// to this machine (127.0.0.1, localhost)"
        )


Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (the system resolver, TCP), without duplicates.
    ``localhost`` is this machine (RFC 6761) without asking DNS. Raises
    :class:`UnsafeWebhookUrl`-free ``OSError`` (``socket.gaierror``) when it does not resolve."""
    if host in _LOOPBACK_NAMES:
        return [ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1")]
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[IPAddress, None] = {}
    for _family, _type, _proto, _canon, sockaddr in infos:
        seen.setdefault(ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]), None)
    return list(seen)


async def check_url(url: str, *, in_azure: bool, resolver: Resolver = resolve) -> tuple[WebhookTarget, list[IPAddress]]:
    """Parse ``url``, resolve its host (unless it is an IP literal) and :func:`check_target` it.
    Returns the target and the addresses checked; raises :class:`UnsafeWebhookUrl` (also when the
    host does not resolve)."""
    target = parse_webhook_url(url)
    if target.literal is not None:
        addresses: list[IPAddress] = [target.literal]
    else:
        try:
            addresses = await resolver(target.host, target.port)
        except OSError as exc:
            raise UnsafeWebhookUrl(url, f"{target.host} does not resolve ({exc})") from None
    check_target(target, addresses, in_azure=in_azure)
    return target, addresses


def url_origin(url: str) -> str:
    """The scheme, host and port of a webhook URL (for the audit trail): never its path, query
    or user info, where a receiver may keep a key."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
