"""Local control channel: an owner-only unix socket speaking JSON lines, for the CLI and console.

A request is one line `{"op": ..., ...}`. The answer is zero or more `{"type": "event", ...}`
lines followed by exactly one `{"type": "reply", ...}` or `{"type": "error", ...}` line.
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
from agentbox.tasks.rows import TaskRow
from agentbox.tasks.service import TaskService
from agentbox.tasks.spec import parse_spec
from agentbox.tasks.writer import StoreError
from agentbox.vocabulary import ErrorCode, Op, SpecError, State

log = logging.getLogger("agentbox.control")
ENVELOPE_BYTES = 16 * 1024  # a request line may hold a spec of max_payload_bytes plus this
MAX_CONNECTIONS = 64
IDLE_S = 120.0  # a connection that sends no request for this long is closed
Send = Callable[[dict[str, Any]], Awaitable[None]]


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
    """Serves the CLI; `status` and `reload` are callbacks the daemon provides."""

    def __init__(
        self,
        path: Path,
        service: TaskService,
        status: Callable[[], Awaitable[dict[str, Any]]],
        reload: Callable[[], Awaitable[str]],
    ) -> None:
        self.path = path
        self.service = service
        self._status = status
        self._reload = reload
        self._server: asyncio.AbstractServer | None = None
        self.ops: dict[str, Op] = {}
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
        extra = self.ops.get(req["op"])
        handler = getattr(self, f"_op_{req['op']}", None)
        if extra is not None:

            async def handler(r: dict[str, Any], _: Send) -> dict[str, Any]:
                return {"type": "reply", **await extra(r)}

        if handler is None:
            return {
                "type": "error",
                "code": "invalid_request",
                "message": f"unknown op {req['op']!r}",
            }
        try:
            result: dict[str, Any] = await handler(req, send)
            return result
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
            return self._internal(req["op"], exc)

    def _internal(self, op: str, exc: Exception) -> dict[str, Any]:
        """An op that failed unexpectedly: logged with its traceback once, answered always."""
        key = (op, type(exc).__name__)
        if key not in self._failed_ops:
            self._failed_ops.add(key)
            log.error("op %s failed (logged once per kind of failure)", op, exc_info=exc)
        message = f"{op!r} failed inside the daemon ({type(exc).__name__}): see its log"
        return {"type": "error", "code": "internal", "message": message}

    async def _op_ping(self, req: dict[str, Any], send: Send) -> dict[str, Any]:
        return {"type": "reply", "ok": True}

    async def _op_status(self, req: dict[str, Any], send: Send) -> dict[str, Any]:
        return {"type": "reply", "status": await self._status()}

    async def _op_reload(self, req: dict[str, Any], send: Send) -> dict[str, Any]:
        return {"type": "reply", "message": await self._reload()}

    async def _op_get(self, req: dict[str, Any], send: Send) -> dict[str, Any]:
        return _task_reply(await self.service.get(str(req["id"])), req["id"])

    async def _op_cancel(self, req: dict[str, Any], send: Send) -> dict[str, Any]:
        return _task_reply(await self.service.cancel(str(req["id"])), req["id"])

    async def _op_list(self, req: dict[str, Any], send: Send) -> dict[str, Any]:
        state = req.get("state")
        if state is not None and state not in State.__members__:
            raise ValueError(f"unknown state {state!r}")
        rows = await self.service.list_tasks(state, int(req.get("limit", 50)))
        return {"type": "reply", "tasks": [_brief(r) for r in rows]}

    async def _op_submit(self, req: dict[str, Any], send: Send) -> dict[str, Any]:
        raw = req["spec"]
        if isinstance(raw, dict):
            # Encoded again so that the intake's payload limit applies as it does to text.
            raw = json.dumps(raw, separators=(",", ":"))
        # Parsed once, here, and given its id first: a waiter watches the task before it is
        # submitted, so that no event can slip between the commit and the watch.
        spec = parse_spec(raw, self.service.max_payload_bytes).with_id()
        if not req.get("wait"):
            row, created = await self.service.submit(spec, "local")
            return {"type": "reply", "created": created, "task": row.body()}
        key = str(spec.id)
        queue = self.service.watch(key)
        try:
            row, created = await self.service.submit(spec, "local")
            if row.final:
                return {"type": "reply", "created": created, "task": row.body()}
            await send(
                {
                    "type": "event",
                    "event": "accepted" if created else "known",
                    "task": row.body(),
                }
            )
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


def _task_reply(row: TaskRow | None, task_id: Any) -> dict[str, Any]:
    if row is None:
        return {"type": "error", "code": "not_found", "message": f"no task with id {task_id!r}"}
    return {"type": "reply", "task": row.body()}


def _brief(row: TaskRow) -> dict[str, Any]:
    view = row.body()
    view["created_at"] = row.created_at
    view["lane"] = row.lane
    return view
