"""Home Assistant device discovery: the health sensors and the online state of one box."""

from __future__ import annotations

from typing import Any

from agentbox import __version__
from agentbox.mqtt.topics import Topics

# (key, name, field in the health payload, unit, device_class)
SENSORS: tuple[tuple[str, str, str, str | None, str | None], ...] = (
    ("cpu", "CPU", "value_json.cpu_percent", "%", None),
    ("load", "Load (1 min)", "value_json.load_1m", None, None),
    ("mem", "Memory used", "value_json.mem_percent", "%", None),
    ("disk", "Disk free", "value_json.disk_free_mb", "MB", "data_size"),
    ("temp", "Temperature", "value_json.temp_c", "°C", "temperature"),
    ("queued", "Tasks queued", "value_json.queue.total.queued", None, None),
    ("running", "Tasks running", "value_json.queue.total.running", None, None),
    ("failed", "Tasks failed (1 h)", "value_json.tasks.failed_1h", None, None),
    ("spend_today", "Spend today", "value_json.spend.today_usd", "USD", "monetary"),
    ("spend_month", "Spend this month", "value_json.spend.month_usd", "USD", "monetary"),
)


def discovery_topic(device_id: str) -> str:
    return f"homeassistant/device/agentbox_{device_id}/config"


def discovery_payload(topics: Topics, name: str, hardware: str) -> dict[str, Any]:
    uid = f"agentbox_{topics.device}"
    availability = {
        "topic": topics.status,
        "value_template": "{{ 'online' if value_json.state == 'online' else 'offline' }}",
        "payload_available": "online",
        "payload_not_available": "offline",
    }
    cmps: dict[str, Any] = {
        f"{uid}_{key}": {
            "p": "sensor",
            "name": label,
            "unique_id": f"{uid}_{key}",
            "state_topic": topics.health,
            "value_template": "{{ " + field + " }}",
            **({"unit_of_measurement": unit} if unit else {}),
            **({"device_class": cls} if cls else {}),
            "state_class": "total" if cls == "monetary" else "measurement",
        }
        for key, label, field, unit, cls in SENSORS
    }
    cmps[f"{uid}_online"] = {
        "p": "binary_sensor",
        "name": "Online",
        "unique_id": f"{uid}_online",
        "device_class": "connectivity",
        "state_topic": topics.status,
        "value_template": "{{ 'ON' if value_json.state == 'online' else 'OFF' }}",
    }
    return {
        "dev": {"ids": [uid], "name": name, "mf": "agentbox", "mdl": hardware, "sw": __version__},
        "o": {"name": "agentbox", "sw": __version__},
        "availability": [availability],
        "qos": 1,
        "cmps": cmps,
    }
