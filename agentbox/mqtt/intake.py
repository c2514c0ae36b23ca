"""What the broker may push at the box, and how much of it waits in memory.

QoS 1 deliveries are bounded by the Receive Maximum the box sends in CONNECT: with manual
acknowledgements a request holds its place until its PUBACK, so the broker never has more than
that many unacknowledged at the box (it keeps the rest). QoS 0 has no flow control in MQTT:
beyond a few waiting, QoS 0 messages are dropped and counted. The Maximum Packet Size keeps the
broker from sending what the box would refuse anyway (it drops such messages itself).

Seen with Mosquitto 2.0.11: under a mixed QoS 0/1 flood of large messages it sent several
hundred unacknowledged QoS 1 messages despite a Receive Maximum of 64 (with a plain QoS 1
burst it keeps to it), so memory under such a flood is bounded by the broker's queue limit
for the box (`max_queued_messages`, default 1000), not by ours.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

RECEIVE_MAXIMUM = 64  # QoS 1 requests unacknowledged at once (queued or being handled)
QOS0_QUEUED = 16  # QoS 0 messages waiting at once; more are dropped
PACKET_SLACK = 65536  # topic and properties on top of the payload


def max_packet_size(max_payload_bytes: int) -> int:
    """Twice the payload limit: a request somewhat over it still arrives and gets its
    `payload_too_large` answer; a far larger one is dropped by the broker, unanswered."""
    return 2 * max_payload_bytes + PACKET_SLACK


class Request(aiomqtt.Message):
    """An incoming message with the DUP flag that aiomqtt's message leaves out."""

    def __init__(self, m: paho.MQTTMessage) -> None:
        super().__init__(m.topic, bytes(m.payload), m.qos, bool(m.retain), m.mid, _props(m))
        self.dup = bool(m.dup)  # the broker sent it before: a redelivery


class IntakeQueue(asyncio.Queue[aiomqtt.Message]):
    """aiomqtt's incoming queue with a bound on QoS 0 messages (see the module docstring)."""

    def __init__(self, on_drop: Callable[[], None]) -> None:
        super().__init__()
        self.qos0 = 0
        self._on_drop = on_drop

    def put_nowait(self, item: aiomqtt.Message) -> None:
        if item.qos == 0 and self.qos0 >= QOS0_QUEUED:
            self._on_drop()
            return
        super().put_nowait(item)

    def _put(self, item: aiomqtt.Message) -> None:
        self.qos0 += item.qos == 0
        super()._put(item)  # asyncio.Queue's hook for subclasses

    def _get(self) -> aiomqtt.Message:
        item: aiomqtt.Message = super()._get()
        self.qos0 -= item.qos == 0
        return item


def attach(client: aiomqtt.Client, on_drop: Callable[[], None]) -> IntakeQueue:
    """Give `client` the bounded queue, and messages that keep their DUP flag."""
    queue = IntakeQueue(on_drop)
    client._queue = queue

    def on_message(_c: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
        queue.put_nowait(Request(message))

    client._client.on_message = on_message
    return queue


def _props(m: paho.MQTTMessage) -> Any:
    return getattr(m, "properties", None)
