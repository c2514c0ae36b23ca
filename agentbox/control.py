"""Local control channel: an owner-only unix socket speaking JSON lines, for the CLI and console.

A request is one line `{"op": ..., ...}` naming an operation of the table (operations.py) that
MQTT calls too. The answer is zero or more `{"type": "event", ...}` lines followed by exactly
one `{"type": "reply", ...}` or `{"type": "error", ...}` line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agentbox.control_client import ControlError, encode_line
from agentbox.operations import Call, Caller, Table
from agentbox.tasks.ops import SubmitRequest, Submitted, TaskReply, task_ops
from agentbox.tasks.service import TaskService
from agentbox.tasks.writer import StoreError
from agentbox.vocabulary import ErrorCode, SpecError

log = logging.getLogger("agentbox.control")
ENVELOPE_BYTES = 16 * 1024  # a request line may hold a spec of max_payload_bytes plus this
MAX_CONNECTIONS = 64
IDLE_S = 120.0  # a connection that sends no request for this long is closed
Send = Callable[[dict[str, Any]], Awaitable[None]]
LOCAL = Caller("socket")


def _admitted(writer: asyncio.StreamWriter) -> bool:
    """Root, the daemon's own user, or a process whose primary group is the daemon's.

    The group is how the console service (its own user, group agentbox) reaches the daemon:
    under PrivateUsers= its uid reads as nobody here, but the daemon's group is mapped.
    """
    sock = writer.get_extra_info("socket")
    if sock is None:
        return False
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, gid = struct.unpack("3i", creds)
    return uid in (0, os.geteuid()) or gid == os.getegid()


class ControlServer:
    """Serves the CLI and the console: each request is an operation of `ops`."""

    def __init__(self, path: Path, service: TaskService, ops: Table | None = None) -> None:
        self.path = path
        self.service = service  # its payload limit, and its watchers for `wait`
        self.ops = ops or Table(task_ops(service))
        self._server: asyncio.AbstractServer | None = None
        self.connections = 0
        self._failed_ops: set[tuple[str, str]] = set()

    async def start(self) -> None:
        if self.path.exists():
            if _listening(self.path):
                raise ControlError(
                    "busy", f"another agentbox daemon is already serving {self.path}"
                )
            self.path.unlink()
        # Born 0660, never chmod-ed later: the state dir (0710 on a box) lets the daemon's
        # group reach it, and _admitted checks each peer again.
        old = os.umask(0o117)
        try:
            self._server = await asyncio.start_unix_server(
                self._client, self.path, limit=self.service.max_payload_bytes + ENVELOPE_BYTES
            )
        finally:
            os.umask(old)

    async def close(self) -> None:
        """Stop taking connections; requests already in progress finish."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(OSError):
                self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if not _admitted(writer):
                writer.write(
                    encode_line({"type": "error", "code": "forbidden", "message": "not the owner"})
                )
                return
            if self.connections > MAX_CONNECTIONS:
                msg = f"more than {MAX_CONNECTIONS} connections are open: try again shortly"
                writer.write(encode_line({"type": "error", "code": "busy", "message": msg}))
                return
            while True:
                try:
                    raw = await asyncio.wait_for(reader.readline(), IDLE_S)
                except TimeoutError:
                    return
                except (ValueError, asyncio.LimitOverrunError):
                    msg = f"request larger than {self.service.max_payload_bytes} bytes"
                    writer.write(
                        encode_line({"type": "error", "code": "payload_too_large", "message": msg})
                    )
                    return
                if not raw:
                    return

                async def send(msg: dict[str, Any]) -> None:
                    writer.write(encode_line(msg))
                    await writer.drain()

                await send(await self._answer(raw, send))
        except (ConnectionError, BrokenPipeError):
            pass
        finally:
            self.connections -= 1
            writer.close()

    async def _answer(self, raw: bytes, send: Send) -> dict[str, Any]:
        """Run one request; events go out through `send`, the final line is returned."""
        try:
            req = json.loads(raw)
            if not isinstance(req, dict) or not isinstance(req.get("op"), str):
                raise ValueError("a request is a JSON object with an 'op'")
        except ValueError as exc:
            return {"type": "error", "code": "invalid_request", "message": str(exc)}
        name = req["op"]
        try:
            op = self.ops.find(name, "socket")
        except SpecError as exc:
            return {"type": "error", "code": exc.code.value, "message": exc.message}
        if name == "submit" and isinstance(req.get("spec"), dict):
            # Encoded again so that the intake's payload limit applies as it does to text.
            req["spec"] = json.dumps(req["spec"], separators=(",", ":"))
        try:
            call = Call(op, op.parse(req))
            if isinstance(call.request, SubmitRequest) and call.request.wait:
                return await self._submit_waiting(call, send)
            return _rendered(await call.run(LOCAL))
        except SpecError as exc:
            return {
                "type": "error",
                "code": exc.code.value,
                "message": exc.message,
                "id": exc.task_id,
            }
        except StoreError as exc:
            return {"type": "error", "code": ErrorCode.store_unavailable.value, "message": str(exc)}
        except (KeyError, TypeError, ValueError) as exc:
            return {"type": "error", "code": "invalid_request", "message": f"bad request: {exc}"}
        except Exception as exc:  # a bug in one op must not drop the connection
            return self._internal(name, exc)

    def _internal(self, op: str, exc: Exception) -> dict[str, Any]:
        """An op that failed unexpectedly: logged with its traceback once, answered always."""
        key = (op, type(exc).__name__)
        if key not in self._failed_ops:
            self._failed_ops.add(key)
            log.error("op %s failed (logged once per kind of failure)", op, exc_info=exc)
        message = f"{op!r} failed inside the daemon ({type(exc).__name__}): see its log"
        return {"type": "error", "code": "internal", "message": message}

    async def _submit_waiting(
        self, call: Call[SubmitRequest, Submitted], send: Send
    ) -> dict[str, Any]:
        """A submit that streams its task's events until the result. The task is watched
        before it is submitted (its id was given at parsing), so no event can slip between
        the commit and the watch."""
        key = str(call.request.spec.id)
        queue = self.service.watch(key)
        try:
            done = await call.run(LOCAL)
            row, created = done.row, done.created
            if row.final:
                return {"type": "reply", "created": created, "task": row.body()}
            if not created:  # a new task's `accepted` is its first event from the hub
                await send({"type": "event", "event": "known", "task": row.body()})
            while True:
                event, body = await queue.get()
                if event == "result":
                    return {"type": "reply", "created": created, "task": body}
                await send({"type": "event", "event": event, "task": body})
        finally:
            self.service.unwatch(key, queue)


def _listening(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
        return True


def _rendered(reply: Any) -> dict[str, Any]:
    """A typed reply as the socket's reply (or error) line."""
    if isinstance(reply, Submitted):
        return {"type": "reply", "created": reply.created, "task": reply.row.body()}
    if isinstance(reply, TaskReply):
        if reply.row is None:
            message = f"no task with id {reply.id!r}"
            return {"type": "error", "code": "not_found", "message": message}
        return {"type": "reply", "task": reply.row.body()}
    return {"type": "reply", **reply}
