"""The providers' HTTP client: httpx's request and response models, sent by our transport,
HTTP/1.1 by h11 on asyncio streams with a small pool.

Why not httpx.AsyncClient on httpcore: on the MQTT benchmark a call to an instant provider
cost ~1.45 ms of CPU there (httpcore's pool walks every connection on each request, each read
passes through several layers, and the client adds cookies, auth and redirect stages the
providers never use); here it costs ~0.35 ms. h11 is the protocol engine httpcore uses too, so
parsing stays a well-kept library's job. Errors are httpx's own.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import h11
import httpx

KEEPALIVE_S = 5.0  # an idle connection older than this is closed, not reused (as httpx does)
READ_SIZE = 65536

Origin = tuple[str, str, int]
TIMEOUT = httpx.Timeout(connect=10.0, read=120.0, write=30.0, pool=60.0)


class HttpClient:
    """At most `connections` calls at once; no proxy from the environment, no cookies, no
    redirects followed (an API that answers a POST with a redirect is misconfigured)."""

    def __init__(
        self,
        connections: int = 8,
        verify: ssl.SSLContext | bool = True,
        timeouts: httpx.Timeout = TIMEOUT,
    ) -> None:
        self.transport = H11Transport(connections, verify)
        self.timeouts = timeouts

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes = b"",
        timeouts: httpx.Timeout | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """The open response; its body is read by the caller and closed on leaving."""
        request = httpx.Request(
            method,
            url,
            headers={"user-agent": "agentbox", **(headers or {})},
            content=content,
            extensions={"timeout": (timeouts or self.timeouts).as_dict()},
        )
        response = await self.transport.handle_async_request(request)
        response.request = request
        try:
            yield response
        finally:
            await response.aclose()

    async def request(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes = b"",
        timeouts: httpx.Timeout | None = None,
    ) -> httpx.Response:
        """A whole response, body read."""
        async with self.stream(
            method, url, headers=headers, content=content, timeouts=timeouts
        ) as response:
            await response.aread()
            return response

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


@dataclass(eq=False)
class _Conn:
    origin: Origin
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    h11: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT))
    idle_since: float = 0.0

    def usable(self, now: float) -> bool:
        """Still fit for another request: the server has not closed it, nor gone quiet long."""
        return (
            now - self.idle_since < KEEPALIVE_S
            and not self.reader.at_eof()
            and not self.writer.is_closing()
        )

    def close(self) -> None:
        self.writer.close()


class H11Transport(httpx.AsyncBaseTransport):
    """At most `connections` requests at once; idle connections are kept per origin."""

    def __init__(self, connections: int, verify: ssl.SSLContext | bool = True) -> None:
        self._connections = connections
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None
        self._slots = asyncio.Semaphore(connections)
        self._idle: dict[Origin, list[_Conn]] = {}

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:  # built on first https use: loading the CA bundle takes ~30 ms
            v = self._verify
            made = v if isinstance(v, ssl.SSLContext) else httpx.create_ssl_context(v, None, False)
            self._ssl = made
        return self._ssl

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        if self._slots.locked():  # wait for a connection, as long as the pool timeout allows
            try:
                async with asyncio.timeout(timeouts.get("pool")):
                    await self._slots.acquire()
            except TimeoutError:
                raise httpx.PoolTimeout("no free connection in time", request=request) from None
        else:
            await self._slots.acquire()  # free: returns at once, no timer to set up
        try:
            conn = self._reuse(_origin(request.url)) or await self._connect(request, timeouts)
            try:
                await self._send(conn, request, timeouts.get("write"))
                head = await _response_head(conn, request, timeouts.get("read"))
            except BaseException:
                conn.close()
                raise
        except BaseException:
            self._slots.release()
            raise
        body = _Body(self, conn, request, timeouts.get("read"))
        return httpx.Response(
            head.status_code,
            headers=list(head.headers),
            stream=body,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason},
        )

    def _reuse(self, origin: Origin) -> _Conn | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()  # the most recent: the one least likely to have timed out
            if conn.usable(now):
                return conn
            conn.close()
        return None

    async def _connect(self, request: httpx.Request, timeouts: dict[str, float | None]) -> _Conn:
        origin = _origin(request.url)
        scheme, host, port = origin
        tls = self._tls() if scheme == "https" else None
        try:
            async with asyncio.timeout(timeouts.get("connect")):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=tls, server_hostname=host if tls else None, limit=READ_SIZE
                )
        except TimeoutError:
            raise httpx.ConnectTimeout("connect timed out", request=request) from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from None
        return _Conn(origin, reader, writer)

    async def _send(self, conn: _Conn, request: httpx.Request, write_s: float | None) -> None:
        body = await request.aread()
        target = request.url.raw_path
        try:
            head = h11.Request(method=request.method, target=target, headers=request.headers.raw)
            parts = [head, h11.Data(data=body)] if body else [head]
            out = b"".join(conn.h11.send(p) or b"" for p in [*parts, h11.EndOfMessage()])
        except h11.LocalProtocolError as exc:
            raise httpx.LocalProtocolError(str(exc), request=request) from None
        try:
            conn.writer.write(out)
            if conn.writer.transport.get_write_buffer_size():  # not all sent: may have to wait
                async with asyncio.timeout(write_s):
                    await conn.writer.drain()
            else:
                await conn.writer.drain()  # returns at once; raises if the connection is gone
        except TimeoutError:
            raise httpx.WriteTimeout("write timed out", request=request) from None
        except OSError as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__, request=request) from None

    def _release(self, conn: _Conn, complete: bool) -> None:
        """A response is closed: keep its connection when both sides finished cleanly."""
        self._slots.release()
        h = conn.h11
        if complete and h.our_state is h11.DONE and h.their_state is h11.DONE:
            h.start_next_cycle()
            conn.idle_since = time.monotonic()
            idle = self._idle.setdefault(conn.origin, [])
            idle.append(conn)
            if len(idle) > self._connections:
                idle.pop(0).close()
        else:
            conn.close()

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


class _Body(httpx.AsyncByteStream):
    def __init__(
        self, pool: H11Transport, conn: _Conn, request: httpx.Request, read_s: float | None
    ) -> None:
        self._pool = pool
        self._conn = conn
        self._request = request
        self._read_s = read_s
        self._complete = False
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while not self._complete:
            event = await _next_event(self._conn, self._request, self._read_s)
            data = []
            # What is already received goes up as one piece (an SSE reply arrives as one
            # HTTP chunk per event; each piece costs a pass through every layer above).
            while isinstance(event, h11.Data):
                data.append(event.data)
                event = _buffered(self._conn, self._request)
            if isinstance(event, h11.EndOfMessage):
                self._complete = True
            if data:
                yield b"".join(data)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool._release(self._conn, self._complete)


async def _response_head(conn: _Conn, request: httpx.Request, read_s: float | None) -> h11.Response:
    while True:
        event = await _next_event(conn, request, read_s)
        if isinstance(event, h11.Response):
            return event
        # an h11.InformationalResponse (1xx): the real head follows


def _buffered(conn: _Conn, request: httpx.Request) -> Any:
    """The next h11 event from what was already received, or h11.NEED_DATA."""
    try:
        event = conn.h11.next_event()
    except h11.RemoteProtocolError as exc:
        raise httpx.RemoteProtocolError(str(exc), request=request) from None
    if event is h11.PAUSED:  # cannot happen while a request is open; be explicit
        raise httpx.RemoteProtocolError("response after the end", request=request)
    return event


async def _next_event(conn: _Conn, request: httpx.Request, read_s: float | None) -> h11.Event:
    """The next h11 event of this response, reading from the socket as h11 asks."""
    while True:
        event = _buffered(conn, request)
        if event is not h11.NEED_DATA:
            return event  # type: ignore[no-any-return]
        try:
            async with asyncio.timeout(read_s):
                data = await conn.reader.read(READ_SIZE)
        except TimeoutError:
            raise httpx.ReadTimeout("read timed out", request=request) from None
        except OSError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from None
        conn.h11.receive_data(data)  # b"" is the server's close: h11 says what it means


def _origin(url: httpx.URL) -> Origin:
    scheme = url.scheme
    return scheme, url.host, url.port or (443 if scheme == "https" else 80)
