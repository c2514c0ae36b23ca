"""Network middlemen of our own on loopback, each on its own thread and event loop (so sync
tests and real daemons can use them too): an HTTP proxy speaking CONNECT and absolute-form,
and a relay that drops connections the client reuses after they sat idle."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any


class _Loop:
    """An event loop on a daemon thread, serving one asyncio server."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = 0
        self._server: asyncio.Server | None = None

    def serve(self, handler: Any) -> None:
        async def start() -> asyncio.Server:
            return await asyncio.start_server(handler, "127.0.0.1", 0)

        self._server = self.run(start())
        self.port = self._server.sockets[0].getsockname()[1]

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _splice(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    await asyncio.gather(_pipe(a[0], b[1]), _pipe(b[0], a[1]))


class _Served:
    """A server of ours on its own loop; subclasses write `_handle`."""

    def __init__(self) -> None:
        self._loop = _Loop()
        self._loop.serve(self._handle)
        self.url = f"http://127.0.0.1:{self._loop.port}"

    def close(self) -> None:
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


@dataclass
class Seen:
    method: str
    target: str  # host:port for CONNECT, the absolute URL otherwise
    proxy_authorization: str | None


class ConnectProxy(_Served):
    """A tiny HTTP proxy: CONNECT tunnels and absolute-form requests (one per connection, sent
    on with `connection: close`). `hosts` maps names to addresses (the proxy resolves, as a
    real one does); with `user`/`password` set, anything else gets 407."""

    def __init__(
        self, hosts: dict[str, str] | None = None, user: str = "", password: str = ""
    ) -> None:
        self.hosts = hosts or {}
        self.want = (
            "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode() if user else None
        )
        self.seen: list[Seen] = []
        super().__init__()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = [line for line in lines[1:] if line]
        auth = next(
            (h.split(":", 1)[1].strip() for h in headers if h.lower().startswith("proxy-auth")),
            None,
        )
        self.seen.append(Seen(method, target, auth))
        if self.want is not None and auth != self.want:
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n")
            writer.close()
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            up = await asyncio.open_connection(self.hosts.get(host, host), int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await _splice((reader, writer), up)
            return
        # absolute-form: http://host:port/path -> origin-form to that server
        rest = target.split("://", 1)[1]
        authority, _, path = rest.partition("/")
        host, _, port = authority.rpartition(":")
        up = await asyncio.open_connection(self.hosts.get(host, host), int(port or 80))
        kept = [h for h in headers if not h.lower().startswith(("proxy-", "connection:"))]
        up[1].write(
            f"{method} /{path} HTTP/1.1\r\n".encode()
            + "".join(f"{h}\r\n" for h in kept).encode("latin-1")
            + b"connection: close\r\n\r\n"
        )
        await _splice((reader, writer), up)


class IdleCloser(_Served):
    """A relay to `port` that, like a server whose idle timer fires just as a request comes,
    drops a connection without answering when the client speaks on it again after it sat
    `idle_s` quiet (nothing on the wire tells the client beforehand)."""

    def __init__(self, port: int, idle_s: float) -> None:
        self.target = port
        self.idle_s = idle_s
        self.dropped = 0
        self.connections = 0
        self.refuse_new = False  # a server gone: new connections closed before any answer
        super().__init__()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.refuse_new:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        loop = asyncio.get_running_loop()
        last = [loop.time()]

        async def back() -> None:
            try:
                while data := await up_reader.read(65536):
                    last[0] = loop.time()
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            writer.close()

        answering = asyncio.create_task(back())
        try:
            while data := await reader.read(65536):
                if loop.time() - last[0] >= self.idle_s:
                    self.dropped += 1
                    break
                last[0] = loop.time()
                up_writer.write(data)
                await up_writer.drain()
        except (ConnectionError, OSError):
            pass
        up_writer.close()
        writer.close()
        answering.cancel()
