"""Entity-group transactions (``$batch``), encoded and decoded without the email package.

The wire format is the Table service's (learn.microsoft.com, "Performing entity group
transactions"): a ``multipart/mixed`` batch holding one changeset, each operation an
``application/http`` part with its own request line, headers and JSON entity; the answer is a
``multipart/mixed`` batch response holding a changeset response, one HTTP response per
operation, or, when the transaction failed, one response whose OData error message starts
with the index of the failing operation (``"3:The specified entity already exists"``).

azure-data-tables' ``submit_transaction`` builds and parses this with the standard library's
``email`` package: about 1 ms of CPU per operation here (a 100-operation transaction cost
~100 ms of client CPU, a third of the service's CPU in the Entra replay, docs/performance.md).
:func:`submit_transaction` writes the same parts with string formatting and reads the answer
by splitting on its boundary, and behaves like the SDK's method: it returns one
``{"etag": ...}`` per operation and raises the SDK's exceptions (``TableTransactionError`` with
``index``, ``status_code`` and ``error_code``; the SDK's decoded error for an answer that is
not 202). The request goes through the table client's own pipeline (authentication, retries,
timeouts, the round-trip counter); Cosmos DB endpoints, whose dialect differs, use the SDK.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from azure.core import MatchConditions
from azure.core.rest import HttpRequest
from azure.data.tables import TableTransactionError, UpdateMode
from azure.data.tables._error import _decode_error
from azure.data.tables._serialize import _add_entity_properties
from azure.data.tables.aio import TableClient

__all__ = ["OperationResponse", "encode_batch", "parse_batch_response", "submit_transaction", "transaction_error"]

Operation = tuple[str, Mapping[str, Any], Mapping[str, Any]]

_INT32 = 2**31
_STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3})")
_INDEX = re.compile(r"^(\d+):")


def _entity_json(entity: Mapping[str, Any]) -> str:
    """The entity as the Table service's JSON: plain strings, booleans and 32-bit integers as
    they are (their EDM types are the defaults); anything else typed by the SDK's serializer."""
    for value in entity.values():
        if not (isinstance(value, str) or value is None or (isinstance(value, int) and -_INT32 <= value < _INT32)):
            return json.dumps(_add_entity_properties(entity))
    return json.dumps({k: v for k, v in entity.items() if v is not None})


def _key(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("PartitionKey or RowKey must be of type string.")
    return quote(value.replace("'", "''"), safe="")


def _if_match(kind: str, options: Mapping[str, Any]) -> str | None:
    """The ``If-Match`` of an operation, as the SDK's transaction builder sets it."""
    if kind in ("create", "upsert"):
        return None
    condition = options.get("match_condition") or MatchConditions.Unconditionally
    etag = options.get("etag")
    if condition == MatchConditions.IfNotModified:
        if not etag:
            raise ValueError("IfNotModified must be specified with etag.")
        return str(etag)
    if condition == MatchConditions.Unconditionally:
        if etag:
            raise ValueError("Etag is not supported for an Unconditional operation.")
        return "*"
    raise ValueError(f"Unsupported match condition: {condition}")


def _part(
    base: str, table: str, version: str, kind: str, entity: Mapping[str, Any], options: Mapping[str, Any], index: int
) -> str:
    if "PartitionKey" not in entity or "RowKey" not in entity:
        raise ValueError("PartitionKey and/or RowKey were not provided in entity")
    unknown = set(options) - {"mode", "etag", "match_condition"}
    if unknown:
        raise TypeError(f"unsupported transaction option(s): {sorted(unknown)}")
    kind = kind.lower()
    headers = [f"x-ms-version: {version}", "DataServiceVersion: 3.0"]
    if kind == "create":
        method, url = "POST", f"{base}/{table}"
        headers += ["Accept: application/json;odata=minimalmetadata", "Prefer: return-no-content"]
    elif kind in ("update", "upsert", "delete"):
        url = f"{base}/{table}(PartitionKey='{_key(entity['PartitionKey'])}',RowKey='{_key(entity['RowKey'])}')"
        mode = options.get("mode", UpdateMode.MERGE)
        if kind == "delete":
            method = "DELETE"
        elif mode == UpdateMode.REPLACE:
            method = "PUT"
        elif mode == UpdateMode.MERGE:
            method = "PATCH"
        else:
            raise ValueError(f"Mode type '{mode}' is not supported.")
        headers.append("Accept: application/json")
        match = _if_match(kind, options)
        if match is not None:
            headers.append(f"If-Match: {match}")
    else:
        raise ValueError(f"Unrecognized operation: {kind}")
    body = "" if kind == "delete" else _entity_json(entity)
    if body:
        headers = ["Content-Type: application/json", f"Content-Length: {len(body.encode())}", *headers]
    return (
        "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
        f"Content-ID: {index}\r\n\r\n{method} {url} HTTP/1.1\r\n" + "\r\n".join(headers) + f"\r\n\r\n{body}"
    )


def encode_batch(base: str, table: str, version: str, operations: Sequence[Operation]) -> tuple[str, bytes]:
    """The ``Content-Type`` and body of a ``$batch`` request for ``operations`` (one changeset).

    ``base`` is the account URL (``https://acct.table.core.windows.net``). Operations are the
    SDK's tuples: ``(kind, entity, options)``, kind ``create``/``update``/``upsert``/``delete``,
    options ``mode`` (``UpdateMode``), ``etag`` and ``match_condition``. All entities must share
    one PartitionKey.
    """
    partitions = {op[1].get("PartitionKey") for op in operations}
    if len(partitions) > 1:
        raise ValueError("Partition Keys in the batch must all be the same.")
    batch, changeset = f"batch_{uuid.uuid4()}", f"changeset_{uuid.uuid4()}"
    parts = [
        f"--{changeset}\r\n" + _part(base, table, version, kind, entity, options, i)
        for i, (kind, entity, options) in enumerate(operations)
    ]
    body = (
        f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n"
        + "\r\n".join(parts)
        + f"\r\n--{changeset}--\r\n\r\n--{batch}--\r\n"
    )
    return f"multipart/mixed; boundary={batch}", body.encode("utf-8")


def _boundary(content_type: str) -> bytes:
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary":
            return value.strip('"').encode()
    raise ValueError(f"no boundary in {content_type!r}")


def _split(body: bytes, boundary: bytes) -> list[bytes]:
    """The parts of a multipart body: what lies between ``--boundary`` lines, before ``--boundary--``."""
    delimiter = b"--" + boundary
    end = body.find(delimiter + b"--")
    chunks = (body if end < 0 else body[:end]).split(delimiter)[1:]
    return [chunk.strip(b"\r\n") for chunk in chunks]


def _headers_and_body(part: bytes) -> tuple[dict[str, str], bytes]:
    head, _, body = part.partition(b"\r\n\r\n")
    headers: dict[str, str] = {}
    for line in head.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
    return headers, body


class OperationResponse:
    """One operation's answer inside a batch response."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


def _answer(http: bytes) -> OperationResponse:
    status_line, _, rest = http.partition(b"\r\n")
    matched = _STATUS_LINE.match(status_line)
    if matched is None:
        raise ValueError(f"not an HTTP response: {status_line[:80]!r}")
    headers, body = _headers_and_body(rest)
    return OperationResponse(int(matched.group(1)), headers, body)


def parse_batch_response(content_type: str, body: bytes) -> list[OperationResponse]:
    """The operations' answers in a 202 batch response: those of its changeset response, or an
    ``application/http`` answer placed directly in the batch (a request the service rejected
    as a whole)."""
    answers: list[OperationResponse] = []
    for part in _split(body, _boundary(content_type)):
        headers, inner = _headers_and_body(part)
        kind = headers.get("content-type", "").lower()
        if kind.startswith("multipart/mixed"):
            answers.extend(
                _answer(_headers_and_body(sub)[1]) for sub in _split(inner, _boundary(headers["content-type"]))
            )
        elif kind.startswith("application/http"):
            answers.append(_answer(inner))
    return answers


def transaction_error(answer: OperationResponse) -> TableTransactionError:
    """The SDK's ``TableTransactionError`` for a failed operation's answer."""
    code = answer.headers.get("x-ms-error-code")
    message = ""
    try:
        error = json.loads(answer.body or b"{}").get("odata.error", {})
        code = error.get("code") or code
        message = (error.get("message") or {}).get("value") or ""
    except (ValueError, AttributeError):
        message = answer.body.decode("utf-8", "replace")[:500]
    matched = _INDEX.match(message)
    exc = TableTransactionError(message=f"{message}\nErrorCode:{code}", index=int(matched.group(1)) if matched else 0)
    exc.status_code = answer.status
    # The attributes the SDK's own errors carry (azure-core sets them in HttpResponseError's
    # constructor from a response; this error has none), for store_error's mapping.
    exc.error_code = code  # type: ignore[attr-defined]  # set dynamically by azure-core, not declared
    exc.additional_info = {}  # type: ignore[attr-defined]  # as above
    return exc


async def submit_transaction(
    table: TableClient, operations: Sequence[Operation], **kwargs: Any
) -> list[dict[str, Any]]:
    """Commit ``operations`` as one entity-group transaction; like ``TableClient.submit_transaction``."""
    if not operations:
        return []
    if getattr(table, "_cosmos_endpoint", False):
        return [dict(r) for r in await table.submit_transaction([(k, e, dict(o)) for k, e, o in operations], **kwargs)]
    base = f"{table.scheme}://{table._primary_hostname}"  # private: the account URL, as the SDK builds it
    content_type, body = encode_batch(base, table.table_name, table.api_version, operations)
    request = HttpRequest(
        "POST",
        f"{base}/$batch",
        headers={
            "x-ms-version": table.api_version,
            "DataServiceVersion": "3.0",
            "MaxDataServiceVersion": "3.0;NetFx",
            "Content-Type": content_type,
            "Accept": "application/json",
        },
        content=body,
    )
    # stream=True: the pipeline's content decoder must not try to read multipart as JSON.
    response = await table._client.send_request(request, stream=True, **kwargs)  # private: the client's own pipeline
    await response.read()
    if response.status_code != 202:
        raise _decode_error(response)  # type: ignore[no-untyped-call]  # the SDK's own decoder, untyped
    answers = parse_batch_response(response.headers.get("Content-Type", ""), response.content)
    failed = next((a for a in answers if not 200 <= a.status < 300), None)
    if failed is not None:
        raise transaction_error(failed)
    if len(answers) != len(operations):
        raise TableTransactionError(message=f"{len(answers)} answers to {len(operations)} operations")
    return [{"etag": a.headers["etag"]} if "etag" in a.headers else {} for a in answers]
