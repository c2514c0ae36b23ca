"""Shared helpers: a real daemon process, the real CLI, a real NOTIFY_SOCKET listener."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from agentbox.providers.transport import HttpClient
from tests.fakes import FakeProvider

if TYPE_CHECKING:  # mqtt_peer imports this module's helpers: imported where used
    from tests.mqtt_peer import Broker, Peer
from tests.rig import rig_factory  # noqa: F401 (a fixture for test modules)

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Any, timeout: float = 30.0, interval: float = 0.05, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


def children(pid: int) -> list[int]:
    """Child process ids of `pid`, from /proc."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(x) for x in (task / "children").read_text().split()]
    return out


class NotifyListener:
    """A unix datagram socket standing in for systemd's notify socket; timestamps on arrival."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def poll(self, seconds: float) -> None:
        time.sleep(seconds)

    def wait_for(self, field: str, timeout: float = 30.0) -> float:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for at, msg in list(self.messages):
                if field in msg.split("\n"):
                    return at
            time.sleep(0.05)
        raise AssertionError(f"no {field} within {timeout} s; got {self.messages}")

    def times(self, field: str) -> list[float]:
        return [at for at, msg in list(self.messages) if field in msg.split("\n")]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


class Daemon:
    """`agentbox run` in a child process, with its own state dir and config."""

    def __init__(
        self, state_dir: Path, config: str = "", env: dict[str, str] | None = None
    ) -> None:
        self.state_dir = state_dir
        self.config_path = state_dir.parent / f"{state_dir.name}.toml"
        self.config_path.write_text(config)
        self.log_path = state_dir.parent / f"{state_dir.name}.log"
        self.env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("AGENTBOX_", "NOTIFY_", "WATCHDOG_"))
            },
            "AGENTBOX_STATE_DIR": str(state_dir),
            "AGENTBOX_CONFIG": str(self.config_path),
            **(env or {}),
        }
        if "reach_check" not in config:
            # The console's internet check would otherwise look up a public API host.
            self.env.setdefault("AGENTBOX_DEVICE__REACH_CHECK", f"127.0.0.1:{free_port()}")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True, preexec: Any = None) -> Daemon:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentbox", "run"],
            env=self.env,
            stdout=log,
            stderr=log,
            cwd=ROOT,
            preexec_fn=preexec,  # noqa: PLW1509 (only setrlimit runs there)
        )
        log.close()
        if wait:
            wait_for(self.ready, 30, what="daemon ready")
        return self

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
        return self.cli("status", check=False).returncode == 0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cli(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "agentbox", *args],
            env=self.env,
            input=input,
            # no input: an empty stdin, never the test runner's (a piped stdin is a prompt)
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"agentbox {' '.join(args)} -> {proc.returncode}\n{proc.stderr}")
        return proc

    def json(self, *args: str, input: str | None = None) -> Any:
        return json.loads(self.cli(*args, "--json", input=input).stdout)

    def task(self, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.json("tasks", "get", task_id)
        return result

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(f"file:{self.state_dir / 'agentbox.db'}?mode=ro", uri=True)
        conn.row_factory = sqlite3.Row
        return conn


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short temp dir: unix socket paths must stay under 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="ab-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def daemons(short_tmp: Path) -> Iterator[Any]:
    """Factory for daemons in this test's temp dir; all are stopped at the end."""
    started: list[Daemon] = []

    def make(config: str = "", env: dict[str, str] | None = None, name: str = "state") -> Daemon:
        d = Daemon(short_tmp / name, config, env)
        started.append(d)
        return d

    yield make
    for d in started:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(10)


NO_MQTT = "[mqtt]\nenabled = false\n"


def dead_provider(name: str = "dead") -> str:
    """A cloud provider on a loopback port where nothing listens: tests never leave the box."""
    return (
        f"[providers.{name}]\nkind = 'openai'\nmodel = 'gpt-4o-mini'\n"
        f"base_url = 'http://127.0.0.1:{free_port()}/v1'\n"
    )


def outbox_mqtt(port: int) -> str:
    """Config with MQTT on but no broker: events pile up in the outbox for tests to read."""
    return f"[mqtt]\nenabled = true\nhost = '127.0.0.1'\nport = {port}\n"


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    """A fake cloud provider on loopback (tests.fakes)."""
    server = FakeProvider()
    yield server
    server.close()


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    """An HTTP client on the daemon's own transport, so every fault runs through it."""
    async with HttpClient(4, timeouts=httpx.Timeout(2.0)) as c:
        yield c


@pytest.fixture
def broker(short_tmp: Path) -> Iterator[Broker]:
    """A real Mosquitto on a free loopback port, stopped at the end."""
    from tests.mqtt_peer import Broker  # noqa: PLC0415 (see the TYPE_CHECKING import)

    b = Broker(short_tmp).start()
    yield b
    b.stop()


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    """MQTT clients a test makes; all closed at the end."""
    made: list[Peer] = []
    yield made
    for p in made:
        p.close()
