"""A broker of our own that breaks MQTT 5 flow control on purpose: it pushes PUBLISHes at a
client regardless of the Receive Maximum the client announced, can hold back its PUBACKs for
chosen topics (so the client's handlers wait), and records every acknowledgement it gets.

Just enough MQTT 5 for one aiomqtt client: CONNECT, SUBSCRIBE, PUBLISH both ways at QoS 0/1
(and QoS 2 to the client, never released), PUBACK, PUBREC, PINGREQ. Packets are decoded with
paho's own decoder.
"""

from __future__ import annotations

import socket
import struct
import threading
from typing import Any

from paho.mqtt import _packet
from paho.mqtt.enums import MQTTProtocolVersion

from tests.mqtt_peer import publish_properties


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish_packet(
    topic: str,
    payload: bytes,
    mid: int,
    qos: int = 1,
    response_topic: str | None = None,
    correlation: bytes | None = None,
    user: list[tuple[str, str]] | None = None,
    dup: bool = False,
) -> bytes:
    """One PUBLISH packet, v5 properties included."""
    props = publish_properties(response_topic, correlation, user)
    name = topic.encode()
    body = struct.pack("!H", len(name)) + name
    if qos:
        body += struct.pack("!H", mid)
    packed: bytes = props.pack()  # type: ignore[no-untyped-call]
    body += packed + payload
    return bytes([0x30 | dup << 3 | qos << 1]) + _varint(len(body)) + body


class RudeBroker:
    """One client at a time on a loopback port (see the module docstring)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        self.lock = threading.Lock()
        self.acks: list[tuple[int, int]] = []  # (packet id, reason code) of each PUBACK
        self.recs: list[tuple[int, int]] = []  # and of each PUBREC
        self.received: list[Any] = []  # the client's PUBLISHes (paho's PublishPacket)
        self.subscribed = threading.Event()
        self.hold_prefix: str | None = None  # PUBACKs for these topics wait for release()
        self._held: list[int] = []
        self._next_mid = 0
        self._conn: socket.socket | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def push(self, packets: list[bytes]) -> None:
        """Send these PUBLISHes back to back, whatever the client may have announced."""
        assert self._conn is not None, "no client connected"
        self._send(b"".join(packets))

    def mids(self, n: int) -> list[int]:
        """Fresh packet ids for `n` PUBLISHes to the client."""
        with self.lock:
            out = [(self._next_mid + i) % 65535 + 1 for i in range(n)]
            self._next_mid += n
        return out

    def release(self) -> None:
        """Acknowledge every held-back PUBLISH of the client, and hold no more."""
        with self.lock:
            held, self._held, self.hold_prefix = self._held, [], None
        self._send(b"".join(struct.pack("!BBH", 0x40, 2, mid) for mid in held))

    def answers(self, prefix: str) -> list[Any]:
        with self.lock:
            return [p for p in self.received if p.topic.decode().startswith(prefix)]

    def close(self) -> None:
        with self.lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        self.server.close()

    def _send(self, data: bytes) -> None:
        with self.lock:
            conn = self._conn
            if conn is not None and data:
                conn.sendall(data)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with self.lock:
                self._conn = conn
            try:
                self._session(conn)
            except OSError:
                pass
            finally:
                conn.close()

    def _session(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        while True:
            head = reader.read(1)
            if not head:
                return
            length = shift = 0
            while True:
                (byte,) = reader.read(1)
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            body = reader.read(length)
            self._packet(head[0], body)

    def _packet(self, header: int, body: bytes) -> None:
        kind = header & 0xF0
        if kind == 0x10:  # CONNECT: accepted, no session present, no properties
            self._send(bytes([0x20, 3, 0, 0, 0]))
        elif kind == 0x80:  # SUBSCRIBE: grant QoS 1 to each filter
            mid = body[:2]
            props_len, at = _read_varint(body, 2)
            rest, filters = body[at + props_len :], 0
            while rest:
                (n,) = struct.unpack("!H", rest[:2])
                rest, filters = rest[2 + n + 1 :], filters + 1
            self._send(bytes([0x90, 3 + filters]) + mid + b"\x00" + b"\x01" * filters)
            self.subscribed.set()
        elif kind == 0x30:  # PUBLISH from the client
            packet = _packet.decode_publish(header, body, MQTTProtocolVersion.MQTTv5)
            with self.lock:
                self.received.append(packet)
                hold = self.hold_prefix is not None and packet.topic.decode().startswith(
                    self.hold_prefix
                )
                if hold:
                    self._held.append(packet.mid)
            if packet.qos == 1 and not hold:
                self._send(struct.pack("!BBH", 0x40, 2, packet.mid))
        elif kind in (0x40, 0x50):  # PUBACK or PUBREC from the client
            (mid,) = struct.unpack("!H", body[:2])
            code = body[2] if len(body) > 2 else 0
            with self.lock:
                (self.acks if kind == 0x40 else self.recs).append((mid, code))
        elif kind == 0xC0:  # PINGREQ
            self._send(bytes([0xD0, 0]))


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at
