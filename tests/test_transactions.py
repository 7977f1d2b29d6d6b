"""``scim.store.transactions``: the ``$batch`` encoder/decoder behaves as the SDK's ``submit_transaction``.

Every case is sent both ways to a real Azurite and the outcomes are compared: the stored
entities, the ETags returned, and for a failed transaction the exception's type, status,
error code and failing index. The encoded body is also read back with the standard library's
MIME parser (an independent reader of the format).
"""

from __future__ import annotations

import email
import email.policy
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.core import MatchConditions
from azure.data.tables import TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from scim.store.transactions import encode_batch, parse_batch_response, submit_transaction, transaction_error


@pytest.fixture
async def tables(azurite: str) -> AsyncIterator[tuple[TableClient, TableClient]]:
    """Two fresh tables: one written with the SDK, one with :func:`submit_transaction`."""
    service = TableServiceClient.from_connection_string(azurite)
    names = [f"tx{uuid.uuid4().hex[:12]}" for _ in range(2)]
    for name in names:
        await service.create_table(name)
    yield service.get_table_client(names[0]), service.get_table_client(names[1])
    for name in names:
        await service.delete_table(name)
    await service.close()


PK = "tenant's é"  # a quote (doubled in the key) and a non-ASCII character (percent-encoded)


def seed() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    return [
        ("create", {"PartitionKey": PK, "RowKey": "u|1", "doc": '{"userName": "é😀"}', "active": True, "n": 7}, {}),
        ("create", {"PartitionKey": PK, "RowKey": "U|userName|a'b", "id": "1"}, {}),
        ("upsert", {"PartitionKey": PK, "RowKey": "m|g|1", "type": "User"}, {"mode": UpdateMode.REPLACE}),
        ("upsert", {"PartitionKey": PK, "RowKey": "x|merge", "a": "1"}, {"mode": UpdateMode.MERGE}),
        ("create", {"PartitionKey": PK, "RowKey": "f|float", "ratio": 1.5, "big": None}, {}),
    ]


async def outcome(table: TableClient, ops: list[tuple[str, dict[str, Any], dict[str, Any]]], mine: bool) -> Any:
    try:
        if mine:
            result = await submit_transaction(table, ops)
        else:
            result = await table.submit_transaction([(k, e, dict(o)) for k, e, o in ops])
        return ("ok", [sorted(r) for r in result])
    except TableTransactionError as exc:
        return (type(exc).__name__, exc.status_code, str(exc.error_code), exc.index)


async def rows(table: TableClient) -> list[dict[str, Any]]:
    found = [dict(e) async for e in table.list_entities()]
    return sorted(found, key=lambda e: e["RowKey"])


async def test_a_transaction_stores_the_same_entities_and_returns_etags(tables):
    sdk, mine = tables
    assert await outcome(sdk, seed(), False) == await outcome(mine, seed(), True) == ("ok", [["etag"]] * 5)
    assert await rows(sdk) == await rows(mine)
    assert (await mine.get_entity(PK, "u|1"))["doc"] == '{"userName": "é😀"}'


@pytest.mark.parametrize(
    "case",
    ["conflict at 2", "stale etag at 1", "missing entity at 1", "guarded update", "unconditional update and delete"],
)
async def test_failures_and_conditions_match_the_sdk(tables, case):
    sdk, mine = tables
    results = []
    for table, is_mine in ((sdk, False), (mine, True)):
        await outcome(table, seed(), is_mine)
        etag = (await table.get_entity(PK, "u|1")).metadata["etag"]
        ops: list[tuple[str, dict[str, Any], dict[str, Any]]] = {
            "conflict at 2": [
                ("upsert", {"PartitionKey": PK, "RowKey": "i|1"}, {"mode": UpdateMode.REPLACE}),
                ("delete", {"PartitionKey": PK, "RowKey": "m|g|1"}, {}),
                ("create", {"PartitionKey": PK, "RowKey": "U|userName|a'b", "id": "2"}, {}),
            ],
            "stale etag at 1": [
                ("upsert", {"PartitionKey": PK, "RowKey": "i|1"}, {"mode": UpdateMode.REPLACE}),
                (
                    "update",
                    {"PartitionKey": PK, "RowKey": "u|1", "doc": "x"},
                    {
                        "mode": UpdateMode.REPLACE,
                        "etag": "W/\"datetime'2020-01-01T00%3A00%3A00Z'\"",
                        "match_condition": MatchConditions.IfNotModified,
                    },
                ),
            ],
            "missing entity at 1": [
                ("upsert", {"PartitionKey": PK, "RowKey": "i|1"}, {"mode": UpdateMode.REPLACE}),
                ("update", {"PartitionKey": PK, "RowKey": "u|none", "m_1": True}, {"mode": UpdateMode.MERGE}),
            ],
            "guarded update": [
                (
                    "update",
                    {"PartitionKey": PK, "RowKey": "u|1", "doc": "y"},
                    {"mode": UpdateMode.REPLACE, "etag": etag, "match_condition": MatchConditions.IfNotModified},
                ),
                ("delete", {"PartitionKey": PK, "RowKey": "U|userName|a'b"}, {"etag": None}),
            ],
            "unconditional update and delete": [
                ("update", {"PartitionKey": PK, "RowKey": "x|merge", "b": "2"}, {"mode": UpdateMode.MERGE}),
                ("delete", {"PartitionKey": PK, "RowKey": "f|float"}, {}),
            ],
        }[case]
        results.append(await outcome(table, ops, is_mine))
    assert results[0] == results[1], results
    assert await rows(sdk) == await rows(mine)


async def test_a_transaction_over_two_partitions_or_an_unknown_operation_is_refused_before_sending(tables):
    _, mine = tables
    with pytest.raises(ValueError, match="Partition Keys"):
        await submit_transaction(
            mine,
            [
                ("create", {"PartitionKey": "a", "RowKey": "1"}, {}),
                ("create", {"PartitionKey": "b", "RowKey": "1"}, {}),
            ],
        )
    with pytest.raises(ValueError, match="Unrecognized operation"):
        await submit_transaction(mine, [("merge", {"PartitionKey": "a", "RowKey": "1"}, {})])
    with pytest.raises(TypeError):
        await submit_transaction(mine, [("create", {"PartitionKey": "a", "RowKey": "1", "too_big": 2**40}, {})])
    assert await rows(mine) == []


def test_the_encoded_batch_reads_back_as_one_changeset_of_http_requests():
    ops = [
        ("create", {"PartitionKey": PK, "RowKey": "u|1", "doc": "é"}, {}),
        (
            "update",
            {"PartitionKey": PK, "RowKey": "u|2", "doc": "x"},
            {"mode": UpdateMode.REPLACE, "etag": 'W/"e"', "match_condition": MatchConditions.IfNotModified},
        ),
        ("upsert", {"PartitionKey": PK, "RowKey": "m|g|1"}, {"mode": UpdateMode.MERGE}),
        ("delete", {"PartitionKey": PK, "RowKey": "U|userName|a'b"}, {}),
    ]
    content_type, body = encode_batch("https://acct.table.core.windows.net", "dir", "2019-02-02", ops)
    message = email.message_from_bytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body, policy=email.policy.HTTP
    )
    [changeset] = message.get_payload()
    parts = changeset.get_payload()
    assert len(parts) == 4 and all(p.get_content_type() == "application/http" for p in parts)
    lines = [p.get_payload(decode=True).decode().split("\r\n") for p in parts]
    key = "PartitionKey='tenant%27%27s%20%C3%A9'"
    assert lines[0][0] == "POST https://acct.table.core.windows.net/dir HTTP/1.1"
    assert lines[1][0] == f"PUT https://acct.table.core.windows.net/dir({key},RowKey='u%7C2') HTTP/1.1"
    assert 'If-Match: W/"e"' in lines[1]
    assert lines[2][0].startswith("PATCH ") and not any(h.startswith("If-Match") for h in lines[2])
    assert (
        lines[3][0]
        == f"DELETE https://acct.table.core.windows.net/dir({key},RowKey='U%7CuserName%7Ca%27%27b') HTTP/1.1"
    )
    assert "If-Match: *" in lines[3]


def test_answers_are_read_from_the_changeset_or_directly_from_the_batch():
    changeset = (
        b"--batchresponse_1\r\nContent-Type: multipart/mixed; boundary=changesetresponse_2\r\n\r\n"
        b"--changesetresponse_2\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        b'HTTP/1.1 204 No Content\r\nETag: W/"a"\r\nDataServiceVersion: 3.0;\r\n\r\n\r\n'
        b"--changesetresponse_2\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        b'HTTP/1.1 201 Created\r\nETag: W/"b"\r\nContent-Type: application/json\r\n\r\n{"RowKey": "x"}\r\n'
        b"--changesetresponse_2--\r\n--batchresponse_1--\r\n"
    )
    answers = parse_batch_response("multipart/mixed; boundary=batchresponse_1", changeset)
    assert [(a.status, a.headers["etag"]) for a in answers] == [(204, 'W/"a"'), (201, 'W/"b"')]
    assert answers[1].body == b'{"RowKey": "x"}'
    rejected = (
        b"--batchresponse_9\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n\r\n"
        b'{"odata.error":{"code":"InvalidInput","message":{"value":"0:Bad batch"}}}\r\n--batchresponse_9--\r\n'
    )
    [answer] = parse_batch_response('multipart/mixed; boundary="batchresponse_9"', rejected)
    error = transaction_error(answer)
    assert (answer.status, error.status_code, error.error_code, error.index) == (400, 400, "InvalidInput", 0)
