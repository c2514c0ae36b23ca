"""An HTTP CONNECT tunnel through a proxy, then TLS to the real server inside it."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import TypeVar, cast

import httpx

from agentbox.providers.proxies import Proxy

MAX_HEAD = 16 * 1024  # a proxy's answer to CONNECT is a few lines

P = TypeVar("P", bound=asyncio.Protocol)


class _Handshake(asyncio.Protocol):
    """Reads the proxy's answer to CONNECT, and nothing after it (the server speaks TLS next,
    and only once we have)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if self.done.done():
            return
        if b"\r\n\r\n" in self._buf:
            self.done.set_result(self._buf)
        elif len(self._buf) > MAX_HEAD:
            self.done.set_exception(httpx.ProxyError("the proxy's answer to CONNECT is too long"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(httpx.ProxyError("the proxy closed the connection on CONNECT"))


def connect_request(host: str, port: int, proxy: Proxy) -> bytes:
    name = host.encode("idna") if not host.isascii() else host.encode("ascii")
    authority = (b"[%s]" % name if b":" in name else name) + b":%d" % port
    auth = b"\r\nproxy-authorization: " + proxy.auth if proxy.auth else b""
    return b"CONNECT %s HTTP/1.1\r\nhost: %s%s\r\n\r\n" % (authority, authority, auth)


async def tunnel(
    loop: asyncio.AbstractEventLoop,
    origin: tuple[str, str, int],
    proxy: Proxy,
    tls: ssl.SSLContext,
    protocol: Callable[[], P],
) -> P:
    """A new connection to `origin` through `proxy`, TLS inside, handed to `protocol`.
    OSError and ssl.SSLError pass up as they are; the proxy's refusals are httpx.ProxyError."""
    _, host, port = origin
    raw, shake = await loop.create_connection(_Handshake, proxy.host, proxy.port)
    try:
        raw.write(connect_request(host, port, proxy))
        answer = await shake.done
        head, _, extra = answer.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0].split(b" ", 2)
        status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
        if not 200 <= status < 300:
            why = " (its credentials were refused)" if status == 407 else ""
            refused = f"the proxy at {proxy.shown} refused CONNECT: HTTP {status}{why}"
            raise httpx.ProxyError(refused)
        if extra:
            raise httpx.ProxyError(f"the proxy at {proxy.shown} sent bytes before TLS began")
        conn = protocol()
        secure = await loop.start_tls(raw, conn, tls, server_hostname=host)
        if secure is None:
            raise httpx.ProxyError("TLS could not start inside the proxy's tunnel")
        conn.connection_made(secure)  # start_tls does not announce the new transport
        return conn
    except BaseException:
        raw.close()
        raise
