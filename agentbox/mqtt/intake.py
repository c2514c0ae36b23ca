"""What the broker may push at the box, and how much of it waits in memory.

QoS 1/2 deliveries are bounded by the Receive Maximum the box sends in CONNECT: with manual
acknowledgements a request holds its place until its PUBACK, so a broker that keeps to it never
has more than that many unacknowledged at the box. Mosquitto 2.0.11 does not: once PUBACKs flow
while more waits for the box it sends past it (236 unacknowledged of a plain QoS 1 burst when
each PUBACK took 0.2 s, several hundred of a mixed QoS 0/1 flood). So the `Window` bounds what
the box holds whatever arrives: RECEIVE_MAXIMUM payloads of any size, and past that small ones
(OVERFLOW_PACKET) up to OVERFLOW_BYTES, each counted with OVERHEAD for what Python keeps around
it: a burst of small requests is still served in full. Any other delivery is refused with a
PUBACK (PUBREC for QoS 2) of reason code 0x97, Quota exceeded, and never queued with its
payload (refusals.py answers it). MQTT 5 also lets a receiver DISCONNECT with 0x93 (Receive
Maximum exceeded), but the broker then sends its whole unacknowledged set again on the next
connection, overshooting again: a reconnect loop.

QoS 0 has no flow control in MQTT: beyond a few waiting, QoS 0 messages are dropped and counted.
The Maximum Packet Size keeps the broker from sending what the box would refuse anyway (it
drops such messages itself).
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

from agentbox.mqtt import paho_adapter

RECEIVE_MAXIMUM = 64  # QoS 1/2 payloads held at once (in paho's QoS 2 store, queued or handled)
OVERFLOW_PACKET = 16384  # the largest packet held past the Receive Maximum
OVERFLOW_BYTES = 4 * 1024 * 1024  # what those may hold at once
OVERHEAD = 1024  # counted for each on top of its packet
QOS0_QUEUED = 16  # QoS 0 messages waiting at once; more are dropped
PACKET_SLACK = 65536  # topic and properties on top of the payload
QUOTA_EXCEEDED = 0x97  # MQTT 5 reason code of a refusing PUBACK or PUBREC


def max_packet_size(max_payload_bytes: int) -> int:
    """Twice the payload limit: a request somewhat over it still arrives and gets its
    `payload_too_large` answer; a far larger one is dropped by the broker, unanswered."""
    return 2 * max_payload_bytes + PACKET_SLACK


class Slot:
    """One QoS 1/2 delivery's place until its acknowledgement (or none) is decided."""

    __slots__ = ("code", "extra", "held", "mid", "qos", "settled")

    def __init__(self, mid: int, qos: int, held: bool, extra: int = 0) -> None:
        self.mid, self.qos, self.held = mid, qos, held
        self.extra = extra  # bytes counted against OVERFLOW_BYTES
        self.code: int | None = None  # the reason code to send; None while undecided
        self.settled = False


class Window:
    """One connection's QoS 1/2 deliveries and what they hold (see the module docstring);
    PUBACKs leave in the order the PUBLISHes came (MQTT 5, 4.6), refusals among them."""

    def __init__(self, client: paho.Client) -> None:
        self._paho = client
        self.held = 0
        self.extra = 0  # bytes held past the Receive Maximum
        self._order: deque[Slot] = deque()  # QoS 1 only: QoS 2's PUBREC went out on receipt
        self._qos2: dict[int, Slot] = {}  # accepted QoS 2 deliveries awaiting their PUBREL
        self._closed = False

    def admit(self, mid: int, qos: int, size: int) -> Slot | None:
        """A place for this delivery of `size` bytes, holding its payload; None when full."""
        extra = 0
        if self.held >= RECEIVE_MAXIMUM:
            extra = size + OVERHEAD
            if size > OVERFLOW_PACKET or self.extra + extra > OVERFLOW_BYTES:
                return None
        self.held += 1
        self.extra += extra
        return self._add(Slot(mid, qos, held=True, extra=extra))

    def outside(self, mid: int, qos: int) -> Slot:
        """A place in the acknowledgement order for a delivery refused without its payload."""
        return self._add(Slot(mid, qos, held=False))

    def _add(self, slot: Slot) -> Slot:
        if slot.qos == 1:
            self._order.append(slot)
        elif slot.held:
            self._qos2[slot.mid] = slot
        return slot

    def awaiting_release(self, mid: int) -> bool:
        """An accepted QoS 2 delivery with this id has not had its PUBREL yet."""
        return mid in self._qos2

    def released(self, mid: int) -> Slot | None:
        """The slot of an accepted QoS 2 delivery whose PUBREL came (paho passes it on now)."""
        return self._qos2.pop(mid, None)

    def settle(self, slot: Slot | None, code: int | None) -> None:
        """Its payload is let go; acknowledge with `code` (0: accepted), or never when None:
        the broker sends it again on the next connection."""
        if slot is None or slot.settled:
            return
        slot.settled, slot.code = True, code
        self.held -= slot.held
        self.extra -= slot.extra
        if self._closed:
            return
        if slot.qos != 1:
            self._send(slot)
        while self._order and self._order[0].settled:
            self._send(self._order.popleft())

    def close(self) -> None:
        """The connection ended: nothing more is acknowledged on it."""
        self._closed = True
        self._order.clear()
        self._qos2.clear()

    def _send(self, slot: Slot) -> None:
        if slot.code is None:
            return
        if slot.code == 0:
            self._paho.ack(slot.mid, slot.qos)  # PUBACK, or PUBCOMP for an accepted QoS 2
            return
        paho_adapter.send_reason(self._paho, slot.qos, slot.mid, slot.code)


class Request(aiomqtt.Message):
    """An incoming message with the DUP flag that aiomqtt's message leaves out, and its slot."""

    def __init__(self, m: paho.MQTTMessage, slot: Slot | None = None) -> None:
        super().__init__(m.topic, bytes(m.payload), m.qos, bool(m.retain), m.mid, _props(m))
        self.dup = bool(m.dup)  # the broker sent it before: a redelivery
        self.slot = slot


def slot_of(message: aiomqtt.Message) -> Slot | None:
    return getattr(message, "slot", None)


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


Refuse = Callable[[Request, Slot], None]


def attach(client: aiomqtt.Client, on_drop: Callable[[], None], on_refuse: Refuse) -> Window:
    """Give `client` the bounded queue and window, and messages that keep their DUP flag.
    `on_refuse` gets each delivery beyond the window (its payload only while it runs) and
    must settle its slot."""
    queue = IntakeQueue(on_drop)
    paho_adapter.set_queue(client, queue)
    mqtt = paho_adapter.paho_client(client)
    window = Window(mqtt)
    arriving: list[Slot | None] = [None]

    def on_publish(
        header: int, packet: bytearray, handle_publish: Callable[[], MQTTErrorCode]
    ) -> MQTTErrorCode:
        # Called for each incoming PUBLISH before paho builds a message or (QoS 2) sends PUBREC
        # and keeps the payload: the one place to refuse without holding it.
        qos = (header & 0x06) >> 1
        if qos == 0:
            return handle_publish()
        try:
            (length,) = struct.unpack_from("!H", packet, 0)
            (mid,) = struct.unpack_from("!H", packet, 2 + length)
        except struct.error:
            return handle_publish()  # malformed: paho's own error ends the connection
        if qos == 2 and window.awaiting_release(mid):
            return handle_publish()  # the same delivery again before its PUBREL
        slot = window.admit(mid, qos, len(packet))
        if slot is not None:
            arriving[0] = slot if qos == 1 else None
            try:
                return handle_publish()
            finally:
                if arriving[0] is not None:  # paho failed before passing it on: never queued
                    window.settle(arriving[0], None)
                arriving[0] = None
        refused = window.outside(mid, qos)
        try:
            request = Request(paho_adapter.decode_publish(mqtt, header, packet), refused)
        except (ValueError, struct.error):  # an undecodable topic, say: refused unanswered
            window.settle(refused, QUOTA_EXCEEDED)
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        on_refuse(request, refused)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def on_message(_c: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
        slot = None
        if message.qos:
            slot = arriving[0] if message.qos == 1 else window.released(message.mid)
            arriving[0] = None
        try:
            request = Request(message, slot)
        except ValueError:  # a topic that is not UTF-8: refused, never to come back
            window.settle(slot, QUOTA_EXCEEDED)
            raise
        queue.put_nowait(request)

    paho_adapter.hook_publish(mqtt, on_publish)
    mqtt.on_message = on_message
    return window


def _props(m: paho.MQTTMessage) -> Any:
    return getattr(m, "properties", None)
