"""What the update tests share: test releases, bundles signed with a key made here, and a
service manager that really runs the daemon (a supervisor of child processes with its own
notify socket), standing in for systemd behind agentbox.update.service's seam."""

from __future__ import annotations

import base64
import hashlib
import os
import platform
import shutil
import signal
import socket
import struct
import subprocess
import sys
import sysconfig
import threading
import time
import zipfile
from pathlib import Path

from agentbox.update import keys as release_keys
from agentbox.update.install import ARCHES
from agentbox.update.service import ServiceState

ROOT = Path(__file__).resolve().parent.parent
HOST_ARCH = ARCHES.get(platform.machine(), platform.machine())
EXTRA_STEP = "\n    CREATE TABLE update_test (k TEXT PRIMARY KEY);\n    "

# Entry points of bad releases: small wrappers over the real agentbox, baked into the wheel.
WRAPPER = '''
import os, socket, sys, threading

BEHAVIOUR = {behaviour!r}


def _drop_pings_after(n):
    """Relay the daemon's notify messages, but stop passing WATCHDOG=1 after n of them."""
    real = os.environ["NOTIFY_SOCKET"]
    path = real + ".relay"
    if os.path.exists(path):  # left by the run the watchdog killed
        os.unlink(path)
    inbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    inbox.bind(path)
    os.environ["NOTIFY_SOCKET"] = path
    out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def pump():
        pings = 0
        while True:
            lines = inbox.recv(4096).decode().split("\\n")
            pings += "WATCHDOG=1" in lines
            kept = [l for l in lines if l != "WATCHDOG=1" or pings <= n]
            if kept:
                out.sendto("\\n".join(kept).encode(), real)

    threading.Thread(target=pump, daemon=True).start()


def main():
    if sys.argv[1:3] == ["config", "check"] and BEHAVIOUR == "badconfig":
        print("agentbox: bad configuration: [update] is not known here", file=sys.stderr)
        return 78
    if sys.argv[1:2] == ["run"]:
        if BEHAVIOUR == "exit78":
            return 78
        if BEHAVIOUR == "noready":
            os.environ.pop("NOTIFY_SOCKET", None)
        if BEHAVIOUR == "nowatchdog":
            _drop_pings_after(2)
    from agentbox.cli import main as real
    return real()
'''


def pip_wheel() -> Path:
    """A pip wheel from this machine's Python (Debian's python3-pip-whl or ensurepip's own)."""
    import ensurepip  # noqa: PLC0415

    places = [Path("/usr/share/python-wheels"), Path(ensurepip.__file__).parent / "_bundled"]
    for place in places:
        found = sorted(place.glob("pip-*.whl"))
        if found:
            return found[-1]
    raise AssertionError("no pip wheel on this machine (install python3-pip-whl)")


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def release_wheel(out: Path, version: str, behaviour: str = "", extra_step: str = "") -> Path:
    """An `agentbox` wheel of this checkout's code at `version` (named by its METADATA only,
    as pyproject.toml's version is in a real wheel); its dependencies are this
    venv's (a .pth line), so installing it takes seconds. `behaviour` makes a bad release;
    `extra_step` ("additive" or "not-additive") adds a migration step declared so."""
    files: dict[str, bytes] = {}
    # The package's Python files and its data files (pyproject's package-data: *.json).
    sources = [*(ROOT / "agentbox").rglob("*.py"), *(ROOT / "agentbox").rglob("*.json")]
    for path in sorted(sources):
        rel = path.relative_to(ROOT).as_posix()
        data = path.read_bytes()
        if rel == "agentbox/tasks/migrations.py" and extra_step:
            flag = extra_step == "additive"
            step = f'    Step(\n        """{EXTRA_STEP}""",\n        additive={flag},\n    ),\n)\n'
            assert data.count(b'    """,\n    ),\n)\n') == 1
            data = data.replace(b'    """,\n    ),\n)\n', b'    """,\n    ),\n' + step.encode())
        files[rel] = data
    files["agentbox_test_deps.pth"] = (sysconfig.get_paths()["purelib"] + "\n").encode()
    entry = "agentbox.cli:main"
    if behaviour:
        files["agentbox_testwrap.py"] = WRAPPER.format(behaviour=behaviour).encode()
        entry = "agentbox_testwrap:main"
    info = f"agentbox-{version}.dist-info"
    files[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: agentbox\nVersion: {version}\n".encode()
    )
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    files[f"{info}/entry_points.txt"] = f"[console_scripts]\nagentbox = {entry}\n".encode()
    record = [_record_line(n, d) for n, d in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    out.mkdir(parents=True, exist_ok=True)
    wheel = out / f"agentbox-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return wheel


def make_key(d: Path, name: str = "release") -> tuple[Path, Path]:
    d.mkdir(parents=True, exist_ok=True)
    private = d / f"{name}.key"
    return private, release_keys.generate(private)


def build_bundle(
    work: Path,
    key: Path,
    version: str,
    behaviour: str = "",
    extra_step: str = "",
    arch: str = HOST_ARCH,
) -> Path:
    """scripts/build-release over a wheelhouse of one test wheel and pip's wheel."""
    house = work / f"house-{version}"
    shutil.rmtree(house, ignore_errors=True)
    release_wheel(house, version, behaviour, extra_step)
    (house / "tools").mkdir()
    shutil.copy(pip_wheel(), house / "tools")
    out = work / "bundles"
    proc = subprocess.run(
        [str(ROOT / "scripts" / "build-release"), "--arch", arch, "--key", str(key),
         "--wheelhouse", str(house), "--out", str(out)],
        capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable}, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out / f"agentbox-{version}-{arch}.bundle"


def snapshot(root: Path) -> dict[str, tuple[str, int, str]]:
    """Every path under root with its kind, size and link target: 'nothing changed' checks."""
    out: dict[str, tuple[str, int, str]] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = ("link", 0, str(p.readlink()))
        elif p.is_file():
            out[rel] = ("file", p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
        else:
            out[rel] = ("dir", 0, "")
    return out


class ChildService:
    """A service manager that runs `<root>/current/bin/agentbox run` as its child, as systemd
    runs the unit: a notify socket that takes messages from the main pid only, READY, the
    watchdog (SIGABRT after WATCHDOG_USEC without a ping), Restart=on-failure with
    RestartPreventExitStatus=78."""

    def __init__(self, root: Path, env: dict[str, str], sock: Path, watchdog_s: float) -> None:
        self.root, self.env, self.watchdog_s = root, env, watchdog_s
        self.log_path = sock.with_suffix(".log")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(sock))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(0.05)
        self.sock_path = sock
        self.proc: subprocess.Popen[bytes] | None = None
        self.lock = threading.Lock()
        self._state = ServiceState("inactive", "dead", 0, "success", None)
        self.stopping = False
        self.kill_reason = ""
        self.last_ping = 0.0
        self.versions: list[str] = []  # which release each start ran
        self._closed = False
        self.thread = threading.Thread(target=self._supervise, daemon=True)
        self.thread.start()

    def _set(self, active: str, sub: str, **kw: object) -> None:
        s = self._state
        self._state = ServiceState(
            active, sub, int(kw.get("restarts", s.restarts)),  # type: ignore[call-overload]
            str(kw.get("result", s.result)), kw.get("status", s.exit_status),  # type: ignore[arg-type]
        )  # fmt: skip

    def _spawn(self) -> None:
        exe = self.root / "current" / "bin" / "agentbox"
        self.versions.append((self.root / "current").readlink().name)
        env = {**self.env, "NOTIFY_SOCKET": str(self.sock_path),
               "WATCHDOG_USEC": str(int(self.watchdog_s * 1e6))}  # fmt: skip
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([str(exe), "run"], env=env, stdout=log, stderr=log)
        self.kill_reason = ""
        self._set("activating", "start")

    def start(self) -> None:
        with self.lock:
            self.stopping = False
            self._set("activating", "start", result="success", status=None)
            self._spawn()

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        with self.lock:
            self._set("inactive", "dead")

    def state(self) -> ServiceState:
        with self.lock:
            return self._state

    def _receive(self) -> None:
        try:
            data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except (TimeoutError, OSError):
            return
        pid = next(
            (struct.unpack("3i", d[:12])[0] for lvl, typ, d in anc
             if lvl == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS), None,
        )  # fmt: skip
        with self.lock:
            if self.proc is None or pid != self.proc.pid:
                return  # NotifyAccess=main
            lines = data.decode(errors="replace").split("\n")
            if "READY=1" in lines and self._state.active == "activating":
                self._set("active", "running")
                self.last_ping = time.monotonic()
            if "WATCHDOG=1" in lines:
                self.last_ping = time.monotonic()

    def _supervise(self) -> None:
        while not self._closed:
            self._receive()
            with self.lock:
                proc = self.proc
                if proc is None or self.stopping:
                    continue
                code = proc.poll()
                if code is None:
                    late = time.monotonic() - self.last_ping > self.watchdog_s
                    if self._state.active == "active" and late and not self.kill_reason:
                        self.kill_reason = "watchdog"
                        proc.send_signal(signal.SIGABRT)
                    continue
                if code == 0:
                    self._set("inactive", "dead", result="success", status=0)
                elif code == 78:
                    self._set("failed", "failed", result="exit-code", status=78)
                else:
                    result = self.kill_reason or ("signal" if code < 0 else "exit-code")
                    self._set("activating", "auto-restart", result=result, status=code,
                              restarts=self._state.restarts + 1)  # fmt: skip
                    time.sleep(0.5)  # RestartSec
                    self._spawn()
                    continue
                self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        self.stop()
        self._closed = True
        self.thread.join(5)
        self.sock.close()
