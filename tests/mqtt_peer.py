"""A real Mosquitto per test and a real MQTT client (paho) standing in for an integrator."""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.conftest import free_port, wait_for

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Broker:
    """Mosquitto on a free loopback port; stop() and start() keep the same port."""

    def __init__(self, workdir: Path, persistence: bool = False, extra: str = "") -> None:
        self.port = free_port()
        self.dir = workdir
        self.conf = workdir / "mosquitto.conf"
        # Run as whoever runs the tests: started as root, Mosquitto would switch to its own
        # user and lose access to the test's owner-only files.
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"user {getpass.getuser()}",
        ]
        if persistence:
            lines += ["persistence true", f"persistence_location {workdir}/"]
        else:
            lines.append("persistence false")
        self.conf.write_text("\n".join(lines) + "\n" + extra)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Broker:
        log = (self.dir / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)
        wait_for(self._listening, 10, what="mosquitto")
        return self

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Peer:
    """An MQTT v5 client that records what it receives, per topic."""

    def __init__(self, port: int, client_id: str = "", persistent: bool = False) -> None:
        self.messages: list[tuple[str, dict[str, Any] | str, bytes | None, bool]] = []
        self.lock = threading.Lock()
        self.expiry: dict[str, int | None] = {}
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        self.subscriptions: list[str] = []
        self.client.on_connect = self._on_connect
        props = None
        if persistent:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, clean_start=not persistent, properties=props)
        self.client.loop_start()
        self.connected = threading.Event()
        wait_for(self.client.is_connected, 10, what="peer connected")

    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any = None
    ) -> None:
        for topic in self.subscriptions:
            client.subscribe(topic, qos=1)

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        corr = getattr(msg.properties, "CorrelationData", None) if msg.properties else None
        try:
            body: dict[str, Any] | str = json.loads(msg.payload)
        except ValueError:
            body = msg.payload.decode(errors="replace")
        expiry = getattr(msg.properties, "MessageExpiryInterval", None) if msg.properties else None
        with self.lock:
            self.messages.append((msg.topic, body, corr, bool(msg.retain)))
            self.expiry[msg.topic] = expiry

    def subscribe(self, *topics: str) -> None:
        for topic in topics:
            self.subscriptions.append(topic)
            result, _ = self.client.subscribe(topic, qos=1)
            assert result == mqtt.MQTT_ERR_SUCCESS
        time.sleep(0.2)

    def publish(
        self,
        topic: str,
        payload: bytes | str | dict[str, Any],
        response_topic: str | None = None,
        correlation: bytes | None = None,
        user: list[tuple[str, str]] | None = None,
        qos: int = 1,
        wait: bool = True,
    ) -> mqtt.MQTTMessageInfo:
        props = (
            publish_properties(response_topic, correlation, user)
            if response_topic or user
            else None
        )
        data = json.dumps(payload) if isinstance(payload, dict) else payload
        info = self.client.publish(topic, data, qos=qos, properties=props)
        if wait:
            info.wait_for_publish(10)
        return info

    def on(self, topic: str) -> list[Any]:
        with self.lock:
            return [m for m in self.messages if mqtt.topic_matches_sub(topic, m[0])]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def publish_properties(
    response_topic: str | None, correlation: bytes | None, user: list[tuple[str, str]] | None
) -> Properties:
    """A PUBLISH's v5 request properties: where to answer, what to echo, user properties."""
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if response_topic:
        props.ResponseTopic = response_topic
    if correlation is not None:
        props.CorrelationData = correlation
    if user:
        props.UserProperty = user
    return props
