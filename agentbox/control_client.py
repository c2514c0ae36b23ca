"""The control socket's client side, standard library only: what the CLI and console load.

The protocol (README, "Control socket"): one request line `{"op": ..., ...}`, answered by event
lines and then one reply or error line. The server is agentbox/control.py.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SOCKET_NAME = "control.sock"
MAX_LINE = 4 * 1024 * 1024  # what the client reads: a reply line (a task with a long output)


class ControlError(Exception):
    """The daemon answered with an error, or could not be reached."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


def encode_line(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


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
        self.sock.sendall(encode_line({"op": op, **args}))
        while True:
            try:
                raw = self.file.readline(MAX_LINE)
            except TimeoutError:
                raise ControlError("timeout", f"the daemon did not answer {op!r} in time") from None
            if not raw:
                raise ControlError(
                    "dropped",
                    f"the daemon closed the connection while answering {op!r}"
                    " (its log says why: journalctl -u agentbox)",
                )
            msg: dict[str, Any] = json.loads(raw)
            if msg["type"] == "error":
                raise ControlError(msg.get("code", "error"), msg.get("message", "error"))
            yield msg
            if msg["type"] == "reply":
                return

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        *_, reply = self.stream(op, **args)
        return reply
