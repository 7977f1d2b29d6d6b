"""The contract every :class:`~scim.app_keys.AppKeyRegistry` passes (:mod:`scim.app_keys`).

A test module subclasses :class:`AppKeyRegistryContract` (named ``Test...``) and provides a
``registry`` fixture (an empty registry) and ``stored_text``, everything the registry stored as
one string (to check that keys are stored only as hashes).
"""

from __future__ import annotations

import asyncio
import base64
import re
from typing import Any

import pytest

import scim.tenants
from scim.app_keys import (
    KEY_PREFIX,
    AppKeyExists,
    AppKeyInUse,
    AppKeyNotFound,
    AppKeyRegistry,
    InvalidAppKeyName,
)
from scim.tenants import WeakToken, hash_token

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
KEY_SHAPE = re.compile(r"^scimak_[A-Za-z0-9_-]{43}$")
INVALID_NAMES = ["", "UPPER", "a/b", "-x", "x-", "x" * 64, "dev\n", "a b", "é"]


class AppKeyRegistryContract:
    """The :class:`~scim.app_keys.AppKeyRegistry` behaviour; subclasses provide ``registry`` and ``stored_text``."""

    async def stored_text(self, registry: Any) -> str:
        raise NotImplementedError

    async def test_a_key_is_prefixed_random_and_authenticates_its_name(self, registry: AppKeyRegistry) -> None:
        key = await registry.create("reporting")
        assert KEY_SHAPE.match(key), key
        assert len(base64.urlsafe_b64decode(key.removeprefix(KEY_PREFIX) + "=")) == 32  # 256 bits
        other = await registry.create("billing")
        assert other != key
        assert await registry.authenticate(key) == "reporting"
        assert await registry.authenticate(other) == "billing"

    async def test_anything_but_a_stored_key_authenticates_nobody(self, registry: AppKeyRegistry) -> None:
        key = await registry.create("app")
        flipped = key[:-1] + ("A" if key[-1] != "A" else "B")
        for presented in (
            flipped,
            key + "x",
            key[:-1],
            key.removeprefix(KEY_PREFIX),  # the secret without its prefix
            KEY_PREFIX,
            "",
            " " + key,
            key.upper(),
            hash_token(key),  # someone who read the stored rows
            KEY_PREFIX + hash_token(key),
            "scimak_" + "é" * 43,
            "scimak_" + "A" * 10_000,
            "app",
        ):
            assert await registry.authenticate(presented) is None, presented
        assert await registry.lookup("not a hash") is None
        assert await registry.lookup("") is None

    async def test_keys_are_stored_only_as_hashes(self, registry: AppKeyRegistry) -> None:
        key = await registry.create("hashed")
        stored = await self.stored_text(registry)
        secret = key.removeprefix(KEY_PREFIX)
        assert key not in stored and secret not in stored and secret[:16] not in stored
        raw = base64.urlsafe_b64decode(secret + "=")
        assert raw.hex() not in stored and base64.b64encode(raw).decode() not in stored
        assert hash_token(key) in stored
        assert await registry.lookup(hash_token(key)) == ("hashed", hash_token(key))

    async def test_names_are_validated_whole_and_unique(self, registry: AppKeyRegistry) -> None:
        for bad in INVALID_NAMES:
            with pytest.raises(InvalidAppKeyName):
                await registry.create(bad)
            with pytest.raises(AppKeyNotFound):
                await registry.revoke(bad)
        first = await registry.create("dup")
        with pytest.raises(AppKeyExists, match="already exists"):
            await registry.create("dup")
        assert await registry.authenticate(first) == "dup"  # the refused duplicate changed nothing
        assert [k.name for k in await registry.list()] == ["dup"]

    async def test_concurrent_creations_of_one_name_make_one_key(self, registry: AppKeyRegistry) -> None:
        results = await asyncio.gather(*(registry.create("race") for _ in range(5)), return_exceptions=True)
        keys = [r for r in results if isinstance(r, str)]
        assert len(keys) == 1 and all(isinstance(r, (str, AppKeyExists)) for r in results), results
        assert await registry.authenticate(keys[0]) == "race"
        assert [k.name for k in await registry.list()] == ["race"]

    async def test_list_shows_names_and_creation_times_only(self, registry: AppKeyRegistry) -> None:
        assert await registry.list() == []
        keys = [await registry.create(name) for name in ("b-app", "a-app", "c-app")]
        listed = await registry.list()
        assert [k.name for k in listed] == ["a-app", "b-app", "c-app"]
        assert all(RFC3339_UTC.match(k.created) for k in listed)
        shown = repr(listed)
        assert not any(key in shown or hash_token(key) in shown for key in keys)

    async def test_revoke_is_effective_at_once_and_only_for_that_key(self, registry: AppKeyRegistry) -> None:
        kept = await registry.create("kept")
        gone = await registry.create("gone")
        assert await registry.authenticate(gone) == "gone"
        await registry.revoke("gone")
        assert await registry.authenticate(gone) is None
        assert await registry.lookup(hash_token(gone)) is None
        assert await registry.authenticate(kept) == "kept"
        assert [k.name for k in await registry.list()] == ["kept"]
        with pytest.raises(AppKeyNotFound, match="no application key 'gone'"):
            await registry.revoke("gone")
        with pytest.raises(AppKeyNotFound):
            await registry.revoke("never-was")
        again = await registry.create("gone")  # the name is free again, with a new key
        assert again != gone
        assert await registry.authenticate(again) == "gone" and await registry.authenticate(gone) is None

    async def test_concurrent_revokes_of_one_key(self, registry: AppKeyRegistry) -> None:
        key = await registry.create("twice")
        results = await asyncio.gather(*(registry.revoke("twice") for _ in range(3)), return_exceptions=True)
        assert all(r is None or isinstance(r, AppKeyNotFound) for r in results), results
        assert any(r is None for r in results)
        assert await registry.authenticate(key) is None and await registry.list() == []

    async def test_a_supplied_key_follows_the_token_strength_rule(self, registry: AppKeyRegistry) -> None:
        for weak in (
            "no-prefix-Qx7LmZ2pRt8Kc3V4f9Qx7LmZ",
            KEY_PREFIX + "short",
            KEY_PREFIX + "a" * 40,
            KEY_PREFIX + "abcdefghijklmnopqrstuvwxyz",
            KEY_PREFIX + "Qx7LmZ2pRt8Kc3V4f9Qx7L" * 20,
        ):
            with pytest.raises(WeakToken):
                await registry.create("supplied", key=weak)
        assert await registry.list() == []
        chosen = KEY_PREFIX + "chosen-App-Key_4f9Qx7LmZ2pRt8Kc3V"
        assert await registry.create("supplied", key=chosen) == chosen
        assert await registry.authenticate(chosen) == "supplied"
        with pytest.raises(AppKeyInUse):
            await registry.create("other", key=chosen)
        assert [k.name for k in await registry.list()] == ["supplied"]

    async def test_a_known_and_an_unknown_key_cost_the_same(
        self, registry: AppKeyRegistry, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """One lookup and one constant-time comparison of equal-length hashes, either way."""
        key = await registry.create("timing")
        unknown = KEY_PREFIX + "Zz9" + key.removeprefix(KEY_PREFIX)[3:]
        compared: list[tuple[int, int]] = []
        looked_up: list[str] = []
        real_compare = scim.tenants.hmac.compare_digest
        real_lookup = registry.lookup

        def compare(a: Any, b: Any) -> bool:
            compared.append((len(a), len(b)))
            return real_compare(a, b)

        async def lookup(key_hash: str) -> tuple[str, str] | None:
            looked_up.append(key_hash)
            return await real_lookup(key_hash)

        monkeypatch.setattr(scim.tenants.hmac, "compare_digest", compare)
        monkeypatch.setattr(registry, "lookup", lookup)
        costs = []
        for presented, expected in ((key, "timing"), (unknown, None)):
            compared.clear()
            looked_up.clear()
            assert await registry.authenticate(presented) == expected
            costs.append((list(compared), len(looked_up)))
        assert costs[0] == costs[1] == ([(64, 64)], 1), costs
