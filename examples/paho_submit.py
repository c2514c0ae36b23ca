"""Send one task to an agentbox over MQTT v5 and print its final result (docs/integrating.md).

    pip install "paho-mqtt>=2,<3"
    python paho_submit.py --host broker.lan --list            # the boxes on this broker
    python paho_submit.py --host broker.lan --box <device id> "Summarise: ..."

With `mqtt.require_signature = true` on the box, pass `--secret-file` holding the box's
`mqtt-hmac` key. Only paho-mqtt and the standard library are needed.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import queue
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

PREFIX = "agentbox/v1"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--box", help="the box's device id (see --list)")
    ap.add_argument("--list", action="store_true", help="print the boxes that announced themselves")
    ap.add_argument("--secret-file", type=Path, help="the box's mqtt-hmac key, to sign requests")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("prompt", nargs="?")
    args = ap.parse_args()

    inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_message = lambda _c, _u, msg: inbox.put(msg)
    client.connect(args.host, args.port)
    client.loop_start()

    if args.list:
        # Each box keeps a retained `info` message: the broker hands them all over at once.
        client.subscribe(f"{PREFIX}/+/info", qos=1)
        deadline = time.monotonic() + 2
        while (left := deadline - time.monotonic()) > 0:
            try:
                info = json.loads(inbox.get(timeout=left).payload)
            except queue.Empty:
                break
            print(f"{info['device_id']}  {info['name']}  agentbox {info['version']}")
        return 0
    if not args.box or not args.prompt:
        ap.error("give --box and a prompt (or --list)")

    reply_topic = f"replies/{uuid.uuid4().hex}"
    subscribed = threading.Event()
    client.on_subscribe = lambda *_: subscribed.set()
    client.subscribe(reply_topic, qos=1)
    subscribed.wait(10)  # the answer may come at once: listen before asking
    topic = f"{PREFIX}/{args.box}/task/submit"
    payload = json.dumps({"id": uuid.uuid4().hex[:16], "prompt": args.prompt}).encode()
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ResponseTopic = reply_topic
    props.CorrelationData = b"example-1"
    if args.secret_file:
        ts = str(int(time.time()))
        signed = f"{topic}\n{args.box}\n{ts}\n".encode() + payload
        secret = args.secret_file.read_bytes().strip()
        props.UserProperty = [("ts", ts), ("signature", sign(secret, signed))]
    client.publish(topic, payload, qos=1, properties=props).wait_for_publish(10)

    # Exactly one answer comes back: the final result, or `rejected` at once.
    try:
        msg = inbox.get(timeout=args.timeout)
    except queue.Empty:
        print("no answer yet: ask again later with the same id (task/get)", file=sys.stderr)
        return 1
    result: dict[str, Any] = json.loads(msg.payload)
    print(json.dumps(result, indent=2))
    return 0 if result["state"] == "succeeded" else 1


def sign(secret: bytes, message: bytes) -> str:
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


if __name__ == "__main__":
    sys.exit(main())
