"""A tenant's credentials: its Secret Tokens, its OAuth clients and their access tokens.

Everything here is pure (no I/O): :class:`TenantCredentials` is the value a
:class:`~scim.tenants.TenantRegistry` reads in **one point read** of the tenant record and
writes back, guarded by the version it read; the functions below compute the next value.

**Secret Tokens** (Entra's "Secret Token" field). A tenant holds at most
:data:`MAX_ACTIVE_TOKENS` active tokens, each with an id (8 hex digits, shown by ``token list``;
never the token), a creation time, an optional expiry (``--expires``, or the tenant's default
lifetime) and the time it was last used (written at most once per :data:`LAST_USE_PRECISION`,
see :mod:`scim.token_use`). Three ways to change them:

- :func:`regenerate`: a new token, and every other token fails at once (the seed product's
  "Regenerate SCIM Token");
- :func:`rotate`: a new token, and the others keep working until the overlap ends
  (``retires``), so Entra never holds a token that has already stopped working while an admin
  pastes the new one (docs/ENTRA.md §7: a bad credential quarantines the job at once);
- :func:`revoke`: one token fails at once.

A token authenticates while ``now`` is before its end (the earlier of ``expires`` and
``retires``); an ended token answers 401 like a wrong one and is dropped at the next write.

**OAuth 2.0 client credentials** (RFC 6749 §4.4). A tenant holds at most
:data:`MAX_OAUTH_CLIENTS` clients (id, SHA-256 of the secret, created, last token issued).
:func:`issue_access_token` checks the client's secret in constant time and adds an access token
that lives :data:`ACCESS_TOKEN_SECONDS`; it is stored as a hash in the same record, so the SCIM
endpoint still authenticates with one read, and revoking the client (:func:`revoke_client`)
drops its access tokens: they fail on their next request, on every instance. Issuing is
rate-limited per client from the stored issue times (so on every instance at once): at most
:data:`ACCESS_TOKENS_PER_MINUTE` a minute and :data:`MAX_LIVE_ACCESS_TOKENS` unexpired; beyond,
:class:`TooManyTokenRequests` says when to retry.

**Matching** (:func:`match`): the presented bearer is hashed once (SHA-256: every secret here
is 256 random bits, or an operator's token of at least 128, so no slow KDF is needed) and
compared with :func:`hmac.compare_digest` against every stored hash, with no early exit, so the
time does not depend on which one (if any) matched.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

__all__ = [
    "ACCESS_TOKENS_PER_MINUTE",
    "ACCESS_TOKEN_PREFIX",
    "ACCESS_TOKEN_SECONDS",
    "CLIENT_ID_PREFIX",
    "CLIENT_SECRET_PREFIX",
    "DEFAULT",
    "LAST_USE_PRECISION",
    "MAX_ACTIVE_TOKENS",
    "MAX_LIVE_ACCESS_TOKENS",
    "MAX_OAUTH_CLIENTS",
    "AccessToken",
    "ClientNotFound",
    "CredentialMatch",
    "Expiry",
    "InvalidClient",
    "OAuthClient",
    "SecretToken",
    "TenantCredentials",
    "TokenNotFound",
    "TooManyClients",
    "TooManyTokenRequests",
    "TooManyTokens",
    "add_client",
    "authenticate_client",
    "format_duration",
    "format_epoch",
    "issue_access_token",
    "match",
    "parse_duration",
    "regenerate",
    "revoke",
    "revoke_client",
    "rotate",
    "set_lifetime",
    "with_use",
    "with_warning",
]

MAX_ACTIVE_TOKENS = 3
MAX_OAUTH_CLIENTS = 3
ACCESS_TOKEN_SECONDS = 3600
ACCESS_TOKENS_PER_MINUTE = 5
MAX_LIVE_ACCESS_TOKENS = 10
LAST_USE_PRECISION = 3600
"""A token's ``last_used`` is written at most once per this many seconds (per token)."""

ACCESS_TOKEN_PREFIX = "scimat_"
CLIENT_ID_PREFIX = "scimc_"
CLIENT_SECRET_PREFIX = "scimcs_"
_DUMMY_HASH = "0" * 64  # no SHA-256 hex digest is all zeros


class TooManyTokens(ValueError):
    """A new token would make more than :data:`MAX_ACTIVE_TOKENS` active tokens."""


class TokenNotFound(ValueError):
    """No active token of that id."""


class TooManyClients(ValueError):
    """A new OAuth client would make more than :data:`MAX_OAUTH_CLIENTS`."""


class ClientNotFound(ValueError):
    """No OAuth client of that id."""


class InvalidClient(Exception):
    """Client authentication failed (RFC 6749 §5.2 ``invalid_client``): unknown client, wrong
    secret, or a tenant that does not exist or is being deleted; the caller is not told which."""


class TooManyTokenRequests(Exception):
    """The client asked for tokens too often; ``retry_after`` seconds until it may again."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many token requests; retry after {retry_after} s")
        self.retry_after = retry_after


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _now_s(now: datetime) -> int:
    return int(now.timestamp())


def format_epoch(seconds: int | None) -> str | None:
    """An epoch second as RFC 3339 UTC (``2026-12-02T15:30:00Z``); None stays None."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_DURATION = re.compile(r"(\d{1,6})([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_NEVER = frozenset({"never", "none"})


def parse_duration(text: str, *, allow_never: bool = False) -> int | None:
    """``90d``, ``24h``, ``30m``, ``45s`` as seconds (> 0); ``never``/``none`` as None when
    ``allow_never``. Raises ValueError naming the accepted forms."""
    value = text.strip().lower()
    if allow_never and value in _NEVER:
        return None
    found = _DURATION.fullmatch(value)
    if not found or int(found.group(1)) == 0:
        forms = "a positive number with s, m, h or d (90d, 24h)" + (", or never" if allow_never else "")
        raise ValueError(f"not a duration: {text!r}; use {forms}")
    return int(found.group(1)) * _UNIT_SECONDS[found.group(2)]


def format_duration(seconds: int) -> str:
    """The shortest exact form of :func:`parse_duration` (``90d``, ``36h``, ``90s``)."""
    for unit in ("d", "h", "m"):
        if seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class SecretToken:
    """One Secret Token (never the token itself): times are epoch seconds.

    ``expires``: the expiry it was issued with; ``retires``: when a rotation ends its overlap;
    ``warned``: the smallest expiry warning already sent (14 or 3 days), so each is sent once.
    """

    id: str
    hash: str
    created: int
    expires: int | None = None
    retires: int | None = None
    last_used: int | None = None
    warned: int | None = None

    @property
    def ends(self) -> int | None:
        """When it stops working: the earlier of ``expires`` and ``retires`` (None: never)."""
        ends = [t for t in (self.expires, self.retires) if t is not None]
        return min(ends) if ends else None

    def active(self, now: datetime) -> bool:
        return self.ends is None or _now_s(now) < self.ends


@dataclass(frozen=True)
class OAuthClient:
    """An OAuth 2.0 client of the tenant (RFC 6749 §2): its id, the hash of its secret."""

    id: str
    secret_hash: str
    created: int
    last_issued: int | None = None


@dataclass(frozen=True)
class AccessToken:
    """An access token issued to ``client`` (stored as its hash)."""

    hash: str
    client: str
    issued: int
    expires: int


@dataclass(frozen=True)
class CredentialMatch:
    """What a presented bearer matched: a Secret Token (``token``) or an access token of a client."""

    token: SecretToken | None = None
    client: str | None = None


@dataclass(frozen=True)
class TenantCredentials:
    """A tenant's credentials as stored in its record; ``version`` is the record's (ETag)."""

    tokens: tuple[SecretToken, ...] = ()
    clients: tuple[OAuthClient, ...] = ()
    access_tokens: tuple[AccessToken, ...] = ()
    lifetime: int | None = None
    """The tenant's default token lifetime in seconds (None: tokens do not expire by default)."""
    version: str = ""

    def same_content(self, other: TenantCredentials) -> bool:
        """Equal but for the version."""
        return dataclasses.replace(self, version="") == dataclasses.replace(other, version="")

    def active_tokens(self, now: datetime) -> tuple[SecretToken, ...]:
        return tuple(t for t in self.tokens if t.active(now))

    def token_ids(self) -> frozenset[str]:
        return frozenset(t.id for t in self.tokens)

    # The stored form: JSON text properties of the tenant record (docs/table-layout.md).

    def to_properties(self) -> dict[str, Any]:
        """The record's credential properties (compact JSON arrays; times are epoch seconds)."""
        return {
            "tokens": json.dumps([_token_row(t) for t in self.tokens], separators=(",", ":")),
            "oauthClients": json.dumps(
                [
                    _drop_none({"id": c.id, "h": c.secret_hash, "c": c.created, "i": c.last_issued})
                    for c in self.clients
                ],
                separators=(",", ":"),
            ),
            "accessTokens": json.dumps(
                [{"h": a.hash, "k": a.client, "i": a.issued, "e": a.expires} for a in self.access_tokens],
                separators=(",", ":"),
            ),
            "tokenLifetime": self.lifetime if self.lifetime is not None else 0,
        }

    @classmethod
    def from_properties(cls, row: Any, version: str = "") -> TenantCredentials:
        """Read :meth:`to_properties`' form; a record written before tokens had ids (one
        ``tokenHash``) reads as one token whose id is the first 8 digits of that hash."""
        tokens: tuple[SecretToken, ...]
        if row.get("tokens"):
            tokens = tuple(
                SecretToken(t["id"], t["h"], t["c"], t.get("e"), t.get("r"), t.get("u"), t.get("w"))
                for t in json.loads(row["tokens"])
            )
        elif row.get("tokenHash"):
            tokens = (SecretToken(row["tokenHash"][:8], row["tokenHash"], _created_epoch(row.get("created"))),)
        else:
            tokens = ()
        clients = tuple(
            OAuthClient(c["id"], c["h"], c["c"], c.get("i")) for c in json.loads(row.get("oauthClients") or "[]")
        )
        access = tuple(AccessToken(a["h"], a["k"], a["i"], a["e"]) for a in json.loads(row.get("accessTokens") or "[]"))
        return cls(tokens, clients, access, row.get("tokenLifetime") or None, version)


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _token_row(t: SecretToken) -> dict[str, Any]:
    return _drop_none(
        {"id": t.id, "h": t.hash, "c": t.created, "e": t.expires, "r": t.retires, "u": t.last_used, "w": t.warned}
    )


def _created_epoch(created: Any) -> int:
    try:
        return int(datetime.fromisoformat(str(created).replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


def _new_token_id(taken: Iterable[str]) -> str:
    used = set(taken)
    while (candidate := secrets.token_hex(4)) in used:
        continue
    return candidate


def _without_ended(creds: TenantCredentials, now: datetime) -> TenantCredentials:
    """Drop ended tokens and expired access tokens (done by every write)."""
    seconds = _now_s(now)
    return dataclasses.replace(
        creds,
        tokens=creds.active_tokens(now),
        access_tokens=tuple(a for a in creds.access_tokens if a.expires > seconds),
    )


def _issued(creds: TenantCredentials, token: str, now: datetime, lifetime: int | None) -> SecretToken:
    created = _now_s(now)
    return SecretToken(
        _new_token_id(creds.token_ids()), _hash(token), created, created + lifetime if lifetime is not None else None
    )


class _Default(enum.Enum):
    DEFAULT = "default"


DEFAULT: Final = _Default.DEFAULT
"""An expiry not given: the tenant's default lifetime applies."""
Expiry = int | None | Literal[_Default.DEFAULT]
"""An expiry in seconds from now, None for never, or :data:`DEFAULT`."""


def _lifetime(creds: TenantCredentials, expires: Expiry) -> int | None:
    """``expires`` as given (seconds, or None for never), or the tenant's default when not given."""
    return creds.lifetime if expires is DEFAULT else expires


def regenerate(
    creds: TenantCredentials, token: str, now: datetime, expires: Expiry = DEFAULT
) -> tuple[TenantCredentials, SecretToken]:
    """``token`` becomes the only token (every other one fails at once). ``expires`` in seconds
    from now (None: never); not given: the tenant's default lifetime."""
    issued = _issued(creds, token, now, _lifetime(creds, expires))
    return dataclasses.replace(_without_ended(creds, now), tokens=(issued,)), issued


def rotate(
    creds: TenantCredentials, token: str, now: datetime, overlap: int, expires: Expiry = DEFAULT
) -> tuple[TenantCredentials, SecretToken]:
    """Add ``token``; every other active token keeps working for ``overlap`` seconds more (or
    until its own end, if earlier). Raises :class:`TooManyTokens` if that would make more than
    :data:`MAX_ACTIVE_TOKENS` active tokens (revoke one first)."""
    current = _without_ended(creds, now)
    if len(current.tokens) >= MAX_ACTIVE_TOKENS:
        raise TooManyTokens(
            f"the tenant has {len(current.tokens)} active tokens, the most it may hold: "
            "revoke one (token list, token revoke) or wait until a rotated one retires"
        )
    retire = _now_s(now) + overlap
    kept = tuple(
        dataclasses.replace(t, retires=retire if t.retires is None else min(t.retires, retire)) for t in current.tokens
    )
    issued = _issued(current, token, now, _lifetime(creds, expires))
    return dataclasses.replace(current, tokens=(*kept, issued)), issued


def revoke(creds: TenantCredentials, token_id: str, now: datetime) -> TenantCredentials:
    """Drop the token ``token_id`` (it fails at once). Raises :class:`TokenNotFound`."""
    current = _without_ended(creds, now)
    if token_id not in current.token_ids():
        raise TokenNotFound(f"no active token {token_id!r} (token list shows their ids)")
    return dataclasses.replace(current, tokens=tuple(t for t in current.tokens if t.id != token_id))


def set_lifetime(creds: TenantCredentials, lifetime: int | None) -> TenantCredentials:
    """The tenant's default lifetime of new tokens (seconds; None: no expiry)."""
    return dataclasses.replace(creds, lifetime=lifetime)


def with_use(creds: TenantCredentials, token_id: str, now: datetime) -> TenantCredentials:
    """``creds`` with token ``token_id``'s last use set to ``now`` (unchanged if it is gone)."""
    seconds = _now_s(now)
    return dataclasses.replace(
        creds, tokens=tuple(dataclasses.replace(t, last_used=seconds) if t.id == token_id else t for t in creds.tokens)
    )


def with_warning(creds: TenantCredentials, token_id: str, days: int) -> TenantCredentials:
    """``creds`` recording that the ``days``-day expiry warning of ``token_id`` was sent."""
    return dataclasses.replace(
        creds, tokens=tuple(dataclasses.replace(t, warned=days) if t.id == token_id else t for t in creds.tokens)
    )


def add_client(creds: TenantCredentials, now: datetime) -> tuple[TenantCredentials, OAuthClient, str]:
    """A new OAuth client: the next credentials, the client, and its secret (shown once).
    Raises :class:`TooManyClients` beyond :data:`MAX_OAUTH_CLIENTS`."""
    if len(creds.clients) >= MAX_OAUTH_CLIENTS:
        raise TooManyClients(
            f"the tenant has {len(creds.clients)} OAuth clients, the most it may hold: revoke one first"
        )
    taken = {c.id for c in creds.clients}
    while (client_id := CLIENT_ID_PREFIX + secrets.token_hex(8)) in taken:
        continue
    secret = CLIENT_SECRET_PREFIX + secrets.token_urlsafe(32)
    client = OAuthClient(client_id, _hash(secret), _now_s(now))
    return dataclasses.replace(_without_ended(creds, now), clients=(*creds.clients, client)), client, secret


def revoke_client(creds: TenantCredentials, client_id: str, now: datetime) -> TenantCredentials:
    """Drop the client and every access token it was issued. Raises :class:`ClientNotFound`."""
    if client_id not in {c.id for c in creds.clients}:
        raise ClientNotFound(f"no OAuth client {client_id!r} (oauth-client list shows them)")
    current = _without_ended(creds, now)
    return dataclasses.replace(
        current,
        clients=tuple(c for c in current.clients if c.id != client_id),
        access_tokens=tuple(a for a in current.access_tokens if a.client != client_id),
    )


def authenticate_client(creds: TenantCredentials | None, client_id: str, secret: str) -> OAuthClient:
    """The client ``client_id`` if ``secret`` is its secret, else :class:`InvalidClient`. The
    secret's hash is compared in constant time also when there is no such client (or tenant)."""
    client = next((c for c in creds.clients if c.id == client_id), None) if creds is not None else None
    matched = hmac.compare_digest(_hash(secret), client.secret_hash if client is not None else _DUMMY_HASH)
    if client is None or not matched:
        raise InvalidClient()
    return client


def issue_access_token(
    creds: TenantCredentials, client: OAuthClient, now: datetime
) -> tuple[TenantCredentials, str, AccessToken]:
    """A new access token for ``client`` (already authenticated): the next credentials, the
    token (returned once) and its record. Raises :class:`TooManyTokenRequests` when the client
    had :data:`ACCESS_TOKENS_PER_MINUTE` tokens in the last minute or holds
    :data:`MAX_LIVE_ACCESS_TOKENS` unexpired ones."""
    current = _without_ended(creds, now)
    seconds = _now_s(now)
    mine = sorted(a.issued for a in current.access_tokens if a.client == client.id)
    recent = [t for t in mine if t > seconds - 60]
    if len(recent) >= ACCESS_TOKENS_PER_MINUTE:
        raise TooManyTokenRequests(max(1, recent[0] + 60 - seconds))
    if len(mine) >= MAX_LIVE_ACCESS_TOKENS:
        raise TooManyTokenRequests(max(1, mine[0] + ACCESS_TOKEN_SECONDS - seconds))
    token = ACCESS_TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = AccessToken(_hash(token), client.id, seconds, seconds + ACCESS_TOKEN_SECONDS)
    clients = tuple(dataclasses.replace(c, last_issued=seconds) if c.id == client.id else c for c in current.clients)
    return dataclasses.replace(current, clients=clients, access_tokens=(*current.access_tokens, record)), token, record


def match(creds: TenantCredentials | None, presented: str, now: datetime) -> CredentialMatch | None:
    """What ``presented`` authenticates as, if anything: an active Secret Token, or an unexpired
    access token of a client that still exists. One SHA-256, then a constant-time comparison
    with every stored hash (at least one, a dummy when there is none), without early exit."""
    digest = _hash(presented)
    seconds = _now_s(now)
    found: CredentialMatch | None = None
    compared = 0
    for token in creds.tokens if creds is not None else ():
        compared += 1
        if hmac.compare_digest(digest, token.hash) and token.active(now):
            found = CredentialMatch(token=token)
    clients = {c.id for c in creds.clients} if creds is not None else set()
    for access in creds.access_tokens if creds is not None else ():
        compared += 1
        if hmac.compare_digest(digest, access.hash) and access.expires > seconds and access.client in clients:
            found = CredentialMatch(client=access.client)
    if compared == 0:
        hmac.compare_digest(digest, _DUMMY_HASH)
    return found
