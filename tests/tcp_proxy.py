"""A TCP proxy on 127.0.0.1 that plays storage faults, for the fault tests (``tests/test_faults.py``).

It sits in front of one local port (Azurite's Table port) and runs its own event loop in a
daemon thread, so the faults it plays do not depend on the test's event loop. Its mode is
changed from the test (thread-safe); every change closes the connections open at that moment,
like a network blip, so no HTTP stream is ever left half-forwarded:

- ``pass``: forward both ways; ``delay`` seconds are waited before each chunk of an answer.
- ``hang``: accept connections and read what the client sends, never answer (a storage that
  accepts and then hangs). ``count``: only that many connections hang, later ones pass.
- ``busy``: answer each request ``503 Server Busy`` (and close), as a throttled storage does.
  ``count``: only that many requests get it, later ones pass.
- ``reset``: accept and close at once (connection reset / closed without an answer).
  ``count``: only that many connections are reset, later ones pass.
- ``refuse``: not listening at all: connection refused, as when Azurite is stopped.
- ``drop``: forward requests, but when the answer to a request for which ``drop_match(request
  bytes)`` is true arrives, close the client's connection instead of forwarding it (the
  storage did the work, the answer is lost). ``drops`` limits how many answers are dropped
  (None: all of them).
- ``cut``: hold each request until it has arrived whole (head and ``Content-Length`` body);
  one for which ``drop_match(request bytes)`` is true is never forwarded: the client's
  connection is closed (the request is lost, storage never sees it). ``drops`` limits how many
  requests are cut (None: all of them); ``dropped`` counts them.

Usage::

    with TcpProxy(azurite_port) as proxy:
        proxy.set_mode("hang")
        ...
        proxy.set_mode("pass")

Everything stays on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from types import TracebackType

__all__ = ["MODES", "TcpProxy"]

MODES = ("pass", "hang", "reset", "refuse", "drop", "busy", "cut")
_HOST = "127.0.0.1"
_CHUNK = 65536
_HTTP_METHODS = (b"GET ", b"POST ", b"PUT ", b"PATCH ", b"DELETE ", b"MERGE ", b"HEAD ", b"OPTIONS ")


class _Pair:
    """One proxied connection: the client's side, the upstream side, the request being answered."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.request = bytearray()  # the bytes of the current request (for drop_match)
        self.held = bytearray()  # cut mode: bytes of the current request not forwarded yet
        self.answering = False
        self.tasks: list[asyncio.Task[None]] = []

    def close(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                with contextlib.suppress(Exception):
                    writer.transport.abort()
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()


class TcpProxy:
    """A fault-playing TCP proxy from ``127.0.0.1:{port}`` to ``127.0.0.1:{target_port}``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.mode = "pass"
        self.delay = 0.0
        self.drop_match: Callable[[bytes], bool] = lambda request: True
        self.drops: int | None = None
        self.dropped = 0
        self.count: int | None = None  # hang/busy: how many connections/requests get the fault
        self.faulted = 0
        self.accepted = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._pairs: set[_Pair] = set()

    # ---- control, from the test's thread ----

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    def set_mode(
        self,
        mode: str,
        *,
        delay: float = 0.0,
        drops: int | None = None,
        drop_match: Callable[[bytes], bool] | None = None,
        count: int | None = None,
    ) -> None:
        """Switch to ``mode`` (closing the open connections); see the module docstring."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        self._call(self._switch(mode, delay, drops, drop_match, count))

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _call(self, coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    # ---- inside the proxy's loop ----

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, _HOST, self.port, reuse_address=True)
            self.port = self._server.sockets[0].getsockname()[1]

    async def _unlisten(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _shutdown(self) -> None:
        await self._unlisten()
        for pair in list(self._pairs):
            pair.close()
        self._pairs.clear()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        if others:
            await asyncio.wait(others, timeout=2)

    async def _switch(
        self, mode: str, delay: float, drops: int | None, drop_match: Callable[[bytes], bool] | None, count: int | None
    ) -> None:
        for pair in list(self._pairs):
            pair.close()
        self._pairs.clear()
        self.mode, self.delay, self.drops, self.dropped = mode, delay, drops, 0
        self.count, self.faulted = count, 0
        if drop_match is not None:
            self.drop_match = drop_match
        if mode == "refuse":
            await self._unlisten()
        else:
            await self._listen()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        pair = _Pair(writer)
        if self.mode == "reset" and (self.count is None or self.faulted < self.count):
            self.faulted += 1
            pair.close()
            return
        self._pairs.add(pair)
        faulty = self.mode in ("hang", "busy") and (self.count is None or self.faulted < self.count)
        if faulty and self.mode == "busy":
            self.faulted += 1
            await self._busy(pair, reader, writer)
            return
        if faulty and self.mode == "hang":
            self.faulted += 1
            pair.tasks.append(asyncio.current_task())  # type: ignore[arg-type]
            with contextlib.suppress(Exception, asyncio.CancelledError):
                while await reader.read(_CHUNK):  # swallow the request, never answer
                    pass
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(_HOST, self.target_port), 5)
        except (OSError, TimeoutError):
            pair.close()
            self._pairs.discard(pair)
            return
        pair.upstream = up_writer
        pair.tasks = [
            asyncio.create_task(self._requests(pair, reader, up_writer)),
            asyncio.create_task(self._answers(pair, up_reader, writer)),
        ]
        await asyncio.gather(*pair.tasks, return_exceptions=True)

    async def _busy(self, pair: _Pair, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read one request, answer it 503 Server Busy and close (the client reconnects)."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            if length:
                await asyncio.wait_for(reader.readexactly(length), 5)
            body = b'{"odata.error":{"code":"ServerBusy","message":{"lang":"en-US","value":"busy"}}}'
            writer.write(
                b"HTTP/1.1 503 Server Busy\r\nContent-Type: application/json\r\nConnection: close\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        finally:
            self._end(pair)

    async def _requests(self, pair: _Pair, reader: asyncio.StreamReader, upstream: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(_CHUNK):
                if pair.answering or chunk.startswith(_HTTP_METHODS):
                    pair.request.clear()
                    pair.answering = False
                if len(pair.request) < 1 << 20:
                    pair.request += chunk
                if self.mode == "cut":
                    pair.held += chunk
                    if not _whole(pair.request):
                        continue
                    chunk, pair.held = bytes(pair.held), bytearray()
                    if (self.drops is None or self.dropped < self.drops) and self.drop_match(bytes(pair.request)):
                        self.dropped += 1
                        break
                upstream.write(chunk)
                await upstream.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._end(pair)

    async def _answers(self, pair: _Pair, reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(_CHUNK):
                if not pair.answering:
                    pair.answering = True
                    if (
                        self.mode == "drop"
                        and (self.drops is None or self.dropped < self.drops)
                        and self.drop_match(bytes(pair.request))
                    ):
                        self.dropped += 1
                        break
                if self.delay:
                    await asyncio.sleep(self.delay)
                client.write(chunk)
                await client.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._end(pair)

    def _end(self, pair: _Pair) -> None:
        pair.close()
        self._pairs.discard(pair)


def _whole(request: bytes | bytearray) -> bool:
    """Whether ``request`` holds a whole HTTP request: its head and its ``Content-Length`` body."""
    head_end = request.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    length = 0
    for line in bytes(request[:head_end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip() or 0)
    return len(request) >= head_end + 4 + length
