"""paho's Properties and ReasonCode on shared tables behave exactly as paho's own code: every
property on every packet type, in range and out of it, packed, unpacked and cleared."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agentbox.mqtt import paho_adapter
from tests.conftest import ROOT

paho_adapter.install()


class Reference(Properties):
    """paho's unpatched methods, on a subclass so both can live side by side."""


for _name, _fn in paho_adapter.ORIGINAL.items():
    setattr(Reference, _name, _fn)


class ReferenceCode(ReasonCode):
    __init__ = paho_adapter.ORIGINAL_REASON_INIT


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


# ---- the versions the adapter was written for ----------------------------------------------

RIGHT = {"paho-mqtt": "2.2.0", "aiomqtt": "2.5.1"}


@pytest.mark.parametrize(
    ("name", "version"),
    [("paho-mqtt", "2.3.0"), ("paho-mqtt", "2.1.0"), ("paho-mqtt", "3.0"), ("aiomqtt", "3.0.0")],
)
def test_a_version_outside_the_pins_is_refused_with_the_fix(name: str, version: str) -> None:
    with pytest.raises(paho_adapter.UnsupportedVersion) as err:
        paho_adapter.check_versions({**RIGHT, name: version})
    text = str(err.value)
    assert f"{name} {version} is installed, agentbox needs {paho_adapter.spec(name)}" in text
    assert "pip install 'paho-mqtt>=2.2,<2.3' 'aiomqtt>=2.5,<3'" in text


def test_versions_within_the_pins_and_the_running_ones_pass() -> None:
    paho_adapter.check_versions(RIGHT)
    paho_adapter.check_versions({"paho-mqtt": "2.2.9", "aiomqtt": "2.99"})
    paho_adapter.check_versions()  # what this environment has installed
    with pytest.raises(paho_adapter.UnsupportedVersion, match="paho-mqtt none is installed"):
        paho_adapter.check_versions({"aiomqtt": "2.5.1"})


def test_pyproject_pins_what_the_adapter_checks() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for name in paho_adapter.SUPPORTED:
        assert paho_adapter.spec(name) in project["dependencies"], name


def test_a_wrong_paho_install_stops_the_import_of_the_bridge(tmp_path: Path) -> None:
    """The failure is at import, naming the version and the fix (not a subtle bug later)."""
    dist = tmp_path / "paho_mqtt-2.3.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: paho-mqtt\nVersion: 2.3.0\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    run = subprocess.run(
        [sys.executable, "-c", "import agentbox.mqtt.bridge"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("agentbox.mqtt.paho_adapter.UnsupportedVersion: paho-mqtt 2.3.0 is")
    assert "pip install 'paho-mqtt>=2.2,<2.3'" in last
