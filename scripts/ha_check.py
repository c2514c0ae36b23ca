"""A real Home Assistant Core against a real agentbox on a loopback Mosquitto, and what it shows.

Usage (as root; slow, not part of scripts/test):

    scripts/ha-check [--cache DIR] [--rebuild]

The first run builds a Debian trixie root with mmdebstrap in DIR (default
/var/cache/agentbox-ha; Home Assistant needs Python 3.13) holding a venv with the pinned
Home Assistant (PyPI is needed for that step only). Then, in a network namespace with only
loopback (Home Assistant cannot reach the internet), it starts Mosquitto on a free port, an
agentbox daemon (state in a temp dir, the bundled local model) and Home Assistant chrooted
into that root with a minimal configuration.yaml (no default_config; http on 127.0.0.1 at a
free port). It onboards Home Assistant through its REST API (the user step only, no
location), adds the broker by the REST config-flow endpoints, and prints the device and
entities Home Assistant registered with their states, the states after kill -9 of the daemon,
and the states after a Home Assistant restart. PASS/FAIL lines; exit 0 when all passed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import Daemon, free_port, wait_for  # noqa: E402
from tests.mqtt_peer import Broker  # noqa: E402

HA_VERSION = "2026.2.3"
# Installed with the root, because Home Assistant runs with --skip-pip where it cannot reach
# the internet anyway: the MQTT integration's requirement (its manifest.json), and the
# frontend's package, without which Home Assistant starts in recovery mode and never serves.
HA_PIP = [f"homeassistant=={HA_VERSION}", "paho-mqtt==2.1.0", "home-assistant-frontend==20260128.6"]
# build-essential and python3-dev: a few of Home Assistant's dependencies build from source.
PACKAGES = ["python3", "python3-venv", "python3-dev", "build-essential", "ca-certificates"]
DEVICE = "hacheck"
HA_ENV = ["PATH=/opt/ha/bin:/usr/bin:/bin", "HOME=/root", "TZ=UTC", "LANG=C.UTF-8"]
HASS = ["/opt/ha/bin/hass", "-c", "/config", "--skip-pip"]
CLIENT_ID = "http://127.0.0.1/"
CONFIGURATION = """\
homeassistant:
  name: agentbox ha-check
  time_zone: UTC
  unit_system: metric
  country: DE
  currency: USD
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
config:
websocket_api:
onboarding:
"""


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True)


def in_root(root: Path, command: str) -> None:
    """`command` by sh inside the root, with /dev and /proc, in a private mount namespace."""
    env = " ".join([*HA_ENV, "PIP_CERT=/etc/ssl/host-ca.crt"])
    script = (
        f"mount --make-rprivate / && mount --rbind /dev {root}/dev &&"
        f" mount -t proc proc {root}/proc && chroot {root} /usr/bin/env -i {env} sh -c '{command}'"
    )
    sh("unshare", "--mount", "--fork", "sh", "-c", script)


def build_root(cache: Path, rebuild: bool) -> Path:
    """The trixie root with Home Assistant in /opt/ha; built once, and its venv brought to
    HA_PIP whenever that list changed (the marker holds the list it was installed from)."""
    root = cache / "trixie"
    marker = root / "opt/ha/.agentbox-ha"
    wanted = " ".join(HA_PIP)
    if not rebuild and marker.exists():
        if marker.read_text() != wanted:
            in_root(root, f"/opt/ha/bin/pip install -q {wanted}")
            marker.write_text(wanted)
        return root
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / "trixie.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.monotonic()
    sh("mmdebstrap", "--variant=apt", f"--include={','.join(PACKAGES)}", "trixie", str(tmp))
    # The host's CA bundle: it holds the CA of a TLS-inspecting proxy where there is one.
    shutil.copyfile("/etc/ssl/certs/ca-certificates.crt", tmp / "etc/ssl/host-ca.crt")
    shutil.copyfile("/etc/resolv.conf", tmp / "etc/resolv.conf")
    in_root(tmp, f"python3 -m venv /opt/ha && /opt/ha/bin/pip install -q {wanted}")
    (tmp / "opt/ha/.agentbox-ha").write_text(wanted)
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    print(f"built {root} in {time.monotonic() - started:.0f} s", flush=True)
    return root


class WebSocket:
    """The least of RFC 6455 that Home Assistant's websocket API needs: text frames."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.buf = b""
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise RuntimeError(f"websocket refused: {head[:200]!r}")

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise RuntimeError("websocket closed")
        self.buf += data

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _frame(self, opcode: int, data: bytes) -> None:
        n = len(data)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def send(self, message: dict[str, Any]) -> None:
        self._frame(1, json.dumps(message).encode())

    def recv(self) -> Any:
        parts = b""
        while True:
            b1, b2 = self._take(2)
            n = b2 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._take(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._take(8))
            mask = self._take(4) if b2 & 0x80 else b""
            data = self._take(n)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            opcode = b1 & 0x0F
            if opcode == 9:  # ping
                self._frame(10, data)
                continue
            if opcode == 8:
                raise RuntimeError("websocket closed by Home Assistant")
            parts += data
            if b1 & 0x80:
                return json.loads(parts)

    def close(self) -> None:
        self.sock.close()


class HomeAssistant:
    """Home Assistant Core chrooted into the trixie root, and its REST and websocket APIs."""

    def __init__(self, root: Path, config: Path, log: Path) -> None:
        self.root, self.config, self.log = root, config, log
        self.port = free_port()
        self.token = ""
        self.proc: subprocess.Popen[bytes] | None = None
        config.mkdir(exist_ok=True)
        (config / "configuration.yaml").write_text(CONFIGURATION.format(port=self.port))

    def start(self) -> float:
        """Start it; returns how long until its HTTP answered."""
        mount = self.root / "config"
        mount.mkdir(exist_ok=True)
        if not os.path.ismount(mount):
            sh("mount", "--bind", str(self.config), str(mount))
        started = time.monotonic()
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                ["chroot", str(self.root), "/usr/bin/env", "-i", *HA_ENV, *HASS],
                stdout=log,
                stderr=log,
            )
        wait_for(self._answers, 600, 0.5, "Home Assistant's HTTP")
        return time.monotonic() - started

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"hass exited with {self.proc.returncode}; see {self.log}")
        try:
            self.call("GET", "/api/onboarding" if not self.token else "/api/")
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(120)

    def call(self, method: str, path: str, body: Any = None, form: bool = False) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        data = None
        if body is not None:
            if form:
                data = urllib.parse.urlencode(body).encode()
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            else:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
        url = f"http://127.0.0.1:{self.port}{path}"
        request = urllib.request.Request(url, data, headers, method=method)
        with urllib.request.urlopen(request, timeout=60) as reply:
            return json.loads(reply.read() or b"null")

    def onboard(self) -> None:
        """The onboarding's user step (no location step), then a token for the APIs."""
        user = {"name": "Check", "username": "check", "password": "check-pass-1234"}
        user |= {"client_id": CLIENT_ID, "language": "en"}
        code = self.call("POST", "/api/onboarding/users", user)["auth_code"]
        grant = {"grant_type": "authorization_code", "code": code, "client_id": CLIENT_ID}
        self.token = self.call("POST", "/auth/token", grant, form=True)["access_token"]

    def add_broker(self, port: int) -> dict[str, Any]:
        flow = self.call("POST", "/api/config/config_entries/flow", {"handler": "mqtt"})
        path = f"/api/config/config_entries/flow/{flow['flow_id']}"
        result: dict[str, Any] = self.call("POST", path, {"broker": "127.0.0.1", "port": port})
        return result

    def registry(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Home Assistant's device and entity registries (websocket API)."""
        ws = WebSocket(self.port, "/api/websocket")
        try:
            ws.recv()  # auth_required
            ws.send({"type": "auth", "access_token": self.token})
            if ws.recv().get("type") != "auth_ok":
                raise RuntimeError("websocket auth failed")
            out = []
            for i, kind in enumerate(("device", "entity"), 1):
                ws.send({"id": i, "type": f"config/{kind}_registry/list"})
                reply = ws.recv()
                while reply.get("id") != i:
                    reply = ws.recv()
                out.append(reply["result"])
            return out[0], out[1]
        finally:
            ws.close()

    def state(self, entity_id: str) -> str:
        try:
            return str(self.call("GET", f"/api/states/{entity_id}")["state"])
        except urllib.error.HTTPError:
            return "(no state)"


class Check:
    def __init__(self) -> None:
        self.failed = 0

    def __call__(self, ok: bool, what: str) -> None:
        self.failed += not ok
        print(f"{'PASS' if ok else 'FAIL'} {what}", flush=True)


def ours(ha: HomeAssistant) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    devices, entities = ha.registry()
    device = next((d for d in devices if ["mqtt", f"agentbox_{DEVICE}"] in d["identifiers"]), None)
    if device is None:
        return None, []
    return device, sorted(
        (e for e in entities if e["device_id"] == device["id"]), key=lambda e: e["entity_id"]
    )


def table(ha: HomeAssistant, entities: list[dict[str, Any]]) -> dict[str, str]:
    states = {e["entity_id"]: ha.state(e["entity_id"]) for e in entities}
    for e in entities:
        category = e.get("entity_category") or "-"
        print(f"  {e['entity_id']:<44} {category:<11} {states[e['entity_id']]}")
    return states


def run_check(root: Path) -> int:
    check = Check()
    sh("ip", "link", "set", "lo", "up")
    links = subprocess.run(["ip", "-o", "link"], check=True, capture_output=True, text=True).stdout
    names = [line.split(":")[1].strip() for line in links.splitlines()]
    print(f"network namespace links: {', '.join(names)} (no route beyond loopback)")
    sh("mount", "--make-rprivate", "/")
    sh("mount", "--rbind", "/dev", str(root / "dev"))
    sh("mount", "-t", "proc", "proc", str(root / "proc"))
    work = Path(tempfile.mkdtemp(prefix="ab-ha-", dir="/tmp"))
    broker = Broker(work).start()
    config = f"[device]\nid = '{DEVICE}'\nname = 'agentbox ha-check'\n"
    config += f"[mqtt]\nhost = '127.0.0.1'\nport = {broker.port}\n"
    box = Daemon(work / "state", config)
    ha = HomeAssistant(root, work / "ha", work / "ha.log")
    try:
        box.start()
        up = ha.start()
        print(f"Home Assistant {HA_VERSION} answered after {up:.0f} s (port {ha.port});")
        print(f"  Mosquitto on 127.0.0.1:{broker.port}; agentbox {box.json('status')['version']}")
        ha.onboard()
        entry = ha.add_broker(broker.port)
        check(entry.get("type") == "create_entry", f"MQTT entry added by config flow: {entry}")
        device, entities = wait_for(lambda: (r := ours(ha))[0] and len(r[1]) >= 11 and r, 60, 1)
        print(f"device: {device['name']} (manufacturer {device['manufacturer']}, model")
        print(
            f"  {device['model']}, sw {device['sw_version']}), identifiers {device['identifiers']}"
        )
        wait_for(
            lambda: ha.state(entities[0]["entity_id"]) not in ("unknown", "unavailable"), 30, 0.5
        )
        print(f"entities ({len(entities)}), states with the box running:")
        live = table(ha, entities)
        check(len(entities) == 11, "11 entities registered")
        online = next(e["entity_id"] for e in entities if e["entity_id"].startswith("binary_"))
        sensors = [e for e in live if e != online]
        # A reading the box reports as null (no temperature sensor on this machine) is
        # `unknown` in Home Assistant for as long as it is null: left out of the checks.
        null = sorted(e for e in sensors if live[e] == "unknown")
        check(live[online] == "on", "Online is on")
        valued = all(live[e] != "unavailable" for e in sensors)
        check(valued, f"the sensors have values (null in the health report: {null})")
        for e in (e for e in sensors if "spend" in e):
            attrs = ha.call("GET", f"/api/states/{e}")["attributes"]
            shown = {k: attrs.get(k) for k in ("device_class", "state_class", "last_reset")}
            print(f"  {e}: {shown}")
            check(attrs.get("last_reset") is not None, f"{e} has a last_reset")

        box.kill9()
        killed = time.monotonic()
        wait_for(lambda: ha.state(online) == "off", 60, 0.2, "Online off")
        print(f"after kill -9 of the daemon (Online off {time.monotonic() - killed:.1f} s later):")
        dead = table(ha, entities)
        check(dead[online] == "off", "Online reads off (not unavailable) after kill -9")
        check(all(dead[e] == "unavailable" for e in sensors), "the sensors are unavailable")

        box.start()
        wait_for(lambda: ha.state(online) == "on", 60, 0.5, "Online on again")
        ha.stop()
        up = ha.start()
        seen: dict[str, set[str]] = {e: set() for e in live if e not in null}

        def settled() -> bool:
            now = {e: ha.state(e) for e in seen}
            for e, s in now.items():
                seen[e].add(s)
            return all(s not in ("unknown", "unavailable", "(no state)") for s in now.values())

        restarted = time.monotonic()
        wait_for(settled, 120, 0.2, "states after the restart")
        took = time.monotonic() - restarted
        print(f"after a Home Assistant restart (HTTP after {up:.0f} s; all states {took:.1f} s")
        print("  later; the box reports health every 60 s):")
        table(ha, entities)
        unknown = sorted(e for e, s in seen.items() if "unknown" in s)
        print(f"  seen `unknown` at any poll (every 0.2 s) after the restart: {unknown}")
        # Online has no availability (it must read off): between its setup and the retained
        # status arriving it reads `unknown`, as any Home Assistant entity does. The health
        # sensors are what waited an interval before the fix.
        stale = [e for e in unknown if e != online]
        check(not stale, f"no health sensor `unknown` after the restart ({len(seen) - 1} checked)")
        check(took < 60, "values before the next periodic health report")
    finally:
        ha.stop()
        if box.proc is not None and box.proc.poll() is None:
            box.stop()
        broker.stop()
        print(f"logs: {work}")
    return 1 if check.failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=Path("/var/cache/agentbox-ha"))
    parser.add_argument("--rebuild", action="store_true", help="build the root again")
    parser.add_argument("--inside", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        return run_check(args.inside)
    if os.geteuid() != 0:
        parser.error("run as root (mmdebstrap, chroot and a network namespace)")
    root = build_root(args.cache, args.rebuild)
    inner = [sys.executable, str(Path(__file__).resolve()), "--inside", str(root)]
    return subprocess.run(["unshare", "--net", "--mount", "--fork", *inner], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
