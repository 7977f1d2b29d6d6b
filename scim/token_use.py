"""When each Secret Token was last used, without a storage write per request (issue 13).

The SCIM endpoint reads the tenant's credentials on every request anyway (one point read,
:meth:`scim.tenants.TenantRegistry.read_credentials`); the token that matched comes with the
last use stored for it. :meth:`TokenUseRecorder.note` writes a new last use only when the
stored one is older than :data:`~scim.credentials.LAST_USE_PRECISION` (an hour), and this
process has not written one for that token within the same hour: so a token costs at most one
write an hour per instance, and in practice one an hour, because every instance sees the stored
value once it is written.

The write runs in the background (the request never waits for it) and is guarded by the version
of the record the request read (:meth:`~scim.tenants.TenantRegistry.record_use`): if anything
changed in between (a rotation, a revocation), nothing is written, and a later request tries
again. So ``token list`` shows the last use to within an hour, and a write never brings back a
revoked token. A failed write is logged at INFO and forgotten.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from scim.credentials import LAST_USE_PRECISION, SecretToken, TenantCredentials
from scim.tenants import TenantRegistry

__all__ = ["TokenUseRecorder"]

logger = logging.getLogger("scim.token_use")

_MAX_REMEMBERED = 10_000  # (tenant, token) pairs remembered per process before the old ones are dropped


class TokenUseRecorder:
    """Records the last use of Secret Tokens, at most once per token per hour (per process)."""

    def __init__(self, tenants: TenantRegistry, precision: int = LAST_USE_PRECISION) -> None:
        self._tenants = tenants
        self._precision = precision
        self._written: dict[tuple[str, str], float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def note(self, tenant: str, seen: TenantCredentials, token: SecretToken, now: datetime) -> None:
        """``token`` of ``tenant`` (read as ``seen``) authenticated a request at ``now``."""
        moment = now.timestamp()
        if token.last_used is not None and moment - token.last_used < self._precision:
            return
        key = (tenant, token.id)
        if moment - self._written.get(key, float("-inf")) < self._precision:
            return
        if len(self._written) >= _MAX_REMEMBERED:
            self._written = {k: t for k, t in self._written.items() if moment - t < self._precision}
        self._written[key] = moment
        task = asyncio.get_running_loop().create_task(self._write(tenant, seen, token.id, now))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, tenant: str, seen: TenantCredentials, token_id: str, now: datetime) -> None:
        try:
            written = await self._tenants.record_use(tenant, seen, token_id, now)
        except Exception as exc:  # noqa: BLE001 - a background write never fails a request
            logger.info("last use of a token not recorded (%s)", exc.__class__.__name__)
            self._written.pop((tenant, token_id), None)
            return
        if not written:
            self._written.pop((tenant, token_id), None)  # the record changed: the next request tries again

    async def drain(self) -> None:
        """Wait for the writes in flight (shutdown, tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
