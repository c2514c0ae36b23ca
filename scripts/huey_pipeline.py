"""Baseline for the MQTT benchmark: the same pipeline glued from Huey (SqliteHuey, fsync on),
httpx and paho, the baseline README's Benchmarks section names. Tuned to its best case (1 ms polls).
At most once: Huey deletes a job when a worker takes it. Prints "ready", then serves."""

from __future__ import annotations

import json
import socket
import sys
import threading
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from huey import SqliteHuey
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def nodelay(client: mqtt.Client) -> None:
    sock = client.socket()
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def main() -> None:
    port, fake_url, db, prefix = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    huey = SqliteHuey(filename=db, fsync=True, results=False)
    http = httpx.Client()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", port)
    nodelay(pub)
    pub.loop_start()

    @huey.task()  # type: ignore[untyped-decorator]
    def run(spec: dict[str, Any], reply: str, corr: str) -> None:
        body = {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": spec["prompt"]}],
            "max_tokens": spec.get("max_tokens", 16),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        parts = []
        with http.stream("POST", f"{fake_url}/v1/chat/completions", json=body) as resp:
            for line in resp.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    for choice in json.loads(line[6:]).get("choices", []):
                        parts.append(choice.get("delta", {}).get("content") or "")
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.CorrelationData = bytes.fromhex(corr)
        result = {"id": spec.get("id"), "state": "succeeded", "output": "".join(parts)}
        pub.publish(reply, json.dumps(result), qos=1, properties=props)

    def on_message(client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        props: Any = msg.properties  # a v5 request always has them
        run(json.loads(msg.payload), props.ResponseTopic, bytes(props.CorrelationData).hex())

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sub.on_message = on_message
    sub.connect("127.0.0.1", port)
    nodelay(sub)
    sub.subscribe(f"{prefix}/task/submit", qos=1)
    sub.loop_start()
    consumer = huey.create_consumer(
        workers=8,
        worker_type="thread",
        periodic=False,
        initial_delay=0.001,
        backoff=1.0,
        max_delay=0.001,
    )
    consumer.start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
