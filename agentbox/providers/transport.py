"""The providers' HTTP client: HTTP/1.1 on an asyncio protocol, responses parsed by httptools
(llhttp, Node's parser, as uvicorn uses it), a small pool of kept-alive connections per origin.

Why not httpx.AsyncClient: a call to an instant provider cost ~1.45 ms of CPU through its
client and httpcore's pool, and still ~0.23 ms through httpx's models on h11; here ~0.07 ms.
Parsing stays a well-kept library's job; framing at the end of a connection is ours. Errors are
httpx's exceptions and timeouts an httpx.Timeout, so callers keep httpx's error model; callers
reach it through one method (providers/seam.py), so plain httpx can stand in for it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, NamedTuple, cast

import httptools
import httpx

from agentbox.providers.proxies import Proxies, Proxy, ProxyError
from agentbox.providers.seam import Call
from agentbox.providers.slots import Slots
from agentbox.providers.tunnel import tunnel

KEEPALIVE_S = 5.0  # an idle connection older than this is closed, not reused (as httpx does)
HIGH_WATER = 256 * 1024  # body bytes held unread before the socket stops being read

TIMEOUT = httpx.Timeout(connect=10.0, read=120.0, write=30.0, pool=60.0)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class Target(NamedTuple):
    origin: tuple[str, str, int]
    head: bytes  # request line's target and the host header
    absolute: bytes  # scheme://netloc: the request target's prefix through an http proxy


@functools.lru_cache(maxsize=64)
def target(url: str) -> Target:
    """A URL parsed once (httpx's parser: IDNA, IPv6, escapes); the providers call few URLs."""
    u = httpx.URL(url)
    if u.scheme not in ("http", "https") or not u.host:
        raise httpx.UnsupportedProtocol(f"not an http(s) URL: {u.scheme}://{u.host}")
    port = u.port or (443 if u.scheme == "https" else 80)
    head = u.raw_path + b" HTTP/1.1\r\nhost: " + u.netloc
    return Target((u.scheme, u.host, port), head, u.raw_scheme + b"://" + u.netloc)


def request_bytes(
    method: str, url: str, headers: Mapping[str, str], content: bytes, proxy: Proxy | None = None
) -> bytes:
    """The request as sent (absolute-form when `proxy` carries it). Header values never
    appear in an error: they hold API keys."""
    t = target(url)
    lines = [method.encode("ascii"), b" ", t.absolute if proxy else b"", t.head]
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name):
            raise httpx.LocalProtocolError(f"header name {name!r} is not an HTTP token")
        if "\r" in value or "\n" in value or "\0" in value:
            raise httpx.LocalProtocolError(f"header {name} holds a line break or NUL")
        try:
            lines += (b"\r\n", name.encode("ascii"), b": ", value.strip().encode("latin-1"))
        except UnicodeEncodeError:
            raise httpx.LocalProtocolError(f"header {name} holds a non-Latin-1 character") from None
    if proxy is not None and proxy.auth:
        lines += (b"\r\nproxy-authorization: ", proxy.auth)
    if content or method in ("POST", "PUT", "PATCH"):
        lines += (b"\r\ncontent-length: ", str(len(content)).encode())
    lines += (b"\r\n\r\n", content)
    return b"".join(lines)


class _Stale(Exception):
    """A kept-alive connection the server had already closed: nothing was answered on it."""


class HttpClient:
    """At most `connections` calls at once (`resize` changes it); proxies from the environment
    (providers/proxies.py); no cookies, no redirects followed (an API that answers a POST with
    a redirect is misconfigured)."""

    def __init__(
        self,
        connections: int = 8,
        verify: ssl.SSLContext | bool = True,
        timeouts: httpx.Timeout = TIMEOUT,
        proxies: Proxies | None = None,
    ) -> None:
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None
        self._slots = Slots(connections)
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._proxies = proxies or Proxies.from_env()
        self._proxy_of: dict[tuple[str, str, int], Proxy | None] = {}
        self.timeouts = timeouts

    def proxy_problems(self) -> list[str]:
        """Proxy settings that cannot be used (each names its variable, never its value)."""
        return self._proxies.problems

    def resize(self, connections: int) -> None:
        """Allow `connections` calls at once from now on (a reload changed the lane's width)."""
        self._slots.resize(connections)

    async def handle_async_request(self, call: Call) -> Response:
        """The open response once its head is in (see the seam). A kept-alive connection that
        the server closed while it sat idle is tried once more on a new one: nothing came back
        on it, so the call never reached an answer, and it is not the provider's failure."""
        t = call.timeouts or self.timeouts
        origin = target(call.url).origin
        proxy = self._proxy(origin)
        headers = {"user-agent": "agentbox", **call.headers}
        # Only plain http is spoken to the proxy itself; https goes to the server in a tunnel.
        forward = proxy if origin[0] == "http" else None
        data = request_bytes(call.method, call.url, headers, call.content, forward)
        await self._slots.acquire(t.pool)
        try:
            conn = self._reuse(origin)
            head = None
            if conn is not None:
                try:
                    head = await self._exchange(conn, data, t, reused=True)
                except _Stale:
                    conn = None
            if conn is None or head is None:
                conn = await self._connect(origin, proxy, t.connect)
                head = await self._exchange(conn, data, t, reused=False)
        except BaseException:
            self._slots.release()
            raise
        return Response(conn, head[0], head[1], t.read, self._release)

    def _proxy(self, origin: tuple[str, str, int]) -> Proxy | None:
        if origin not in self._proxy_of:
            try:
                self._proxy_of[origin] = self._proxies.for_origin(*origin)
            except ProxyError as exc:
                raise httpx.ConnectError(str(exc)) from None
        return self._proxy_of[origin]

    async def _exchange(
        self, conn: _Conn, data: bytes, t: httpx.Timeout, reused: bool
    ) -> tuple[int, list[tuple[bytes, bytes]]]:
        try:
            await conn.send(data, t.write)
            return await conn.head(t.read)
        except BaseException as exc:
            conn.close()
            stale = isinstance(exc, httpx.WriteError | httpx.RemoteProtocolError)
            if reused and stale and not conn.received:
                raise _Stale from None
            raise

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:  # built on first https use: loading the CA bundle takes ~30 ms
            v = self._verify
            made = v if isinstance(v, ssl.SSLContext) else httpx.create_ssl_context(v, None, False)
            self._ssl = made
        return self._ssl

    def _reuse(self, origin: tuple[str, str, int]) -> _Conn | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()  # the most recent: the one least likely to have timed out
            if conn.usable(now):
                return conn
            conn.close()
        return None

    async def _connect(
        self, origin: tuple[str, str, int], proxy: Proxy | None, connect_s: float | None
    ) -> _Conn:
        scheme, host, port = origin
        tls = self._tls() if scheme == "https" else None
        loop = asyncio.get_running_loop()
        via = f" (through the proxy at {proxy.shown})" if proxy else ""
        try:
            async with asyncio.timeout(connect_s):
                if proxy is not None and tls is not None:
                    return await tunnel(loop, origin, proxy, tls, lambda: _Conn(origin))
                _, conn = await loop.create_connection(
                    lambda: _Conn(origin),
                    proxy.host if proxy else host,
                    proxy.port if proxy else port,
                    ssl=tls,
                    server_hostname=host if tls else None,
                )
                return conn
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connect timed out{via}") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"{str(exc) or type(exc).__name__}{via}") from None

    def _release(self, conn: _Conn) -> None:
        """A response is closed: keep its connection when both sides finished cleanly."""
        self._slots.release()
        if not conn.reusable():
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle = self._idle.setdefault(conn.origin, [])
        idle.append(conn)
        if len(idle) > self._slots.limit:
            idle.pop(0).close()

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class Response:
    """Status and headers at once; the body by `aiter_bytes` as it comes, or whole by `aread`;
    `aclose` gives the connection back (kept only if the body was read to its end)."""

    def __init__(
        self,
        conn: _Conn,
        status: int,
        raw: list[tuple[bytes, bytes]],
        read_s: float | None,
        release: Callable[[_Conn], None],
    ):
        self._conn = conn
        self._raw = raw
        self._read_s = read_s
        self._release: Callable[[_Conn], None] | None = release
        self._headers: httpx.Headers | None = None
        self.status_code = status
        self.content = b""

    @property
    def headers(self) -> httpx.Headers:
        if self._headers is None:  # built only when asked: the success path never looks
            self._headers = httpx.Headers(self._raw)
        return self._headers

    @property
    def unread_bytes(self) -> int:
        """Body bytes that arrived and wait to be read (a slow reader holds about HIGH_WATER)."""
        return self._conn.held

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """What has arrived, one piece per wake-up (an SSE reply comes as one HTTP chunk per
        event; each piece costs a pass through every layer above)."""
        while (piece := await self._conn.body(self._read_s)) is not None:
            yield piece

    async def aread(self) -> bytes:
        self.content = b"".join([piece async for piece in self.aiter_bytes()])
        return self.content

    async def aclose(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release(self._conn)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class _Conn(asyncio.Protocol):
    """One connection: bytes in go through the parser as they arrive; the caller awaits the
    head, then body pieces. At most one request at a time."""

    def __init__(self, origin: tuple[str, str, int]) -> None:
        self.origin = origin
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._busy = False
        self._eof = False
        self._error: httpx.HTTPError | None = None
        self.received = False  # a byte of this request's answer came: not a stale connection
        self._new_response()

    def _new_response(self) -> None:
        self._status = 0
        self._raw: list[tuple[bytes, bytes]] = []
        self._head_done = False
        self._complete = False
        self._keep_alive = False
        self._until_close = False  # a body without length: it ends when the server closes
        self._pieces: list[bytes] = []
        self.held = 0  # body bytes arrived and not yet taken by body()
        self._paused = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if not self._busy:  # bytes nobody asked for: this connection cannot be trusted
            self.close()
            return
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._error = httpx.RemoteProtocolError(f"malformed response: {exc}")
            self.close()
        self._wake()

    def eof_received(self) -> bool | None:
        self._eof = True
        self._wake()
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._write_paused = False
        self._wake()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._head_done:  # after the head: chunked trailers, which nobody here needs
            self._raw.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # 1xx: an interim head; the real one follows
            self._raw = []
            return
        self._status = status
        self._head_done = True
        names = {name.lower() for name, _ in self._raw}
        self._until_close = (
            b"content-length" not in names
            and b"transfer-encoding" not in names
            and status not in (204, 304)
        )

    def on_body(self, body: bytes) -> None:
        self._pieces.append(body)
        self.held += len(body)
        if self.held > HIGH_WATER and not self._paused and self._transport:
            self._paused = True
            self._transport.pause_reading()

    def on_message_complete(self) -> None:
        if self._head_done:
            self._complete = True
            self._keep_alive = self._parser.should_keep_alive()

    # the caller's side
    def usable(self, now: float) -> bool:
        """Still fit for another request: the server has not closed it, nor gone quiet long."""
        t = self._transport
        return (
            now - self.idle_since < KEEPALIVE_S
            and not self._eof
            and t is not None
            and not t.is_closing()
        )

    def reusable(self) -> bool:
        ok = self._complete and self._keep_alive and not self._eof and self._error is None
        self._busy = False
        self._new_response()
        return ok

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def send(self, data: bytes, write_s: float | None) -> None:
        t = self._transport
        if t is None or t.is_closing() or self._eof:
            raise httpx.WriteError("connection closed")
        self._busy = True
        self.received = False
        t.write(data)
        if self._write_paused:  # the kernel's buffer is full: wait, as long as allowed
            try:
                async with asyncio.timeout(write_s):
                    while self._write_paused:
                        await self._wait()
            except TimeoutError:
                raise httpx.WriteTimeout("write timed out") from None
            if self._eof:
                raise httpx.WriteError("connection closed while sending")

    async def head(self, read_s: float | None) -> tuple[int, list[tuple[bytes, bytes]]]:
        while not self._head_done:
            self._check_end(head=True)
            await self._read_wait(read_s)
        return self._status, self._raw

    async def body(self, read_s: float | None) -> bytes | None:
        """The next piece of the body, or None at its end."""
        while True:
            if self._pieces:
                piece = b"".join(self._pieces) if len(self._pieces) > 1 else self._pieces[0]
                self._pieces.clear()
                self.held = 0
                if self._paused and self._transport is not None:
                    self._paused = False
                    self._transport.resume_reading()
                return piece
            if self._complete:
                return None
            self._check_end(head=False)
            await self._read_wait(read_s)

    def _check_end(self, head: bool) -> None:
        if self._error is not None:
            raise self._error
        if not self._eof:
            return
        if head:
            raise httpx.RemoteProtocolError("server disconnected without sending a response")
        if self._until_close:
            self._complete = True  # HTTP/1.0 style: the close is the end; not reused
            return
        raise httpx.RemoteProtocolError("server closed the connection before the body's end")

    async def _read_wait(self, read_s: float | None) -> None:
        try:
            async with asyncio.timeout(read_s):
                await self._wait()
        except TimeoutError:
            raise httpx.ReadTimeout("read timed out") from None

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
