"""devtools.localhost over real HTTP, with a tiny FunctionApp defined here."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import azure.functions as func
import pytest
import yarl

import devtools.localhost as localhost_mod
from devtools.azurite import free_port
from devtools.children import stop_child
from devtools.localhost import (
    PROJECT_ROOT,
    LocalFunctionsHost,
    compile_route,
    http_routes,
    load_local_settings,
    read_route_prefix,
)

TIMEOUT = aiohttp.ClientTimeout(total=15)
MIB = 1024 * 1024

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


def _json(data: object, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(data), status_code=status, mimetype="application/json")


@app.route(route="hello/{name}", methods=["GET"])
async def hello(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"name": req.route_params["name"], "route": "param"})


@app.route(route="hello/special", methods=["GET"])
async def hello_special(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"route": "literal"})


@app.route(route="echo/{*path}", methods=["GET", "POST", "PATCH"])
async def echo(req: func.HttpRequest) -> func.HttpResponse:
    return _json(
        {
            "method": req.method,
            "url": req.url,
            "params": dict(req.params),
            "route_params": dict(req.route_params),
            "headers": {k: req.headers[k] for k in req.headers if k.startswith("x-")},
            "authorization": req.headers.get("Authorization"),
            "body": req.get_body().hex(),
        }
    )


@app.route(route="items/{id}", methods=["PUT"])
def sync_put(req: func.HttpRequest) -> str:  # a plain function, run in a thread
    return f"put {req.route_params['id']} {req.get_body().decode()}"


@app.function_name("custom_response")
@app.route(route="custom", methods=["POST"])
async def custom(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(
        b'{"ok":true}',
        status_code=201,
        headers={"Location": "http://example.invalid/x/1", "ETag": 'W/"1"', "X-Echo": req.headers.get("X-In", "")},
        mimetype="application/scim+json",
    )


@app.route(route="explicit-ct")
async def explicit_ct(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("hi", headers={"Content-Type": "text/csv"})


@app.route(route="gone", methods=["DELETE"])
async def gone(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(status_code=204)


@app.route(route="boom")
async def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("kaboom")


@app.route(route="slow/{n}")
async def slow(req: func.HttpRequest) -> func.HttpResponse:
    await asyncio.sleep(0.5)
    return _json({"n": req.route_params["n"]})


@app.route(route="size", methods=["POST", "PUT", "PATCH"])
async def size(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"size": len(req.get_body())})


@app.route(route="ctx")
async def with_context(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return _json({"function": context.function_name, "has_id": bool(context.invocation_id)})


@pytest.fixture(scope="module")
async def host():
    local = LocalFunctionsHost(app, route_prefix="")
    await local.start("127.0.0.1", 0)
    try:
        yield local
    finally:
        await local.stop()


@pytest.fixture(scope="module")
async def client():
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        yield session


# -- discovery and templates ------------------------------------------------------------


def test_routes_are_read_from_the_function_app():
    routes = {r.function_name: r for r in http_routes(app, "")}
    assert routes["hello"].template == "hello/{name}"
    assert routes["hello"].methods == frozenset({"GET"})
    assert routes["hello"].trigger_arg == "req"
    assert routes["custom_response"].template == "custom"  # @app.function_name is honoured
    assert routes["boom"].methods is None  # no methods: every method
    assert routes["with_context"].wants_context
    prefixed = {r.function_name: r.template for r in http_routes(app, "api")}
    assert prefixed["hello"] == "api/hello/{name}"


def test_literal_routes_rank_before_parameters_and_catch_alls():
    order = [r.function_name for r in http_routes(app, "")]
    assert order.index("hello_special") < order.index("hello")


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("scim/{tenant}/{*path}", "scim/t1/Users/abc", {"tenant": "t1", "path": "Users/abc"}),
        ("scim/{tenant}/{*path}", "scim/t1", {"tenant": "t1", "path": None}),
        ("scim/{tenant}/{*path}", "scim/t1/", {"tenant": "t1", "path": ""}),  # "" is dropped
        ("scim/{tenant}/{*path}", "scim/t1/a/b/", {"tenant": "t1", "path": "a/b/"}),
        ("scim/{tenant}/{*path}", "SCIM/t%2F1/Users", {"tenant": "t%2F1", "path": "Users"}),
        ("{*all}", "", {"all": ""}),
        ("{*all}", "x/y", {"all": "x/y"}),
        ("users/{id}", "users/abc", {"id": "abc"}),
        ("users/{id}", "users/abc/", {"id": "abc"}),
        ("Static/Path.json", "static/path.JSON/", {}),
    ],
)
def test_compile_route_matches(template, path, expected):
    regex, _ = compile_route(template)
    m = regex.fullmatch(path)
    assert m is not None, (template, path)
    assert m.groupdict() == expected


@pytest.mark.parametrize(
    ("template", "path"),
    [
        ("scim/{tenant}/{*path}", "scim"),
        ("scim/{tenant}/{*path}", "scimx/t1"),
        ("hello/{name}", "hello/a/b"),
        ("hello/{name}", "hello/"),
        ("hello/{name}", "hello"),
        ("static/path.json", "static/pathxjson"),  # a literal "." is not a regex "."
    ],
)
def test_compile_route_rejects(template, path):
    regex, _ = compile_route(template)
    assert regex.fullmatch(path) is None


def test_app_can_be_indexed_twice():
    # get_functions() alone refuses a second call on the same app; http_routes copes.
    assert len(http_routes(app, "")) == len(http_routes(app, "")) == len(app.get_functions())


def test_the_projects_app_is_served_as_its_routes_and_not_its_timer():
    from function_app import app as project_app

    routes = http_routes(project_app, read_route_prefix(PROJECT_ROOT))
    assert [(r.function_name, r.template, r.methods, r.trigger_arg) for r in routes] == [
        ("health", "api/health", frozenset({"GET"}), "req"),
        ("events_feed", "api/v1/tenants/{tenant}/events", frozenset({"GET"}), "req"),
        ("oauth_token", "oauth/{tenant}/token", frozenset({"POST"}), "req"),
        ("scim_endpoint", "scim/{tenant}/{*path}", frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"}), "req"),
        ("portal", "portal/{*path}", frozenset({"GET", "POST"}), "req"),
    ]
    host = LocalFunctionsHost(project_app, root=PROJECT_ROOT)
    assert host.match("GET", "/api/v1/tenants/contoso/events") == (host.routes[1], {"tenant": "contoso"})
    assert host.match("GET", "/api/health") == (host.routes[0], {})
    assert host.match("POST", "/api/v1/tenants/contoso/events") is None
    assert host.match("GET", "/scim/contoso/Users")[0].function_name == "scim_endpoint"


UNSUPPORTED_TEMPLATES = [
    "users/{id:guid}",  # a constraint
    "users/{id?}",  # an optional parameter
    "files/{name}.{ext}",  # parameters inside a segment
    "scim/{tenant}/{**path}",  # the ** catch-all
    "a/{*rest}/b",  # a catch-all that is not last
    "users/{id}/{id}",  # a parameter twice
    "users/{}",  # a parameter without a name
]


@pytest.mark.parametrize("template", UNSUPPORTED_TEMPLATES)
def test_an_unsupported_route_template_is_refused_at_start_up(template):
    other = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @other.route(route=template)
    async def odd_one(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("never")

    with pytest.raises(ValueError) as refused:
        LocalFunctionsHost(other, route_prefix="api")
    message = str(refused.value)
    assert "odd_one" in message and f"api/{template}" in message, message
    assert "func start" in message, message  # and says what to do instead


def test_the_cli_refuses_an_unsupported_route_and_exits(tmp_path: Path):
    (tmp_path / "host.json").write_text('{"version": "2.0"}')
    (tmp_path / "oddapp.py").write_text(
        "import azure.functions as func\n"
        "app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)\n"
        "@app.route(route='users/{id?}')\n"
        "async def odd_one(req: func.HttpRequest) -> func.HttpResponse:\n"
        "    return func.HttpResponse('never')\n"
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devtools.localhost",
            "--port",
            str(free_port()),
            "--root",
            str(tmp_path),
            "--app",
            "oddapp:app",
        ],
        cwd=PROJECT_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        stop_child(proc, signal.SIGTERM)
        pytest.fail("devtools.localhost started serving an app whose route it does not support")
    assert proc.returncode == 2, err
    assert "odd_one" in err and "api/users/{id?}" in err, err
    assert "Traceback" not in err, err  # one clear line, not a stack trace


def _wait_listening(proc: subprocess.Popen, port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_child(proc)
                pytest.fail(f"devtools.localhost did not start (exit code {proc.returncode})")
            time.sleep(0.1)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_cli_reads_host_json_local_settings_and_port_and_stops_on_a_signal(tmp_path: Path, sig):
    (tmp_path / "host.json").write_text('{"version": "2.0", "extensions": {"http": {"routePrefix": "v1"}}}')
    (tmp_path / "local.settings.json").write_text(json.dumps({"Values": {"LH_GREETING": "file", "LH_SET": "file"}}))
    (tmp_path / "envapp.py").write_text(
        "import os\n"
        "import azure.functions as func\n"
        "app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)\n"
        "@app.route(route='env/{name}', methods=['GET'])\n"
        "def env(req: func.HttpRequest) -> func.HttpResponse:\n"
        "    return func.HttpResponse(os.environ.get(req.route_params['name'], '-'))\n"
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "LH_GREETING"} | {"PORT": str(port), "LH_SET": "env"}
    proc = subprocess.Popen(  # no --port: $PORT
        [sys.executable, "-m", "devtools.localhost", "--root", str(tmp_path), "--app", "envapp:app"],
        cwd=PROJECT_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(proc, port)

        def get(path: str) -> tuple[int, bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                return response.status, response.read()
            finally:
                conn.close()

        assert get("/v1/env/LH_GREETING") == (200, b"file")  # from local.settings.json
        assert get("/v1/env/LH_SET") == (200, b"env")  # the environment wins
        assert get("/env/LH_GREETING") == (404, b"")  # the route prefix is host.json's
        proc.send_signal(sig)
        assert proc.wait(10) == 0
    finally:
        stop_child(proc)


def test_route_prefix_comes_from_host_json(tmp_path: Path):
    assert read_route_prefix(tmp_path) == "api"  # no host.json: the Functions default
    (tmp_path / "host.json").write_text('{"version": "2.0"}')
    assert read_route_prefix(tmp_path) == "api"
    (tmp_path / "host.json").write_text('{"version": "2.0", "extensions": {"http": {"routePrefix": "v1"}}}')
    assert read_route_prefix(tmp_path) == "v1"
    assert read_route_prefix(PROJECT_ROOT) == ""  # this project's host.json


def test_local_settings_never_override(tmp_path: Path):
    (tmp_path / "local.settings.json").write_text(json.dumps({"Values": {"A": "file", "B": "file"}}))
    env = {"A": "env"}
    assert load_local_settings(tmp_path, env) == ["B"]
    assert env == {"A": "env", "B": "file"}
    assert load_local_settings(tmp_path / "missing", env) == []


# -- over HTTP ----------------------------------------------------------------------------


async def test_route_params_and_json(host, client):
    async with client.get(f"{host.base_url}/hello/J%C3%B6rg") as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "application/json"
        assert await r.json() == {"name": "Jörg", "route": "param"}
    async with client.get(f"{host.base_url}/hello/special") as r:
        assert await r.json() == {"route": "literal"}
    async with client.get(f"{host.base_url}/HELLO/x") as r:  # literals are case-insensitive
        assert r.status == 200


async def test_request_round_trip(host, client):
    body = b"\x00\xff binary \xe9"
    headers = [("X-One", "1"), ("X-Multi", "a"), ("X-Multi", "b"), ("Authorization", "Bearer s3cret")]
    async with client.post(
        f"{host.base_url}/echo/Users/abc%20def?filter=userName%20eq%20%22x%22&a=1&a=2",
        data=body,
        headers=headers,
    ) as r:
        assert r.status == 200
        got = await r.json()
    assert got["method"] == "POST"
    assert got["url"] == (f"{host.base_url}/echo/Users/abc%20def?filter=userName%20eq%20%22x%22&a=1&a=2")
    assert got["params"] == {"filter": 'userName eq "x"', "a": "1"}  # first of repeated values
    assert got["route_params"] == {"path": "Users/abc def"}
    assert got["headers"] == {"x-one": "1", "x-multi": "a, b"}
    assert got["authorization"] == "Bearer s3cret"
    assert bytes.fromhex(got["body"]) == body


async def test_catch_all_matches_empty_remainder(host, client):
    for path in ("/echo", "/echo/"):
        async with client.get(host.base_url + path) as r:
            assert r.status == 200
            got = await r.json()
            assert got["route_params"] == {}
            assert got["body"] == ""


async def test_sync_handler_string_result(host, client):
    async with client.put(f"{host.base_url}/items/42", data=b"x") as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert await r.text() == "put 42 x"


async def test_response_status_headers_and_mimetype(host, client):
    async with client.post(f"{host.base_url}/custom", headers={"X-In": "hello"}) as r:
        assert r.status == 201
        assert r.headers["Content-Type"] == "application/scim+json"
        assert r.headers["Location"] == "http://example.invalid/x/1"
        assert r.headers["ETag"] == 'W/"1"'
        assert r.headers["X-Echo"] == "hello"
        assert await r.read() == b'{"ok":true}'
    async with client.get(f"{host.base_url}/explicit-ct") as r:
        assert r.headers["Content-Type"] == "text/csv"  # an explicit header wins over mimetype
    async with client.delete(f"{host.base_url}/gone") as r:
        assert r.status == 204
        assert await r.read() == b""


async def test_unknown_route_or_method_is_404_with_empty_body(host, client):
    for method, path in [("GET", "/nope"), ("GET", "/"), ("DELETE", "/hello/x"), ("GET", "/api/hello/x")]:
        async with client.request(method, host.base_url + path) as r:
            assert r.status == 404, (method, path)
            assert await r.read() == b""


async def test_handler_exception_is_500(host, client, caplog):
    with caplog.at_level(logging.ERROR, logger="devtools.localhost"):
        async with client.get(f"{host.base_url}/boom") as r:
            assert r.status == 500
            assert await r.read() == b""
    assert "kaboom" in caplog.text


async def test_context_argument(host, client):
    async with client.get(f"{host.base_url}/ctx") as r:
        assert await r.json() == {"function": "with_context", "has_id": True}


async def test_concurrent_requests(host):
    # Entra keeps ~5 requests in flight: they must run side by side, not one after another.
    connector = aiohttp.TCPConnector(limit=10)
    async with aiohttp.ClientSession(timeout=TIMEOUT, connector=connector) as session:

        async def one(n: int) -> dict:
            async with session.get(f"{host.base_url}/slow/{n}") as r:
                assert r.status == 200
                return await r.json()

        started = time.perf_counter()
        results = await asyncio.gather(*(one(n) for n in range(8)))
        elapsed = time.perf_counter() - started
    assert sorted(int(r["n"]) for r in results) == list(range(8))
    assert elapsed < 2.5, f"8 requests of 0.5 s took {elapsed:.2f} s: not concurrent"


async def test_keep_alive(host):
    def two_requests_one_connection() -> tuple[int, int, bool]:
        conn = http.client.HTTPConnection("127.0.0.1", host.port, timeout=10)
        try:
            conn.request("GET", "/hello/a")
            r1 = conn.getresponse()
            r1.read()
            sock = conn.sock
            conn.request("GET", "/nope")
            r2 = conn.getresponse()
            r2.read()
            return r1.status, r2.status, sock is not None and conn.sock is sock and not r1.will_close
        finally:
            conn.close()

    s1, s2, reused = await asyncio.to_thread(two_requests_one_connection)
    assert (s1, s2) == (200, 404)
    assert reused


async def test_access_log_has_no_secrets(host, client, caplog):
    with caplog.at_level(logging.INFO, logger="devtools.localhost"):
        async with client.get(
            f"{host.base_url}/echo/x?filter=secretvalue&token=abc123",
            headers={"Authorization": "Bearer topsecret-token"},
        ) as r:
            assert r.status == 200
        async with client.get(f"{host.base_url}/nope?q=hidden") as r:
            assert r.status == 404
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "devtools.localhost"]
    assert any("GET /echo/x?filter=*&token=* -> 200 (echo)" in line for line in lines), lines
    assert any("GET /nope?q=* -> 404" in line for line in lines), lines
    for secret in ("secretvalue", "abc123", "topsecret", "Bearer", "hidden"):
        assert secret not in caplog.text


async def test_access_log_escapes_control_characters_and_caps_the_line(host, client, caplog):
    forged = yarl.URL(f"{host.base_url}/echo/a%1B%5B2Jb%0D%0Aforged%E2%80%AE?x%0A=1", encoded=True)
    with caplog.at_level(logging.INFO, logger="devtools.localhost"):
        async with client.get(forged) as r:
            assert r.status == 200
        async with client.get(f"{host.base_url}/nope/" + "y" * 400) as r:
            assert r.status == 404
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "devtools.localhost"]
    assert any("GET /echo/a\\x1b[2Jb\\r\\nforged\\u202e?x\\n=* -> 200 (echo)" in line for line in lines), lines
    assert all(line.isprintable() for line in lines), lines
    assert any(("GET /nope/" + "y" * 293 + "… -> 404") in line for line in lines), lines


async def test_route_prefix_api(client):
    local = LocalFunctionsHost(app, route_prefix="api")
    await local.start("127.0.0.1", 0)
    try:
        async with client.get(f"{local.base_url}/api/hello/x") as r:
            assert r.status == 200
        async with client.get(f"{local.base_url}/hello/x") as r:
            assert r.status == 404
    finally:
        await local.stop()


async def test_host_defaults_to_project_host_json():
    local = LocalFunctionsHost(app)
    assert local.route_prefix == read_route_prefix(PROJECT_ROOT) == ""


# -- the host's own request limits: body size and slow clients --------------------------------
#
# The Functions host refuses a request body over its own limit (413) before the function sees
# it, and drops clients that take too long to send a request; the local host does the same
# (devtools.localhost: host_body_limit, head_timeout, body_timeout).


async def _raw(port: int, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    return reader, writer


async def _read_response(reader: asyncio.StreamReader, limit: float) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and the rest of one response of a connection the server then closes."""

    async def read() -> tuple[int, dict[str, str], bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        rest = await reader.read(int(headers.get("content-length", "0")) or -1) if status != 100 else b""
        return status, headers, rest

    return await asyncio.wait_for(read(), limit)


async def _closed_within(reader: asyncio.StreamReader, limit: float) -> float:
    """Seconds until the server closes the connection (EOF or reset); fails after ``limit`` seconds."""
    started = time.perf_counter()
    try:
        while await asyncio.wait_for(reader.read(65536), limit):
            pass
    except (ConnectionResetError, BrokenPipeError):
        pass
    except TimeoutError:
        pytest.fail(f"the server still holds the connection open after {limit} s")
    return time.perf_counter() - started


def test_host_body_limit_comes_from_the_functions_setting_or_four_times_the_app_limit():
    limit = localhost_mod.host_body_limit
    assert limit({}) == 4 * 1048576  # SCIM_MAX_BODY_BYTES defaults to 1 MiB
    assert limit({"SCIM_MAX_BODY_BYTES": "1000"}) == 4000
    assert limit({"FUNCTIONS_REQUEST_BODY_SIZE_LIMIT": "5000", "SCIM_MAX_BODY_BYTES": "1000"}) == 5000
    assert limit({"FUNCTIONS_REQUEST_BODY_SIZE_LIMIT": "", "SCIM_MAX_BODY_BYTES": ""}) == 4 * 1048576
    for bad in ("abc", "0", "-1", "1.5"):
        with pytest.raises(ValueError, match="FUNCTIONS_REQUEST_BODY_SIZE_LIMIT"):
            limit({"FUNCTIONS_REQUEST_BODY_SIZE_LIMIT": bad})


async def test_a_declared_body_over_the_host_limit_is_refused_before_it_is_read(monkeypatch):
    monkeypatch.delenv("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", raising=False)
    monkeypatch.delenv("SCIM_MAX_BODY_BYTES", raising=False)
    local = LocalFunctionsHost(app, route_prefix="")  # the default limit: 4 x 1 MiB
    await local.start("127.0.0.1", 0)
    try:
        for extra in (b"", b"Expect: 100-continue\r\n"):
            # headers only: an answer can only arrive if the host does not wait for the 40 MB
            started = time.perf_counter()
            reader, writer = await _raw(
                local.port,
                b"POST /size HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 40000000\r\n" + extra + b"\r\n",
            )
            status, headers, _ = await _read_response(reader, limit=5)
            assert status == 413, (extra, status)  # never "100 Continue"
            assert time.perf_counter() - started < 2
            assert headers.get("connection", "").lower() == "close"
            await _closed_within(reader, limit=5)
            writer.close()
    finally:
        await local.stop()


async def test_the_host_limit_is_exact_declared_or_chunked(client):
    local = LocalFunctionsHost(app, route_prefix="", max_body_bytes=1000)
    await local.start("127.0.0.1", 0)
    try:
        async with client.post(f"{local.base_url}/size", data=b"x" * 1000) as r:
            assert r.status == 200 and await r.json() == {"size": 1000}

        async def chunks(n: int):  # no Content-Length: Transfer-Encoding: chunked
            for _ in range(n):
                yield b"x" * 100

        async with client.post(f"{local.base_url}/size", data=chunks(10)) as r:
            assert r.status == 200 and await r.json() == {"size": 1000}
        async with client.post(f"{local.base_url}/size", data=b"x" * 1001) as r:
            assert r.status == 413
        reader, writer = await _raw(
            local.port,
            b"POST /size HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(b"64\r\n" + b"x" * 100 + b"\r\n" for _ in range(11)),
        )
        status, headers, _ = await _read_response(reader, limit=5)
        assert status == 413 and headers.get("connection", "").lower() == "close"
        await _closed_within(reader, limit=5)
        writer.close()
    finally:
        await local.stop()


async def test_a_body_between_the_app_limit_and_the_host_limit_reaches_the_app(monkeypatch, client):
    # the app answers its own SCIM 413 for these (SCIM_MAX_BODY_BYTES); the host must pass them on
    monkeypatch.delenv("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", raising=False)
    monkeypatch.delenv("SCIM_MAX_BODY_BYTES", raising=False)
    local = LocalFunctionsHost(app, route_prefix="")
    await local.start("127.0.0.1", 0)
    try:
        async with client.post(f"{local.base_url}/size", data=b"x" * (2 * MIB)) as r:
            assert r.status == 200 and await r.json() == {"size": 2 * MIB}
    finally:
        await local.stop()


def _vm_hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def test_a_chunked_body_is_not_read_past_the_host_limit(tmp_path):
    """``python -m devtools.localhost`` (default limit, 4 MiB) sent a 10 MB chunked body: 413, closed,
    and the process's peak memory does not grow by anything like the body."""
    (tmp_path / "host.json").write_text('{"version": "2.0", "extensions": {"http": {"routePrefix": ""}}}')
    (tmp_path / "bodyapp.py").write_text(
        "import azure.functions as func\n"
        "app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)\n"
        "@app.route(route='size', methods=['POST'])\n"
        "async def size(req: func.HttpRequest) -> func.HttpResponse:\n"
        "    return func.HttpResponse(str(len(req.get_body())))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", "SCIM_MAX_BODY_BYTES")}
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devtools.localhost",
            "--port",
            str(port),
            "--root",
            str(tmp_path),
            "--app",
            "bodyapp:app",
        ],
        cwd=PROJECT_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "devtools.localhost did not start"
                time.sleep(0.1)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/size", body=b"warm")
        assert conn.getresponse().read() == b"4"
        conn.close()
        before = _vm_hwm_kib(proc.pid)

        body_size, chunk = 10 * 1000 * 1000, b"x" * 65536
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sent = 0
        try:
            sock.sendall(b"POST /size HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n")
            while sent < body_size:
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                sent += len(chunk)
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the host stopped reading and closed the connection: expected
        answer = b""
        try:
            while data := sock.recv(65536):
                answer += data
        except OSError:
            pass
        sock.close()
        grown_mib = (_vm_hwm_kib(proc.pid) - before) / 1024
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert grown_mib < 8, f"peak memory grew by {grown_mib:.1f} MiB for a 10 MB body"
        assert proc.poll() is None
    finally:
        stop_child(proc, signal.SIGTERM)


# -- slow clients ------------------------------------------------------------------------------


async def test_a_half_sent_request_head_is_dropped_after_the_head_timeout():
    local = LocalFunctionsHost(app, route_prefix="", head_timeout=1.0, body_timeout=1.0)
    await local.start("127.0.0.1", 0)
    try:
        partials = [
            b"GET /hello/x HT",  # a partial request line
            b"GET /hello/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a",  # partial headers
            b"",  # nothing at all
        ]
        conns = [await _raw(local.port, data) for data in partials for _ in range(20)]
        waited = await asyncio.gather(*(_closed_within(reader, limit=4) for reader, _ in conns))
        assert max(waited) < 3, waited
        for _, writer in conns:
            writer.close()

        # a header dripped a byte at a time gets no more time than one sent at once
        reader, writer = await _raw(local.port, b"GET /hello/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Drip: ")
        started = time.perf_counter()

        async def drip() -> None:
            with contextlib.suppress(OSError):
                for _ in range(40):
                    writer.write(b"a")
                    await writer.drain()
                    await asyncio.sleep(0.1)

        dripping = asyncio.create_task(drip())
        await _closed_within(reader, limit=4)
        dripping.cancel()
        assert time.perf_counter() - started < 3
        writer.close()
    finally:
        await local.stop()


async def test_an_idle_keep_alive_connection_is_closed_and_busy_ones_are_served():
    local = LocalFunctionsHost(app, route_prefix="", head_timeout=1.0, body_timeout=1.0)
    await local.start("127.0.0.1", 0)
    try:
        reader, writer = await _raw(local.port, b"GET /hello/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status, _, body = await _read_response(reader, limit=5)
        assert status == 200 and json.loads(body) == {"name": "x", "route": "param"}
        for _ in range(3):  # requests 0.5 s apart on one connection: each within the head timeout
            await asyncio.sleep(0.5)
            writer.write(b"GET /hello/y HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            status, _, _ = await _read_response(reader, limit=5)
            assert status == 200
        await _closed_within(reader, limit=4)  # then idle: closed
        writer.close()
    finally:
        await local.stop()


async def test_a_body_sent_too_slowly_is_408_and_the_connection_closed():
    local = LocalFunctionsHost(app, route_prefix="", head_timeout=1.0, body_timeout=1.0)
    await local.start("127.0.0.1", 0)
    try:
        started = time.perf_counter()
        reader, writer = await _raw(
            local.port, b"POST /size HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n" + b"x" * 10
        )
        status, headers, _ = await _read_response(reader, limit=4)
        assert status == 408 and headers.get("connection", "").lower() == "close"
        await _closed_within(reader, limit=4)
        assert time.perf_counter() - started < 3
        writer.close()
    finally:
        await local.stop()


def test_the_default_timeouts_are_sensible():
    local = LocalFunctionsHost(app, route_prefix="")
    assert 10 <= local.head_timeout <= 30
    assert 10 <= local.body_timeout <= 120
