"""paho's Properties and ReasonCode on shared tables behave exactly as paho's own code: every
property on every packet type, in range and out of it, packed, unpacked and cleared."""

from __future__ import annotations

from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agentbox.mqtt import paho_tables

paho_tables.install()


class Reference(Properties):
    """paho's unpatched methods, on a subclass so both can live side by side."""


for _name, _fn in paho_tables.ORIGINAL.items():
    setattr(Reference, _name, _fn)


class ReferenceCode(ReasonCode):
    __init__ = paho_tables.ORIGINAL_REASON_INIT


SAMPLES: dict[str, list[Any]] = {
    "Byte": [0, 1, 2],
    "Two Byte Integer": [0, 1, 65535, 65536],
    "Four Byte Integer": [0, 1, 268435455, 268435456],
    "Variable Byte Integer": [0, 1, 268435455],
    "Binary Data": [b"\x00\x01"],
    "UTF-8 Encoded String": ["a/b"],
    "UTF-8 String Pair": [("k", "v")],
}
PACKET_TYPES = [*range(PacketTypes.CONNECT, PacketTypes.AUTH + 1), PacketTypes.WILLMESSAGE]


def outcome(cls: type[Properties], packet_type: int, name: str, value: Any) -> Any:
    p = cls(packet_type)
    try:
        setattr(p, name, value)
        setattr(p, name, value)  # twice: repeatable properties accumulate, others replace
        packed = p.pack()  # type: ignore[no-untyped-call]
    except Exception as exc:  # the error itself is what is compared
        return type(exc), str(exc)
    back = cls(packet_type)
    back.unpack(packed)  # type: ignore[no-untyped-call]
    unpacked = back.json()  # type: ignore[no-untyped-call]
    back.clear()  # type: ignore[no-untyped-call]
    return packed, p.json(), str(p), unpacked, back.isEmpty()  # type: ignore[no-untyped-call]


def test_every_property_on_every_packet_type_matches_paho() -> None:
    table = Reference(PacketTypes.PUBLISH).properties  # type: ignore[no-untyped-call]
    types = Reference(PacketTypes.PUBLISH).types  # type: ignore[no-untyped-call]
    names = Reference(PacketTypes.PUBLISH).names  # type: ignore[no-untyped-call]
    compared = 0
    for spaced, ident in names.items():
        for name in (spaced, spaced.replace(" ", "")):
            for value in SAMPLES[types[table[ident][0]]]:
                for packet_type in PACKET_TYPES:
                    ours = outcome(Properties, packet_type, name, value)
                    assert ours == outcome(Reference, packet_type, name, value), (name, value)
                    compared += 1
    assert compared > 1000
    assert outcome(Properties, 3, "NoSuchThing", 1) == outcome(Reference, 3, "NoSuchThing", 1)


def test_tables_are_shared_and_lookups_agree() -> None:
    a, b = Properties(PacketTypes.PUBLISH), Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]
    assert a.names is b.names and a.properties is b.properties
    ref = Reference(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    for name, ident in ref.names.items():
        compressed = name.replace(" ", "")
        assert a.getIdentFromName(compressed) == ref.getIdentFromName(compressed) == ident  # type: ignore[no-untyped-call]
        assert a.getNameFromIdent(ident) == ref.getNameFromIdent(ident) == name  # type: ignore[no-untyped-call]
    assert a.getIdentFromName("Nope") == ref.getIdentFromName("Nope") == -1  # type: ignore[no-untyped-call]


@pytest.mark.parametrize("packet_type", PACKET_TYPES)
def test_reason_codes_match_paho(packet_type: int) -> None:
    def made(cls: type[ReasonCode], **kw: Any) -> Any:
        try:
            rc = cls(packet_type, **kw)
        except Exception as exc:
            return type(exc), str(exc)
        return rc.value, rc.getName()

    assert made(ReasonCode) == made(ReferenceCode)
    for code in ReasonCode.names:
        assert made(ReasonCode, identifier=code) == made(ReferenceCode, identifier=code)
    assert made(ReasonCode, aName="Quota exceeded") == made(ReferenceCode, aName="Quota exceeded")
