"""The providers' HTTP client, against a raw loopback server that answers as scripted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from agentbox.providers import http
from agentbox.providers.seam import Reply, Transport, stream
from agentbox.providers.transport import HIGH_WATER, HttpClient, Response

pytestmark = pytest.mark.asyncio

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def request(c: Transport, method: str, url: str, **kw: Any) -> Reply:
    """A whole response, body read."""
    async with stream(c, method, url, **kw) as reply:
        await reply.aread()
        return reply


# request number -> bytes to send (pieces: sent apart, so they arrive apart; None: close)
Script = Callable[[int], bytes | list[bytes] | None]


class RawServer:
    """Reads one request head (and its content-length body), then writes what the script says,
    closing after it where HTTP says so; counts connections so reuse can be checked."""

    def __init__(self, script: Script, hang_up: bool = False) -> None:
        self.script = script
        self.hang_up = hang_up  # close after each answer without saying so (an idle timeout)
        self.connections = 0
        self.requests = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        await reader.readexactly(int(line.split(b":")[1]))
                self.requests += 1
                answer = self.script(self.requests)
                if answer is None:
                    break
                pieces = answer if isinstance(answer, list) else [answer]
                for i, piece in enumerate(pieces):
                    if i:
                        await asyncio.sleep(0.05)
                    writer.write(piece)
                    await writer.drain()
                answer = b"".join(pieces)
                closing = b"connection: close" in head + answer or answer.startswith(b"HTTP/1.0")
                if closing or self.hang_up:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


async def test_keepalive_reuses_one_connection() -> None:
    server = RawServer(lambda n: OK)
    async with server as url, HttpClient(2) as c:
        for _ in range(5):
            assert (await request(c, "POST", url + "/x", content=b'{"a": 1}')).text == "ok"
    assert (server.connections, server.requests) == (1, 5)


async def test_server_closing_idle_connection_gets_a_fresh_one() -> None:
    close = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
    server = RawServer(lambda n: close)
    async with server as url, HttpClient(2) as c:
        for _ in range(3):
            assert (await request(c, "GET", url)).text == "ok"
    assert server.connections == 3
    server = RawServer(lambda n: OK, hang_up=True)
    async with server as url, HttpClient(2) as c:
        for _ in range(3):
            assert (await request(c, "GET", url)).text == "ok"
            await asyncio.sleep(0.05)  # the server's FIN arrives on the idle connection
    assert server.connections == 3


async def test_close_delimited_and_chunked_bodies_with_trailers() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nx-trailer: t\r\n\r\n"
    )
    old = b"HTTP/1.0 200 OK\r\n\r\nuntil close"
    server = RawServer(lambda n: chunked if n == 1 else old)
    async with server as url, HttpClient(2) as c:
        assert (await request(c, "GET", url)).text == "abcde"
        assert (await request(c, "GET", url)).text == "until close"  # same connection; it closes
    assert server.connections == 1


async def test_response_left_half_read_does_not_go_back_to_the_pool() -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n"
    server = RawServer(lambda n: [head + b"x" * 50000, b"y" * 50000])  # the rest comes later
    async with server as url, HttpClient(2) as c:
        async with stream(c, "GET", url) as resp:
            async for _ in resp.aiter_bytes():
                break
        assert (await request(c, "GET", url)).content == b"x" * 50000 + b"y" * 50000
    assert server.connections == 2


async def test_cut_body_is_a_protocol_error_and_silence_a_read_timeout() -> None:
    cut = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"
    server = RawServer(lambda n: cut if n == 1 else b"")
    async with server as url, HttpClient(2) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            await request(c, "GET", url, headers={"connection": "close"})
    server = RawServer(lambda n: b"HTTP/1.1 200 OK\r\n")  # a head that never ends
    async with server as url, HttpClient(2) as c:
        with pytest.raises(httpx.ReadTimeout):
            await request(c, "GET", url, timeouts=httpx.Timeout(0.3))


async def test_pool_limit_waits_then_times_out() -> None:
    server = RawServer(lambda n: OK)
    async with server as url, HttpClient(1) as c:
        async with stream(c, "GET", url):
            with pytest.raises(httpx.PoolTimeout):
                await request(c, "GET", url, timeouts=httpx.Timeout(2.0, pool=0.2))
        assert (await request(c, "GET", url)).text == "ok"  # the slot is back


async def test_refused_connection_is_a_connect_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    async with HttpClient(1) as c:
        with pytest.raises(httpx.ConnectError):
            await request(c, "GET", f"http://127.0.0.1:{port}/")


async def test_sse_lines_split_on_any_line_end_even_across_chunks() -> None:
    body = b"event: a\r\ndata: 1\r", b"\ndata: 2\r\n\r\ndata: 3\n\ndata: 4\r\rdata: 5"
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    chunks = [f"{len(b):x}\r\n".encode() + b + b"\r\n" for b in body]
    server = RawServer(lambda n: [head + chunks[0], chunks[1] + b"0\r\n\r\n"])
    async with (
        server as url,
        HttpClient(1) as c,
        stream(c, "GET", url) as resp,
    ):
        events = [e async for e in http.sse(resp)]
    assert events == [("a", "1\n2"), ("message", "3"), ("message", "4"), ("message", "5")]


async def test_interim_1xx_head_is_skipped_and_the_connection_kept() -> None:
    server = RawServer(lambda n: b"HTTP/1.1 100 Continue\r\nx-a: 1\r\n\r\n" + OK)
    async with server as url, HttpClient(2) as c:
        for _ in range(2):
            resp = await request(c, "GET", url)
            assert (resp.status_code, resp.text, resp.headers.get("x-a")) == (200, "ok", None)
    assert server.connections == 1


async def test_unread_body_is_held_within_bounds_then_read_whole() -> None:
    size = 8 * 1024 * 1024
    head = f"HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n".encode()
    server = RawServer(lambda n: head + bytes(range(256)) * (size // 256))
    async with server as url, HttpClient(2) as c, stream(c, "GET", url) as resp:
        await asyncio.sleep(0.3)  # a slow reader: the socket must stop being read
        assert isinstance(resp, Response)
        held = resp.unread_bytes
        body = await resp.aread()
    assert held < 4 * HIGH_WATER
    assert body == bytes(range(256)) * (size // 256)


async def test_bad_header_value_refused_without_echoing_it() -> None:
    async with HttpClient(1) as c:
        with pytest.raises(httpx.LocalProtocolError) as err:
            await request(
                c, "GET", "http://127.0.0.1:9/", headers={"authorization": "sk-1\r\nx: y"}
            )
    assert "sk-1" not in str(err.value) and "authorization" in str(err.value)


async def test_malformed_or_missing_response_is_a_protocol_error() -> None:
    server = RawServer(lambda n: b"HTTP/1.1 abc\r\n\r\n" if n == 1 else None)
    async with server as url, HttpClient(2) as c:
        with pytest.raises(httpx.RemoteProtocolError, match="malformed"):
            await request(c, "GET", url)
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await request(c, "GET", url)
