"""Every reach into paho-mqtt's and aiomqtt's private internals, and nothing else.

Written for paho-mqtt 2.2 and aiomqtt 2.5 (pyproject.toml pins both); internals change without
notice, so importing this module with other versions installed fails at once (`check_versions`).
Each reach and why it is needed:
- `aiomqtt.Client._client`, the paho client underneath: manual acknowledgement (aiomqtt
  acknowledges on receipt), the QoS 1 publisher (publisher.py) and intake hook into it.
- `aiomqtt.Client._queue`: intake's queue bounds QoS 0 and counts what it drops; aiomqtt's own
  `queue_type` option builds its queue from a class with `maxsize` alone.
- paho's `_handle_publish` with `_in_packet`: the one point before paho builds a message or
  (QoS 2) sends PUBREC and keeps the payload, where a delivery past intake's window is refused
  without being held (intake.py).
- paho's `_packet.decode_publish` with `_protocol`: such a refused delivery read as paho reads it.
- paho's `_packet_queue`: paho sends PUBACK and PUBREC with no reason code; a refusal needs 0x97.
- paho's `_out_messages`: QoS 1 messages paho holds until their PUBACK (the publisher's tests).
- paho's `Properties` and `ReasonCode` built from shared tables (`install`, below).
"""

from __future__ import annotations

import asyncio
import re
import struct
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import Any

# distribution -> (lowest supported, first unsupported) as (major, minor): pyproject.toml's pins
SUPPORTED = {"paho-mqtt": ((2, 2), (2, 3)), "aiomqtt": ((2, 5), (3, 0))}


class UnsupportedVersion(ImportError):
    """paho-mqtt or aiomqtt is installed in a version this module was not written for."""


def spec(name: str) -> str:
    """The pip requirement of a supported distribution, as pyproject.toml writes it."""
    (low, high) = SUPPORTED[name]
    top = f"{high[0]}" if high[1] == 0 else f"{high[0]}.{high[1]}"
    return f"{name}>={low[0]}.{low[1]},<{top}"


def check_versions(installed: Mapping[str, str] | None = None) -> None:
    """Raise UnsupportedVersion naming each distribution outside its range and the fix."""
    problems = []
    for name, (low, high) in SUPPORTED.items():
        try:
            version = installed[name] if installed is not None else metadata.version(name)
        except (KeyError, metadata.PackageNotFoundError):
            version = "none"
        found = re.match(r"(\d+)\.(\d+)", version)
        if found is None or not low <= (int(found[1]), int(found[2])) < high:
            problems.append(f"{name} {version} is installed, agentbox needs {spec(name)}")
    if problems:
        fix = " ".join(f"'{spec(name)}'" for name in SUPPORTED)
        raise UnsupportedVersion(
            "; ".join(problems) + " (agentbox/mqtt/paho_adapter.py relies on their internals):"
            f" pip install {fix}"
        )


check_versions()  # a wrong pip install fails here, loudly, not later in subtle ways

# Imported only once the versions are known to be right (a module may be missing otherwise).
import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt import _packet
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.exception import MQTTException
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

_PUBACK, _PUBREC = 0x40, 0x50
# (header byte, packet) of an incoming PUBLISH, and paho's own handling of it
PublishHook = Callable[[int, bytearray, Callable[[], MQTTErrorCode]], MQTTErrorCode]


def paho_client(client: aiomqtt.Client) -> paho.Client:
    """The paho client under aiomqtt's (its public methods are ours to use)."""
    return client._client


def manual_acks(client: aiomqtt.Client) -> None:
    """Acknowledge incoming QoS 1/2 messages only when told (paho's `ack`), not on receipt."""
    client._client.manual_ack_set(True)


def set_queue(client: aiomqtt.Client, queue: asyncio.Queue[aiomqtt.Message]) -> None:
    """Have aiomqtt put incoming messages in `queue` (set before connecting)."""
    client._queue = queue


def in_flight(client: aiomqtt.Client) -> int:
    """QoS 1 messages paho has sent and holds until the broker's PUBACK."""
    return len(client._client._out_messages)


def hook_publish(client: paho.Client, hook: PublishHook) -> None:
    """Call `hook` for each incoming PUBLISH before paho handles it; the hook calls paho's
    handling, or returns without it to drop the packet unseen."""
    handle = client._handle_publish

    def on_publish() -> MQTTErrorCode:
        return hook(client._in_packet["command"], client._in_packet["packet"], handle)

    client._handle_publish = on_publish  # type: ignore[method-assign]


def decode_publish(client: paho.Client, header: int, packet: bytearray) -> paho.MQTTMessage:
    """The message paho would build of this PUBLISH; ValueError or struct.error if malformed."""
    result = _packet.decode_publish(header, packet, client._protocol)
    message = paho.MQTTMessage(result.mid, result.topic)
    message.qos, message.dup, message.payload = result.qos, result.dup, result.payload
    message.properties = result.properties
    return message


def send_reason(client: paho.Client, qos: int, mid: int, code: int) -> None:
    """Queue a PUBACK (QoS 1) or PUBREC (QoS 2) with this reason code and no properties
    (MQTT 5, 3.4.2 and 3.5.2)."""
    command = _PUBACK if qos == 1 else _PUBREC
    client._packet_queue(command, struct.pack("!BBHB", command, 3, mid, code), mid, 1)


# ---- MQTT 5 properties and reason codes on shared tables ----------------------------------
#
# paho 2.x makes a `Properties` for every PUBACK and incoming PUBLISH (five per task here) and
# its constructor fills two dicts with every MQTT 5 property, then each attribute set scans them
# by name; `ReasonCode` copies its table each time. At full load that was ~20 % of the daemon's
# CPU. The tables never change, so `install()` makes the constructors share paho's own tables
# (taken from paho at install time, not copied into this file) and look names up in dicts. The
# checks and errors are paho's: tests/test_paho_adapter.py compares every property against the
# unpatched class.

_MULTIPLE = (11, 38)  # Subscription Identifier and User Property may repeat
_RANGES = {
    "ReceiveMaximum": (1, 65535),
    "TopicAlias": (1, 65535),
    "TopicAliasMaximum": (0, 65535),
    "MaximumPacketSize": (1, 268435455),
    "SubscriptionIdentifier": (1, 268435455),
}
_ONE_BIT = ("RequestResponseInformation", "RequestProblemInformation", "PayloadFormatIndicator")
_PRIVATE = ("packetType", "types", "names", "properties")

ORIGINAL = {
    name: getattr(Properties, name)
    for name in ("__init__", "__setattr__", "clear", "getIdentFromName", "getNameFromIdent")
}
ORIGINAL_REASON_INIT = ReasonCode.__init__


def install() -> None:
    """Patch paho's classes in place (idempotent)."""
    if Properties.__init__ is not ORIGINAL["__init__"]:
        return
    probe = object.__new__(Properties)
    ORIGINAL["__init__"](probe, 0)  # type: ignore[no-untyped-call]  # paho has no hints here
    types, names, table = probe.types, probe.names, probe.properties
    ident = {name.replace(" ", ""): number for name, number in names.items()}
    name_of = {number: name for name, number in names.items()}
    message = f"Property name must be one of {names.keys()}"

    def __init__(self: Properties, packetType: int) -> None:
        object.__setattr__(self, "packetType", packetType)
        object.__setattr__(self, "types", types)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "properties", table)

    def __setattr__(self: Properties, name: str, value: Any) -> None:
        name = name.replace(" ", "")
        if name in _PRIVATE:
            object.__setattr__(self, name, value)
            return
        number = ident.get(name)
        if number is None:
            raise MQTTException(message)
        if self.packetType not in table[number][1]:
            kind = PacketTypes.Names[self.packetType]
            raise MQTTException(f"Property {name} does not apply to packet type {kind}")
        if not isinstance(value, list):
            low_high = _RANGES.get(name)
            if low_high is not None and not low_high[0] <= value <= low_high[1]:
                raise MQTTException(
                    f"{name} property value must be in the range {low_high[0]}-{low_high[1]}"
                )
            if name in _ONE_BIT and value not in (0, 1):
                raise MQTTException(f"{name} property value must be 0 or 1")
        if number in _MULTIPLE:
            if not isinstance(value, list):
                value = [value]
            if name in self.__dict__:
                value = self.__dict__[name] + value
        object.__setattr__(self, name, value)

    def clear(self: Properties) -> None:
        for name in ident:
            self.__dict__.pop(name, None)

    def getIdentFromName(self: Properties, compressedName: str) -> int:
        return ident.get(compressedName, -1)

    def getNameFromIdent(self: Properties, identifier: int) -> str | None:
        return name_of.get(identifier)

    def reason_init(
        self: ReasonCode, packetType: int, aName: str = "Success", identifier: int = -1
    ) -> None:
        # paho's constructor, less its per-object copy of the class's read-only table
        self.names = type(self).names
        self.packetType = packetType
        if identifier == -1:
            if packetType == PacketTypes.DISCONNECT and aName == "Success":
                aName = "Normal disconnection"
            self.set(aName)
        else:
            self.value = identifier
            self.getName()  # raises for a code this packet type does not have

    for fn in (__init__, __setattr__, clear, getIdentFromName, getNameFromIdent):
        setattr(Properties, fn.__name__, fn)
    ReasonCode.__init__ = reason_init  # type: ignore[method-assign]
