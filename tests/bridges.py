"""A bridge on its own over a real store and broker, for MQTT tests that need no daemon."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentbox import keys
from agentbox.live import Live
from agentbox.mqtt.bridge import Bridge
from agentbox.settings import MqttConfig, Settings
from agentbox.tasks.service import TaskService
from agentbox.tasks.store import Store


def bare_service(store: Store) -> TaskService:
    """Intake on `store` with default routing, one attempt, a 64 KB payload limit."""
    limits = {"tasks": {"max_attempts": 1}, "mqtt": {"max_payload_bytes": 65536}}
    return TaskService(store, Live.of(Settings.model_validate(limits)))


def bare_bridge(
    store: Store,
    port: int,
    state: Path,
    device_id: str,
    service: TaskService | None = None,
    **extra: Any,
) -> Bridge:
    """A bridge of box `device_id` on the broker at 127.0.0.1:`port`, discovery off."""
    conf = MqttConfig(host="127.0.0.1", port=port, ha_discovery=False)
    return Bridge(
        conf,
        device_id=device_id,
        service=service or bare_service(store),
        store=store,
        keystore=keys.KeyStore(state),
        info=lambda: {},
        **extra,
    )
