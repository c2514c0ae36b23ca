"""Who the control socket admits (the owner, root, the daemon's group), and its limits."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agentbox.control import MAX_CONNECTIONS
from agentbox.keys import KeyStore
from tests.conftest import NO_MQTT

DAEMON_UID, CONSOLE_UID, STRANGER_UID = 40101, 40102, 40103  # uids no account has
BOX_GID = 40101

# The other users' clients run on the system's Python: the venv's interpreter may live where
# only root can reach it (a pyenv under /root). They need nothing but the standard library.
SYSTEM_PYTHON = Path("/usr/bin/python3")
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not SYSTEM_PYTHON.exists(), reason="switching users needs root"
)


def as_user(uid: int, gid: int) -> Callable[[], None]:
    def switch() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    return switch


def ask_as(uid: int, gid: int, sock: Path, request: dict[str, Any]) -> dict[str, Any]:
    """One request from a process running as uid:gid; its reply, or the connect error."""
    line = json.dumps(request).encode() + b"\n"
    code = (
        "import json, socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        f"    s.connect({str(sock)!r})\n"
        "except OSError as e:\n"
        "    print(json.dumps({'type': 'connect', 'errno': e.errno})); sys.exit()\n"
        "try:\n"
        f"    s.sendall({line!r})\n"
        "except BrokenPipeError:\n"  # a refused peer: the daemon said why and hung up
        "    pass\n"
        "print(s.makefile().readline())\n"
    )
    proc = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", code],
        preexec_fn=as_user(uid, gid),
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr
    reply: dict[str, Any] = json.loads(proc.stdout)
    return reply


@needs_root
def test_the_daemons_group_is_admitted_and_a_stranger_is_not(daemons: Any, short_tmp: Path) -> None:
    short_tmp.chmod(0o755)
    state = short_tmp / "state"
    state.mkdir(mode=0o710)
    os.chown(state, 0, BOX_GID)
    # The daemon keeps root's uid (its venv may be root's alone) but runs in the box's group.
    d = daemons(NO_MQTT).start(preexec=lambda: os.setgid(BOX_GID))
    sock = state / "control.sock"
    assert oct(sock.stat().st_mode & 0o777) == "0o660"
    assert oct(state.stat().st_mode & 0o777) == "0o710"  # the daemon kept the group's search bit
    # The console's user: its own uid, the daemon's group as its primary group.
    reply = ask_as(CONSOLE_UID, BOX_GID, sock, {"op": "status"})
    assert reply["type"] == "reply" and reply["status"]["pid"] == d.proc.pid
    # Anyone else cannot even reach the socket (0710 dir, 0660 socket) ...
    assert ask_as(STRANGER_UID, STRANGER_UID, sock, {"op": "status"})["type"] == "connect"
    # ... and were the file modes loosened, the daemon still refuses them.
    state.chmod(0o711)
    sock.chmod(0o666)
    refused = ask_as(STRANGER_UID, STRANGER_UID, sock, {"op": "status"})
    assert refused["code"] == "forbidden"
    assert d.stop() == 0


def test_connections_are_capped_and_requests_bounded(daemons: Any) -> None:
    d = daemons(NO_MQTT).start()
    path = str(d.state_dir / "control.sock")
    idle = []
    try:
        for _ in range(MAX_CONNECTIONS):
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            idle.append(s)
        with socket.socket(socket.AF_UNIX) as extra:
            extra.connect(path)
            reply = json.loads(extra.makefile().readline())
        assert reply["code"] == "busy"
    finally:
        for s in idle:
            s.close()
    d.cli("status")  # capacity comes back as idle connections close
    big = {"prompt": "x" * 300_000}  # over mqtt.max_payload_bytes (262,144), sent as an object
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        s.sendall(json.dumps({"op": "submit", "spec": big}).encode() + b"\n")
        reply = json.loads(s.makefile().readline())
    assert reply["code"] == "payload_too_large"
    smaller = {"prompt": "x" * 250_000, "tier": "local", "id": "just-under", "max_tokens": 1}
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        s.sendall(json.dumps({"op": "submit", "spec": smaller}).encode() + b"\n")
        reply = json.loads(s.makefile().readline())
    assert reply["type"] == "reply" and reply["task"]["id"] == "just-under"
    assert d.stop() == 0


@needs_root
def test_root_writing_a_key_into_the_daemons_state_dir_gives_it_to_the_daemon(
    short_tmp: Path,
) -> None:
    state = short_tmp / "box"
    state.mkdir(mode=0o710)
    os.chown(state, DAEMON_UID, BOX_GID)
    KeyStore(state).set("openai", "sk-owned-by-the-daemon-1234")
    secrets = state / "secrets"
    for path in (secrets, secrets / "openai"):
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (DAEMON_UID, BOX_GID), path
    assert oct((secrets / "openai").stat().st_mode & 0o777) == "0o600"
