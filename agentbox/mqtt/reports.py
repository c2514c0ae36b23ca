"""The health reports a connection publishes (fields: README, MQTT; built by health.py).

Every `interval` seconds, at once when something notable changes, and at once when asked (Home
Assistant's birth). Retained, with a v5 message expiry of twice the interval: a new subscriber
(Home Assistant after its restart, `agentbox fleet`) reads the latest report at once, and the
broker drops it when the box has been gone for longer than that.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import aiomqtt
from paho.mqtt.packettypes import PacketTypes

from agentbox.health import Health
from agentbox.mqtt.connect import properties
from agentbox.mqtt.payloads import encode

CHECK_S = 5.0  # how often notable changes are looked for


@dataclass(frozen=True)
class Schedule:
    interval: int  # mqtt.health_interval_s
    session: int  # the connection's session number, in each report
    now: asyncio.Event  # set to ask for a report at once


async def health(client: aiomqtt.Client, topic: str, source: Health, when: Schedule) -> None:
    """Publish reports until cancelled (the connection ended)."""
    props = properties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = 2 * when.interval
    last_sent, last_notable = 0.0, None
    while True:
        asked = when.now.is_set()
        when.now.clear()
        snap = await source.snapshot()
        snap["mqtt_session"] = when.session
        snap["health_interval_s"] = when.interval  # the fleet monitor's measure of "stale"
        notable = Health.notable(snap)
        now = time.monotonic()
        if asked or notable != last_notable or now - last_sent >= when.interval:
            await client.publish(topic, encode(snap), qos=1, retain=True, properties=props)
            last_sent, last_notable = now, notable
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(when.now.wait(), min(CHECK_S, when.interval))
