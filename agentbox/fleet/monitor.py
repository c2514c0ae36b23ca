"""`agentbox fleet`: what each box on the broker reports (status, info, health), as a table or
JSON, once or live. It only reads MQTT; it never talks to a box directly."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import aiomqtt

from agentbox import keys
from agentbox.config import Loaded
from agentbox.mqtt.connect import client_for, describe_error

KINDS = ("status", "info", "health")


@dataclass
class Box:
    device_id: str
    status: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    health: dict[str, Any] = field(default_factory=dict)
    seen: float = 0.0  # when this monitor last heard from the box

    def view(self, now: float) -> dict[str, Any]:
        """One box as the fleet sees it; fields it has not reported are null."""
        h = self.health
        spend = h.get("spend") or {}
        queue = (h.get("queue") or {}).get("total") or {}
        providers = h.get("providers") or {}
        ts = h.get("ts")
        return {
            "device_id": self.device_id,
            "name": self.info.get("name"),
            "state": self.status.get("state", "unknown"),
            "session": self.status.get("session"),
            "version": self.info.get("version") or h.get("version"),
            "hardware": self.info.get("hardware"),
            "uptime_s": h.get("uptime_s"),
            "cpu_percent": h.get("cpu_percent"),
            "mem_percent": h.get("mem_percent"),
            "disk_free_mb": h.get("disk_free_mb"),
            "temp_c": h.get("temp_c"),
            "queued": queue.get("queued"),
            "running": queue.get("running"),
            "today_usd": spend.get("today_usd"),
            "daily_cap_usd": spend.get("daily_cap_usd"),
            "problems": sorted(
                f"{n}: {p.get('state')}" for n, p in providers.items() if p.get("state") != "ok"
            ),
            "health_age_s": round(now - ts, 1) if isinstance(ts, int | float) else None,
            "seen_s_ago": round(now - self.seen, 1) if self.seen else None,
        }


class Fleet:
    """What the broker has told us, by device id."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.rstrip("/")
        self.boxes: dict[str, Box] = {}

    def subscriptions(self) -> list[str]:
        return [f"{self.prefix}/+/{kind}" for kind in KINDS]

    def take(self, topic: str, payload: bytes) -> bool:
        """Record one message; False for anything that is not a box's report."""
        rest = topic.removeprefix(self.prefix + "/")
        device, _, kind = rest.partition("/")
        if rest == topic or kind not in KINDS or not device:
            return False
        try:
            body = json.loads(payload)
        except ValueError:
            return False
        if not isinstance(body, dict):
            return False
        box = self.boxes.setdefault(device, Box(device))
        setattr(box, kind, body)
        box.seen = time.time()
        return True

    def views(self) -> list[dict[str, Any]]:
        now = time.time()
        return [self.boxes[d].view(now) for d in sorted(self.boxes)]


def _cell(value: Any, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def table(views: list[dict[str, Any]]) -> str:
    """A fixed-width table, one box per line (fits 100 columns)."""
    head = f"{'device':<18} {'name':<14} {'state':<8} {'cpu':>5} {'mem':>5} {'queue':>7} "
    head += f"{'today':>13}  problems"
    lines = [head]
    for v in views:
        queue = f"{_cell(v['queued'])}/{_cell(v['running'])}"
        spend = f"{_cell(v['today_usd'], '${:.2f}')}/{_cell(v['daily_cap_usd'], '{:.0f}')}"
        lines.append(
            f"{v['device_id'][:18]:<18} {(v['name'] or '-')[:14]:<14} {v['state']:<8} "
            f"{_cell(v['cpu_percent'], '{:.0f}%'):>5} {_cell(v['mem_percent'], '{:.0f}%'):>5} "
            f"{queue:>7} {spend:>13}  {', '.join(v['problems']) or '-'}"
        )
    if not views:
        lines.append("(no box has reported on this broker yet)")
    return "\n".join(lines)


async def watch(
    loaded: Loaded, once: bool, as_json: bool, wait_s: float, out: TextIO = sys.stdout
) -> int:
    """Subscribe and print: once after `wait_s`, or every `wait_s` until interrupted."""
    conf = loaded.settings.mqtt
    fleet = Fleet(conf.prefix)
    password = None
    with contextlib.suppress(keys.KeyError_):
        password = keys.resolve(keys.KeyStore(loaded.state_dir), keys.BROKER_KEY)[0]
    client = client_for(
        conf, password, f"agentbox-fleet-{os.getpid()}", clean_start=True, timeout=10
    )
    try:
        async with client:
            for topic in fleet.subscriptions():
                await client.subscribe(topic, qos=1)
            reader = asyncio.create_task(_read(client, fleet))
            try:
                while True:
                    await asyncio.sleep(wait_s)
                    _show(fleet, as_json, once, out)
                    if once:
                        return 0
            finally:
                reader.cancel()
    except aiomqtt.MqttError as exc:
        print(f"agentbox: {describe_error(conf, exc)}", file=sys.stderr)
        return 69


async def _read(client: aiomqtt.Client, fleet: Fleet) -> None:
    async for message in client.messages:
        payload = message.payload if isinstance(message.payload, bytes) else b""
        fleet.take(str(message.topic), payload)


def _show(fleet: Fleet, as_json: bool, once: bool, out: TextIO) -> None:
    views = fleet.views()
    if as_json:
        # once: one JSON array; live: one JSON line per refresh, for `jq` and log files
        out.write(json.dumps(views, indent=2 if once else None) + "\n")
    else:
        if not once and out.isatty():
            out.write("\x1b[H\x1b[2J")  # clear the terminal between refreshes
        out.write(table(views) + "\n")
    out.flush()
