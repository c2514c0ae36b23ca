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
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from agentbox.tasks.service import TaskService
from agentbox.tasks.spec import ErrorCode, SpecError, State, parse_spec
from agentbox.tasks.store import TaskRow
from agentbox.tasks.writer import StoreError

# A named request of the control socket (and, for schedules, of MQTT): request -> reply fields.
Op = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

log = logging.getLogger("agentbox.control")
SOCKET_NAME = "control.sock"
MAX_LINE = 4 * 1024 * 1024
Send = Callable[[dict[str, Any]], Awaitable[None]]


class ControlError(Exception):
    """The daemon answered with an error, or could not be reached."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


def _line(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


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

    async def start(self) -> None:
        if self.path.exists():
            if _listening(self.path):
                raise ControlError(
                    "busy", f"another agentbox daemon is already serving {self.path}"
                )
            self.path.unlink()
        old = os.umask(0o077)  # the socket is born owner-only, not chmod-ed later
        try:
            self._server = await asyncio.start_unix_server(self._client, self.path, limit=MAX_LINE)
        finally:
            os.umask(old)

    async def close(self) -> None:
        """Stop taking connections; requests already in progress finish."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(OSError):
                self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            uid = _peer_uid(writer)
            if uid not in (0, os.geteuid()):
                writer.write(
                    _line({"type": "error", "code": "forbidden", "message": "not the owner"})
                )
                return
            while True:
                try:
                    raw = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    msg = f"request larger than {MAX_LINE} bytes"
                    writer.write(
                        _line({"type": "error", "code": "payload_too_large", "message": msg})
                    )
                    return
                if not raw:
                    return

                async def send(msg: dict[str, Any]) -> None:
                    writer.write(_line(msg))
                    await writer.drain()

                await send(await self._answer(raw, send))
        except (ConnectionError, BrokenPipeError):
            pass
        finally:
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
        spec = req["spec"]
        if not req.get("wait"):
            row, created = await self.service.submit(spec, "local")
            return {"type": "reply", "created": created, "task": row.body()}
        # Give the task its id first and watch it before submitting, so that no event can
        # slip between the commit and the watch.
        if not isinstance(spec, dict) or not isinstance(spec.get("id"), str):
            parsed = parse_spec(spec, self.service.max_payload_bytes).with_id()
            spec = {**spec, "id": parsed.id}
        key = str(spec["id"])
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


class ControlClient:
    """Blocking client for the CLI: one connection, requests answered in order."""

    def __init__(self, path: Path, timeout: float | None = 10.0) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(path))
        except FileNotFoundError:
            self.sock.close()
            raise ControlError(
                "unreachable",
                f"no daemon socket at {path}: start the daemon (./scripts/run, or"
                " `systemctl start agentbox`), or point AGENTBOX_STATE_DIR at its state dir",
            ) from None
        except OSError as exc:
            self.sock.close()
            raise ControlError(
                "unreachable", f"cannot reach the daemon at {path}: {exc.strerror}"
            ) from None
        self.file = self.sock.makefile("rb")

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def stream(self, op: str, **args: Any) -> Iterator[dict[str, Any]]:
        """Send one request; yield its event lines, then its reply. Raises ControlError."""
        self.sock.sendall(_line({"op": op, **args}))
        while True:
            try:
                raw = self.file.readline(MAX_LINE)
            except TimeoutError:
                raise ControlError("timeout", f"the daemon did not answer {op!r} in time") from None
            if not raw:
                raise ControlError("unreachable", "the daemon closed the connection")
            msg: dict[str, Any] = json.loads(raw)
            if msg["type"] == "error":
                raise ControlError(msg.get("code", "error"), msg.get("message", "error"))
            yield msg
            if msg["type"] == "reply":
                return

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        *_, reply = self.stream(op, **args)
        return reply
