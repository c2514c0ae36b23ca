"""The `update_request` operation (MQTT only): a request checked and spooled for the root
updater by RemoteUpdates, which parses it (update/request.py) and answers its state."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from agentbox.operations import MQTT, Caller, Operation
from agentbox.update.remote import RemoteUpdates


def update_ops(updates: Callable[[], RemoteUpdates]) -> list[Operation[Any, Any]]:
    """`updates` gives a RemoteUpdates on the settings in effect (a reload may change them)."""

    def request(raw: Mapping[str, Any]) -> dict[str, Any]:
        return dict(raw)  # RemoteUpdates.handle parses it, with the updater's own rules

    async def spool(req: dict[str, Any], _: Caller) -> dict[str, Any]:
        return updates().handle(req)

    return [Operation("update_request", request, spool, MQTT)]
