"""Home Assistant device discovery: the health sensors and the online state of one box.

One retained message on `<discovery_prefix>/device/agentbox_<id>/config` (Home Assistant's
device discovery). What the bridge does with it: sent on every connect and again when Home
Assistant's birth (`<discovery_prefix>/status` = `online`) arrives, together with a fresh
health report; health is retained too (with its v5 message expiry of twice the interval, so
a retained report is never older than that), so Home Assistant's sensors read a value as
soon as they subscribe, whenever it restarted. With `mqtt.ha_discovery` off the box sends an
empty retained message there instead, which removes the device from Home Assistant.

Home Assistant's rules followed here (its MQTT integration, homeassistant/components/mqtt):
- each component carries its own `qos`: device discovery copies into its components only the
  availability options and the state and command topics (SHARED_OPTIONS in mqtt/schemas.py,
  merged by mqtt/discovery.py), so a top-level `qos` is never read; availability is set per
  component too, so that one component can go without it;
- "Online" reads the status topic itself and has no availability, so it can be off
  (zigbee2mqtt's bridge "Connection state" entity does the same); it and the system readings
  are `entity_category: diagnostic`;
- spend is `device_class: monetary`, which allows only `state_class: total`; the sensor
  recorder (homeassistant/components/sensor/recorder.py) starts a new cycle when `last_reset`
  changes, so each spend sensor reads it from the health report (`spend.today_since`,
  `spend.month_since`) and a midnight or month-start reset is never recorded as negative spend.
"""

from __future__ import annotations

from typing import Any

import aiomqtt

from agentbox import __version__
from agentbox.mqtt.payloads import encode
from agentbox.mqtt.topics import Topics

QOS = 1
# (key, name, field in the health payload, unit, device_class, diagnostic)
SENSORS: tuple[tuple[str, str, str, str | None, str | None, bool], ...] = (
    ("cpu", "CPU", "cpu_percent", "%", None, True),
    ("load", "Load (1 min)", "load_1m", None, None, True),
    ("mem", "Memory used", "mem_percent", "%", None, True),
    ("disk", "Disk free", "disk_free_mb", "MB", "data_size", True),
    ("temp", "Temperature", "temp_c", "°C", "temperature", True),
    ("queued", "Tasks queued", "queue.total.queued", None, None, False),
    ("running", "Tasks running", "queue.total.running", None, None, False),
    ("failed", "Tasks failed (1 h)", "tasks.failed_1h", None, None, False),
)
# (key, name, amount field, field with the start of its period)
SPEND: tuple[tuple[str, str, str, str], ...] = (
    ("spend_today", "Spend today", "spend.today_usd", "spend.today_since"),
    ("spend_month", "Spend this month", "spend.month_usd", "spend.month_since"),
)


def _template(field: str) -> str:
    return "{{ value_json." + field + " }}"


def discovery_payload(topics: Topics, name: str, hardware: str) -> dict[str, Any]:
    uid = f"agentbox_{topics.device}"
    availability = [
        {
            "topic": topics.status,
            "value_template": "{{ 'online' if value_json.state == 'online' else 'offline' }}",
            "payload_available": "online",
            "payload_not_available": "offline",
        }
    ]

    def health(key: str, label: str) -> dict[str, Any]:
        return {
            "p": "sensor",
            "name": label,
            "unique_id": f"{uid}_{key}",
            "state_topic": topics.health,
            "availability": availability,
            "qos": QOS,
        }

    cmps: dict[str, Any] = {}
    for key, label, field, unit, cls, diagnostic in SENSORS:
        cmps[f"{uid}_{key}"] = {
            **health(key, label),
            "value_template": _template(field),
            **({"unit_of_measurement": unit} if unit else {}),
            **({"device_class": cls} if cls else {}),
            **({"entity_category": "diagnostic"} if diagnostic else {}),
            "state_class": "measurement",
        }
    for key, label, field, since in SPEND:
        cmps[f"{uid}_{key}"] = {
            **health(key, label),
            "value_template": _template(field),
            "unit_of_measurement": "USD",
            "device_class": "monetary",
            "state_class": "total",
            "last_reset_value_template": _template(since),
        }
    cmps[f"{uid}_online"] = {
        "p": "binary_sensor",
        "name": "Online",
        "unique_id": f"{uid}_online",
        "device_class": "connectivity",
        "entity_category": "diagnostic",
        "state_topic": topics.status,
        "value_template": "{{ 'ON' if value_json.state == 'online' else 'OFF' }}",
        "qos": QOS,
    }
    return {
        "dev": {"ids": [uid], "name": name, "mf": "agentbox", "mdl": hardware, "sw": __version__},
        "o": {"name": "agentbox", "sw": __version__},
        "cmps": cmps,
    }


async def announce(client: aiomqtt.Client, topics: Topics, info: dict[str, Any]) -> None:
    """The retained discovery message, named and described by the box's info."""
    payload = discovery_payload(topics, str(info.get("name")), str(info.get("hardware")))
    await client.publish(topics.ha_config, encode(payload), qos=QOS, retain=True)


async def unannounce(client: aiomqtt.Client, topics: Topics) -> None:
    """An empty retained config: Home Assistant removes the device (and nothing is kept)."""
    await client.publish(topics.ha_config, b"", qos=QOS, retain=True)
