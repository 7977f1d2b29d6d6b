"""The pipeline policy on the directory's transactions that bounds when an event may commit.

:class:`EventSendPolicy` is the last policy of the directory table's pipeline (after azure-core's
retry policy, so it sees every attempt, just before the transport). For a request that carries a
:class:`~scim.store.event_timing.SendTicket` (the store passes it as the pipeline context option
:data:`TICKET_OPTION`, which the policy removes before the transport sees the options):

- it adds the Table service's server timeout to the URL (``timeout=``
  :data:`~scim.store.event_timing.SERVER_TIMEOUT`; learn.microsoft.com, "Setting timeouts for
  Table service operations");
- it admits the attempt or refuses it (:class:`~scim.store.event_timing.StaleStamp`, never
  sent) when it comes later than :data:`~scim.store.event_timing.MAX_SEND_DELAY` after the
  transaction's stamp, so that the store builds the transaction again with a fresh stamp.

Why: ``docs/events.md``, "Why the feed never skips an event", and :mod:`scim.store.event_timing`.

:func:`directory_table_client` builds the directory's table client with this policy on the
shared service client's pipeline and transport, as ``TableServiceClient.get_table_client`` does
(azure-data-tables gives no public way to add a policy to one table client of a service client).
"""

from __future__ import annotations

import copy
from typing import Any

from azure.core.pipeline import AsyncPipeline, PipelineRequest
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.data.tables.aio import TableClient, TableServiceClient
from azure.data.tables.aio._base_client_async import AsyncTransportWrapper

from scim.store import event_timing
from scim.store.event_timing import SendTicket

__all__ = ["TICKET_OPTION", "EventSendPolicy", "directory_table_client"]

TICKET_OPTION = "scim_send_ticket"
"""The pipeline context option carrying a transaction's :class:`SendTicket`."""


class EventSendPolicy(SansIOHTTPPolicy[Any, Any]):
    """Server timeout and send deadline of the directory's transactions (see the module docstring)."""

    def on_request(self, request: PipelineRequest[Any]) -> None:
        """Before each attempt: take the ticket (first attempt) or find it again (retries),
        add ``timeout=``, and admit the attempt (raises StaleStamp when too late)."""
        ticket = request.context.options.pop(TICKET_OPTION, None)
        if ticket is not None:
            request.context[TICKET_OPTION] = ticket
        else:
            ticket = request.context.get(TICKET_OPTION)
        if not isinstance(ticket, SendTicket):
            return
        http = request.http_request
        if "timeout=" not in http.url.partition("?")[2]:
            separator = "&" if "?" in http.url else "?"
            http.url = f"{http.url}{separator}timeout={event_timing.SERVER_TIMEOUT}"
        ticket.admit()


def directory_table_client(service: TableServiceClient, table_name: str) -> TableClient:
    """A client of ``table_name`` on ``service``'s pipeline (its policies, then
    :class:`EventSendPolicy`) and its transport (one connection pool), like ``get_table_client``.

    The policies that are not SansIO (redirect, retry) are copied: azure-core links each to the
    next policy of the pipeline it is put in, and the service client's own instances are shared
    by every table client it hands out, whose pipelines end without this policy."""
    shared = service._policies  # private: the service client's policies, as get_table_client uses them
    policies = [*(p if isinstance(p, SansIOHTTPPolicy) else copy.copy(p) for p in shared), EventSendPolicy()]
    transport = service._client._client._pipeline._transport  # private: the shared transport, as get_table_client
    wrapped = AsyncTransportWrapper(transport)  # type: ignore[no-untyped-call]  # the SDK's own wrapper, untyped
    pipeline = AsyncPipeline(transport=wrapped, policies=policies)
    return TableClient(
        service.url,
        table_name=table_name,
        credential=service.credential,
        api_version=service.api_version,
        pipeline=pipeline,
        location_mode=service._location_mode,  # private, as get_table_client
        _hosts=service._hosts,  # private, as get_table_client
    )
