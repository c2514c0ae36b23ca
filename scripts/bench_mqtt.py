"""MQTT benchmark: agentbox against the Huey + httpx + paho pipeline, same broker and provider.

- round trip: 500 tasks one at a time, v5 request/response, p50 and p99;
- throughput: 2,000 tasks published at once, time until the last result arrived.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.mqtt_peer import Broker  # noqa: E402  (the tests' Mosquitto runner)

SEQUENTIAL = 500
BURST = 2000


def nodelay(client: mqtt.Client) -> None:
    sock = client.socket()
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Client:
    """Publishes requests and counts the answers to its own response topic."""

    def __init__(self, port: int, submit: str) -> None:
        self.submit = submit
        self.reply = f"bench/{os.getpid()}/{time.monotonic_ns()}"
        self.got: set[bytes] = set()
        self.received = 0  # every answer, so that one sent twice shows
        self.cond = threading.Condition()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port)
        nodelay(self.c)
        self.c.subscribe(self.reply, qos=1)
        self.c.loop_start()
        time.sleep(0.3)

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.cond:
            props: Any = msg.properties  # our own v5 replies always carry them
            self.got.add(bytes(props.CorrelationData))
            self.received += 1
            self.cond.notify_all()

    def send(self, i: int, prefix: str) -> None:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = self.reply
        props.CorrelationData = f"{prefix}{i}".encode()
        payload = f'{{"id": "{prefix}{i}", "prompt": "hello", "tier": "cloud", "max_tokens": 16}}'
        self.c.publish(self.submit, payload, qos=1, properties=props)

    def wait(self, keys: set[bytes], timeout: float = 120) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: keys <= self.got, timeout):
                raise RuntimeError(f"{len(keys - self.got)} answers missing")

    def warm_up(self, within_s: float = 60) -> None:
        """Send a probe each second until one is answered: a request published before the box
        subscribed is dropped by the broker, and a fixed sleep raced a slow start."""
        for i in range(int(within_s)):
            self.send(i, "warm-")
            with self.cond:
                if self.cond.wait_for(lambda: bool(self.got), 1.0):
                    self.got.clear()
                    self.received = 0
                    return
        raise RuntimeError(f"the box answered no probe within {within_s:.0f} s")

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def measure(port: int, submit: str) -> dict[str, Any]:
    client = Client(port, submit)
    times = []
    for i in range(SEQUENTIAL):
        t0 = time.perf_counter()
        client.send(i, "s")
        client.wait({f"s{i}".encode()}, 30)
        times.append(time.perf_counter() - t0)
    times.sort()
    t0 = time.perf_counter()
    for i in range(BURST):
        client.send(i, "b")
    client.wait({f"b{i}".encode() for i in range(BURST)})
    burst = time.perf_counter() - t0
    client.close()
    return {
        "roundtrip_p50_ms": round(statistics.median(times) * 1000, 2),
        "roundtrip_p99_ms": round(times[int(len(times) * 0.99) - 1] * 1000, 2),
        "burst_2000_s": round(burst, 3),
        "burst_tasks_per_s": round(BURST / burst),
    }


def main() -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="abmq-", dir="/tmp"))
    broker = Broker(
        tmp, extra="max_queued_messages 100000\nmax_inflight_messages 0\nset_tcp_nodelay true\n"
    ).start()
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert fake.stdout is not None
    fake_url = fake.stdout.readline().strip()
    procs: list[subprocess.Popen[str]] = [fake]
    try:
        config = tmp / "box.toml"
        config.write_text(
            f"[device]\nid = 'bench'\n[mqtt]\nhost = '127.0.0.1'\nport = {broker.port}\n"
            "ha_discovery = false\n[local]\nenabled = false\n"
            "[budget]\ndaily_usd = 1000\nmonthly_usd = 10000\n[tasks]\ncloud_concurrency = 16\n"
            "[providers.fake]\nkind = 'openai'\nmodel = 'gpt-4o-mini'\n"
            f"base_url = '{fake_url}/v1'\n"
        )
        env = {
            **os.environ,
            "AGENTBOX_STATE_DIR": str(tmp / "state"),
            "AGENTBOX_CONFIG": str(config),
        }
        box = subprocess.Popen(
            [sys.executable, "-m", "agentbox", "run"],
            env=env,
            cwd=ROOT,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        procs.append(box)
        probe = Client(broker.port, "agentbox/v1/bench/task/submit")
        probe.warm_up()
        probe.close()
        ours = measure(broker.port, "agentbox/v1/bench/task/submit")
        box.terminate()
        box.wait(30)
        huey = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "scripts" / "huey_pipeline.py"),
                str(broker.port),
                fake_url,
                str(tmp / "huey.db"),
                "baseline",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(huey)
        assert huey.stdout is not None and huey.stdout.readline().strip() == "ready"
        base = measure(broker.port, "baseline/task/submit")
    finally:
        for p in procs:
            p.kill()  # Huey's consumer traps SIGTERM and would poll on forever
            p.wait(10)
        broker.stop()
    return {
        "agentbox": ours,
        "baseline_huey_httpx_paho": base,
        "burst_vs_baseline": round(ours["burst_tasks_per_s"] / base["burst_tasks_per_s"], 2),
        "targets": {
            "burst_tasks_per_s": 1000,
            "burst_vs_baseline": 1.5,
            "roundtrip_p50_ms": 5,
            "roundtrip_p99_ms": 20,
        },
    }


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))
