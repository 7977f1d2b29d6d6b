"""Counting storage round trips, to hold :class:`~scim.store.tables.TableStore` to the costs
listed in ``docs/table-layout.md`` ("Operations and their storage round trips").

Usage::

    counter = RoundTripCounter()
    store = TableStore.from_settings(settings, per_call_policies=[counter])
    counter.reset()
    await store.get(tenant, "User", id)
    assert counter.count == 1

Plugging it in: azure-data-tables builds the per-table clients of a ``TableServiceClient``
(``get_table_client``) from its own policy list and silently drops ``per_call_policies``. The
policies are therefore also attached through azure-core's public ``raw_request_hook``
(:func:`client_kwargs`), which every table client shares; it sees each HTTP request the
transport sends, retries included, so ``count`` is the number of real round trips.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.policies import SansIOHTTPPolicy

__all__ = ["RoundTripCounter", "client_kwargs"]


class RoundTripCounter(SansIOHTTPPolicy[Any, Any]):
    """A pipeline policy that counts the HTTP requests sent to storage."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.methods: list[str] = []

    def on_request(self, request: PipelineRequest[Any]) -> None:
        """Count one request (and remember its method, for diagnostics)."""
        self.count += 1
        self.methods.append(request.http_request.method)

    def reset(self) -> None:
        """Start counting from zero."""
        self.count = 0
        self.methods.clear()


def client_kwargs(per_call_policies: Sequence[SansIOHTTPPolicy[Any, Any]] | None) -> dict[str, Any]:
    """Keyword arguments for ``TableServiceClient`` that make ``per_call_policies`` see every request.

    They are attached through ``raw_request_hook``, which the service client and every table
    client it hands out run for each request (``per_call_policies`` would only reach the
    former). Only the policies' ``on_request`` is called.
    """
    if not per_call_policies:
        return {}
    policies = list(per_call_policies)

    def hook(request: PipelineRequest[Any]) -> None:
        for policy in policies:
            policy.on_request(request)

    return {"raw_request_hook": hook}
