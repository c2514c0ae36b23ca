"""A fake cloud provider: a real HTTP server on loopback speaking OpenAI, Anthropic and Gemini
wire formats, scripted reply by reply, for fault injection (no mocks of our own code)."""

from __future__ import annotations

import json
import socket
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON body (non-streaming)
    events: list[bytes] = field(default_factory=list)  # SSE frames (streaming)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # before answering
    gap: float = 0.0  # between stream frames
    cut_after: int | None = None  # close the stream after this many frames
    reset: bool = False  # answer with a TCP reset instead


def sse(obj: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    data = obj if isinstance(obj, str) else json.dumps(obj)
    return f"{head}data: {data}\n\n".encode()


def words(text: str) -> list[str]:
    parts = text.split(" ")
    return [p + (" " if i < len(parts) - 1 else "") for i, p in enumerate(parts)]


def openai_stream(
    text: str,
    prompt_tokens: int = 20,
    completion_tokens: int | None = None,
    cached: int = 0,
    reasoning: int = 0,
    model: str = "gpt-4o-mini",
    usage: bool = True,
) -> Reply:
    frames = [
        sse(
            {
                "model": model,
                "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}],
            }
        )
        for w in words(text)
    ]
    frames.append(
        sse({"model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    )
    if usage:
        frames.append(
            sse(
                {
                    "model": model,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens
                        if completion_tokens is not None
                        else len(words(text)),
                        "prompt_tokens_details": {"cached_tokens": cached},
                        "completion_tokens_details": {"reasoning_tokens": reasoning},
                    },
                }
            )
        )
    frames.append(sse("[DONE]"))
    return Reply(events=frames, headers={"content-type": "text/event-stream"})


def anthropic_stream(
    text: str,
    input_tokens: int = 20,
    output_tokens: int | None = None,
    cache_read: int = 0,
    cache_write: int = 0,
    model: str = "claude-haiku-4-5",
    tool: bool = False,
) -> Reply:
    out = output_tokens if output_tokens is not None else len(words(text))
    frames = [
        sse(
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "model": model,
                    "usage": {
                        "input_tokens": input_tokens,
                        "cache_read_input_tokens": cache_read,
                        "cache_creation_input_tokens": cache_write,
                        "output_tokens": 1,
                    },
                },
            },
            "message_start",
        ),
        sse(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": (
                    {"type": "tool_use", "id": "toolu_0", "name": "output", "input": {}}
                    if tool
                    else {"type": "text", "text": ""}
                ),
            },
            "content_block_start",
        ),
        sse({"type": "ping"}, "ping"),
    ]
    for w in words(text):
        delta = (
            {"type": "input_json_delta", "partial_json": w}
            if tool
            else {"type": "text_delta", "text": w}
        )
        frames.append(
            sse({"type": "content_block_delta", "index": 0, "delta": delta}, "content_block_delta")
        )
    frames += [
        sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use" if tool else "end_turn"},
                "usage": {"output_tokens": out},
            },
            "message_delta",
        ),
        sse({"type": "message_stop"}, "message_stop"),
    ]
    return Reply(events=frames, headers={"content-type": "text/event-stream"})


def gemini_stream(
    text: str,
    prompt: int = 20,
    candidates: int | None = None,
    cached: int = 0,
    thoughts: int = 0,
    model: str = "gemini-2.5-flash",
) -> Reply:
    ws = words(text)
    frames = []
    for i, w in enumerate(ws):
        cand: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": w}]}}
        if i == len(ws) - 1:
            cand["finishReason"] = "STOP"
        usage = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": candidates if candidates is not None else i + 1,
            "cachedContentTokenCount": cached,
            "thoughtsTokenCount": thoughts,
        }
        frames.append(sse({"candidates": [cand], "usageMetadata": usage, "modelVersion": model}))
    return Reply(events=frames, headers={"content-type": "text/event-stream"})


def tool_calls(kind: str, *calls: tuple[str, dict[str, Any]], tokens: int = 50) -> Reply:
    """One streamed answer that only calls tools, in `kind`'s wire format; `tokens` of input
    and of output each, so a test can count cost."""
    if kind == "openai":
        deltas = [
            {
                "index": i,
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
            for i, (name, args) in enumerate(calls)
        ]
        choice = {"index": 0, "delta": {"role": "assistant", "tool_calls": deltas}}
        frames = [
            sse({"model": "gpt-4o-mini", "choices": [{**choice, "finish_reason": None}]}),
            sse(
                {
                    "model": "gpt-4o-mini",
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
                }
            ),
            sse(
                {
                    "model": "gpt-4o-mini",
                    "choices": [],
                    "usage": {"prompt_tokens": tokens, "completion_tokens": tokens},
                }
            ),
            sse("[DONE]"),
        ]
    elif kind == "anthropic":
        start = {"model": "claude-haiku-4-5", "usage": {"input_tokens": tokens, "output_tokens": 1}}
        frames = [sse({"type": "message_start", "message": start}, "message_start")]
        for i, (name, args) in enumerate(calls):
            block = {"type": "tool_use", "id": f"toolu_{i}", "name": name, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(args)}
            frames += [
                sse(
                    {"type": "content_block_start", "index": i, "content_block": block},
                    "content_block_start",
                ),
                sse(
                    {"type": "content_block_delta", "index": i, "delta": delta},
                    "content_block_delta",
                ),
                sse({"type": "content_block_stop", "index": i}, "content_block_stop"),
            ]
        end = {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": tokens},
        }
        frames += [sse(end, "message_delta"), sse({"type": "message_stop"}, "message_stop")]
    else:
        parts = [{"functionCall": {"name": name, "args": args}} for name, args in calls]
        chunk = {
            "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": tokens, "candidatesTokenCount": tokens},
            "modelVersion": "gemini-2.5-flash",
        }
        frames = [sse(chunk)]
    return Reply(events=frames, headers={"content-type": "text/event-stream"})


def error(status: int, body: Any, **headers: str) -> Reply:
    return Reply(status=status, body=body, headers=headers)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: Any) -> None:
        return

    def setup(self) -> None:
        super().setup()
        # Frames go out as written, like a real streaming API (no Nagle + delayed-ACK stalls).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        request = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "json": json.loads(raw) if raw else None,
        }
        owner = self.server.owner
        owner.requests.append(request)
        reply = owner.answer(request) if owner.answer else owner.next_reply()
        if reply.delay:
            time.sleep(reply.delay)
        if reply.reset:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        self.send_response(reply.status)
        for k, v in reply.headers.items():
            self.send_header(k, v)
        if reply.events:
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for i, frame in enumerate(reply.events):
                if reply.cut_after is not None and i >= reply.cut_after:
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if reply.gap and i:
                    time.sleep(reply.gap)
                self.wfile.write(f"{len(frame):x}\r\n".encode() + frame + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            return
        data = json.dumps(reply.body).encode() if not isinstance(reply.body, bytes) else reply.body
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_POST = _handle
    do_GET = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: FakeProvider

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # resets and timeouts are what these tests inject


class FakeProvider:
    """Replies are taken in order from `push`ed ones, then `default` forever."""

    def __init__(self, default: Reply | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.replies: deque[Reply] = deque()
        self.default = default or openai_stream("ok")
        self.requests: list[dict[str, Any]] = []
        # Replies made from each request instead (e.g. a provider that bills by its own count).
        self.answer: Callable[[dict[str, Any]], Reply] | None = None
        self._lock = threading.Lock()
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.owner = self
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
            self.url = f"https://127.0.0.1:{self.port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def push(self, *replies: Reply) -> FakeProvider:
        with self._lock:
            self.replies.extend(replies)
        return self

    def next_reply(self) -> Reply:
        with self._lock:
            return self.replies.popleft() if self.replies else self.default

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def _serve_instant(reply: Reply) -> None:
    """An instant provider for benchmarks: asyncio, keep-alive, one pre-built reply per request
    in a single write (the threaded server above is for scripted faults, not for speed)."""
    import asyncio  # noqa: PLC0415

    body = b"".join(f"{len(f):x}\r\n".encode() + f + b"\r\n" for f in reply.events) + b"0\r\n\r\n"
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    response = head + body

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                head_raw = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head_raw.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                writer.write(response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":  # serve an instant provider for benchmarks: prints its URL
    import asyncio

    asyncio.run(_serve_instant(openai_stream("ok")))


class BundleServer:
    """Serves files over HTTP on loopback, for update downloads; `mode` injects a fault:
    "cut" sends the full Content-Length and closes half-way, "cut-nolength" sends half with no
    length (a download that looks whole), "404" answers Not Found."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.mode = ""
        self.requests: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                owner.requests.append(self.path)
                data = owner.files.get(self.path)
                if data is None or owner.mode == "404":
                    self.send_error(404)
                    return
                self.send_response(200)
                if owner.mode != "cut-nolength":
                    self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data[: len(data) // 2] if owner.mode.startswith("cut") else data)
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, path: Any) -> str:
        """Serve the file at /<its name>; returns its URL."""
        self.files[f"/{path.name}"] = path.read_bytes()
        return f"http://127.0.0.1:{self.port}/{path.name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
