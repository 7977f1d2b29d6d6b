"""Application keys: how the application (not Entra) authenticates to the events feed.

A tenant's Secret Token is Entra's credential for one Tenant URL; the events feed
(``GET /api/v1/tenants/{tenant}/events``) is read by the application this service provisions,
with an **application key** sent as ``Authorization: Bearer <key>``. An operator creates one per
consuming application (``python -m scim.admin app-key create NAME``), and it reads the feed of
every tenant.

**Key format.** :data:`KEY_PREFIX` (``scimak_``, "SCIM application key") followed by 32 bytes
from the OS CSPRNG in URL-safe base64 (43 characters, 256 bits): 50 characters matching
``scimak_[A-Za-z0-9_-]{43}``, so a key pasted into a repository, a log or a chat is recognisable
by a secret scanner (a custom pattern) and by a person. A key an operator supplies
(``create(name, key=...)``) must carry the prefix, and what follows it must pass the Secret
Token strength rule (:func:`scim.tenants.check_token_strength`: at least 128 bits).

**Storage.** A key is shown once, at creation, and stored only as its SHA-256 hash
(:func:`scim.tenants.hash_token`: the key is 256 random bits, so no slow KDF is needed);
comparison is constant-time (:func:`scim.tenants.token_matches`). Names follow the tenant-name
rule (1-63 lowercase letters, digits and inner hyphens, matched whole), are unique, and are only
a label for operators: they are not part of the key.

**Lookup: the hash is the row key.** :meth:`AppKeyRegistry.authenticate` derives everything it
needs from the presented key alone: it hashes the key and makes **one point read** of the
record stored under that hash (:meth:`AppKeyRegistry.lookup`), then compares the stored hash
with the presented key's in constant time. Chosen over a key id embedded in the key (``scimak_
<id>_<secret>``, a point read by id, then a comparison of the secret's hash) because:

- the key stays one opaque secret: nothing in it (no id, no name) can be enumerated or probed;
  with an id, an attacker could learn which ids exist from the answer's timing (a row read and
  compared, versus none);
- a well-formed unknown key and a known one cost the same: one SHA-256, one point read, one
  constant-time comparison (against a dummy hash when nothing was found). What the storage's
  own index lookup might reveal by its timing is at most part of the SHA-256 of some key, from
  which no key can be made (preimage resistance of SHA-256);
- someone who reads the stored rows learns hashes only, and presenting a hash authenticates
  nothing (it is hashed again).

The name is kept unique by a second record keyed by the name (holding the hash), written in the
same atomic step as the hash record (on Azure Tables, one entity-group transaction:
``docs/table-layout.md``), so ``list`` and ``revoke`` work by name and a duplicate name fails
the whole creation.

**Revocation is immediate.** There is no cache: every :meth:`~AppKeyRegistry.authenticate`
reads storage, so the request after a :meth:`~AppKeyRegistry.revoke` fails, on every instance.

**No last-used time.** Recording it would cost a storage write per authenticated request (or a
per-instance throttle, and then an approximate time); :meth:`~AppKeyRegistry.list` shows each
key's name and creation time only.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from scim.tenants import (
    InvalidTenantName,
    WeakToken,
    check_token_strength,
    hash_token,
    new_token,
    token_matches,
    validate_tenant_name,
)

__all__ = [
    "KEY_PREFIX",
    "MAX_KEY_LENGTH",
    "AppKeyExists",
    "AppKeyInUse",
    "AppKeyInfo",
    "AppKeyNotFound",
    "AppKeyRegistry",
    "InvalidAppKeyName",
    "check_app_key",
    "is_well_formed",
    "new_app_key",
    "validate_key_name",
]

KEY_PREFIX = "scimak_"
"""What every application key starts with (a secret scanner's anchor)."""
MAX_KEY_LENGTH = 256
"""Longer presented strings are refused without a storage read (a key is 50 characters)."""

_NO_KEY = "0" * 64  # the dummy hash compared against when no key was found (as for tenants)


class AppKeyExists(Exception):
    """An application key of that name exists already. ``str()`` is the message for the operator."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"application key {name!r} already exists; choose another name, or revoke it first "
            f"(python -m scim.admin app-key revoke {name})"
        )
        self.name = name


class AppKeyNotFound(Exception):
    """No application key of that name. ``str()`` is the message for the operator."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no application key {name!r} (python -m scim.admin app-key list shows them)")
        self.name = name


class AppKeyInUse(ValueError):
    """A supplied key is already stored under another name (a key identifies one name)."""

    def __init__(self) -> None:
        super().__init__("that key is already in use under another name; make a new one")


class InvalidAppKeyName(ValueError):
    """Application key names follow the tenant-name rule: 1-63 lowercase letters, digits and inner hyphens."""


@dataclass(frozen=True)
class AppKeyInfo:
    """What an operator sees of a key: its name and creation time (RFC 3339 UTC), never the key or its hash."""

    name: str
    created: str


def validate_key_name(name: str) -> str:
    """Return ``name`` if it is a valid key name (the tenant-name rule, matched whole), else
    raise :class:`InvalidAppKeyName`."""
    try:
        return validate_tenant_name(name)
    except InvalidTenantName:
        raise InvalidAppKeyName(
            f"invalid application key name {name!r}: use 1-63 lowercase letters, digits and hyphens, "
            "starting and ending with a letter or digit"
        ) from None


def new_app_key() -> str:
    """A fresh key: :data:`KEY_PREFIX` + 256 bits from the OS CSPRNG in URL-safe base64."""
    return KEY_PREFIX + new_token()


def check_app_key(key: str) -> str:
    """Return a key an operator supplies if it is acceptable, else raise :class:`WeakToken`
    (a ValueError): :data:`KEY_PREFIX`, then at least 128 bits by the Secret Token rule
    (:func:`scim.tenants.check_token_strength`), at most :data:`MAX_KEY_LENGTH` characters."""
    if not isinstance(key, str) or not key.startswith(KEY_PREFIX):
        raise WeakToken(f"an application key starts with {KEY_PREFIX!r}; leave it out to have one made")
    if len(key) > MAX_KEY_LENGTH:
        raise WeakToken(f"an application key has at most {MAX_KEY_LENGTH} characters")
    check_token_strength(key[len(KEY_PREFIX) :])
    return key


def is_well_formed(presented: str) -> bool:
    """Whether ``presented`` can be a key at all (prefix, printable ASCII, plausible length).

    What fails here is refused without a storage read; that reveals the key format only, which
    is public. Every well-formed string costs the same (:meth:`AppKeyRegistry.authenticate`).
    """
    return (
        isinstance(presented, str)
        and len(KEY_PREFIX) + 22 <= len(presented) <= MAX_KEY_LENGTH
        and presented.startswith(KEY_PREFIX)
        and all("!" <= ch <= "~" for ch in presented)
    )


class AppKeyRegistry(abc.ABC):
    """Where application keys live (see the module docstring). Implementations: memory
    (:mod:`scim.store.app_keys_memory`) and Azure Tables (:mod:`scim.store.app_keys_tables`).

    Storage failures surface as :class:`scim.store.base.StoreError` (``StoreUnavailable``: the
    caller answers 503).
    """

    @abc.abstractmethod
    async def create(self, name: str, key: str | None = None) -> str:
        """Store a new key under ``name`` and return it: ``key`` if given (checked with
        :func:`check_app_key`), else :func:`new_app_key`. The key is not kept: only its hash.

        Raises InvalidAppKeyName, AppKeyExists (also for two concurrent creations of one name:
        exactly one succeeds), WeakToken for a supplied key that is not acceptable, AppKeyInUse
        for a supplied key stored already.
        """

    @abc.abstractmethod
    async def list(self) -> list[AppKeyInfo]:
        """Every key's name and creation time, sorted by name."""

    @abc.abstractmethod
    async def revoke(self, name: str) -> None:
        """Delete the key named ``name``: the next :meth:`authenticate` with it fails, on every
        instance (nothing is cached). Raises AppKeyNotFound (also for an invalid name)."""

    @abc.abstractmethod
    async def lookup(self, key_hash: str) -> tuple[str, str] | None:
        """The ``(name, stored hash)`` of the key whose hash is ``key_hash``, or None: one point
        read (storage errors propagate)."""

    async def authenticate(self, presented: str) -> str | None:
        """The name of the key ``presented`` is, or None.

        A malformed string (:func:`is_well_formed`) is refused without a storage read; for any
        well-formed one the work is the same whether a key matches or not: one hash, one point
        read (:meth:`lookup`), one constant-time comparison (against a dummy hash when nothing was
        found). So the answer and its cost tell nothing about which keys or names exist.
        """
        if not is_well_formed(presented):
            return None
        found = await self.lookup(hash_token(presented))
        name, stored = found if found is not None else ("", _NO_KEY)
        matched = token_matches(presented, stored)
        return name if matched and found is not None else None

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release network resources."""
