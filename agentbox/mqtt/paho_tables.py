"""paho-mqtt's MQTT 5 property and reason-code objects, built from shared tables.

paho 2.x makes a `Properties` for every PUBACK and incoming PUBLISH (five per task here) and
its constructor fills two dicts with every MQTT 5 property, then each attribute set scans them
by name; `ReasonCode` copies its table each time. At full load that was ~20 % of the daemon's
CPU. The tables never change, so `install()` makes the constructors share paho's own tables
(taken from paho at install time, not copied into this file) and look names up in dicts. The
checks and errors are paho's: tests/test_paho_tables.py compares every property against the
unpatched class.
"""

from __future__ import annotations

from typing import Any

from paho.mqtt.exception import MQTTException
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

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
