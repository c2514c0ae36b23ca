"""Write every message on some MQTT topics to a JSON-lines file (run in the image's guest).

The image has no MQTT client tools, and a release venv can be pruned by the very update being
watched, so this speaks MQTT 3.1.1 with the system's python3 and the standard library only:
CONNECT, SUBSCRIBE at QoS 0 (no acknowledgements to send), then PUBLISH packets until killed
or, with --once, until the first message (a retained one arrives at once).
    python3 guest_mqtt_tap.py HOST PORT OUT.jsonl [--once] TOPIC...
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time
from pathlib import Path


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, byte = divmod(n, 128)
        out.append(byte | (128 if n else 0))
        if not n:
            return bytes(out)


def _utf8(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _packet(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + _varint(len(body)) + body


def _read(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        got = sock.recv(n - len(buf))
        if not got:
            raise EOFError("the broker closed the connection")
        buf += got
    return buf


def _next(sock: socket.socket) -> tuple[int, bytes]:
    head = _read(sock, 1)[0]
    length, shift = 0, 0
    while True:
        byte = _read(sock, 1)[0]
        length |= (byte & 127) << shift
        shift += 7
        if not byte & 128:
            break
    return head, _read(sock, length)


def main(argv: list[str]) -> int:
    host, port, out, *rest = argv
    once = "--once" in rest
    topics = [t for t in rest if t != "--once"]
    sock = socket.create_connection((host, int(port)), timeout=30)
    client = f"image-test-tap-{time.time_ns()}"
    # Protocol "MQTT" level 4, clean session, keep-alive 0 (the broker never drops us).
    sock.sendall(_packet(0x10, _utf8("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 0)
                         + _utf8(client)))  # fmt: skip
    head, body = _next(sock)
    if head >> 4 != 2 or body[1] != 0:
        print(f"tap: CONNECT refused: {body!r}", file=sys.stderr)
        return 1
    subs = b"".join(_utf8(t) + b"\x00" for t in topics)
    sock.sendall(_packet(0x82, struct.pack("!H", 1) + subs))
    sock.settimeout(None)
    with Path(out).open("a", encoding="utf-8") as f:
        while True:
            head, body = _next(sock)
            if head >> 4 != 3:
                continue
            n = struct.unpack("!H", body[:2])[0]
            topic = body[2 : 2 + n].decode()
            skip = 2 + n + (2 if (head >> 1) & 3 else 0)
            payload = body[skip:].decode(errors="replace")
            f.write(json.dumps({"at": time.time(), "topic": topic, "payload": payload}) + "\n")
            f.flush()
            if once:
                return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
