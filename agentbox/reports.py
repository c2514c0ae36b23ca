"""The daemon's reports (fields: README): `status` for the control socket, the retained MQTT
`info`, and the daemon's own part of each health snapshot (health.py), built from the parts
the daemon names in `Sources`.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentbox import __version__, logs
from agentbox.agent.names import NAMES as TOOL_NAMES
from agentbox.health import Parts, addresses
from agentbox.routing.scoreboard import compact
from agentbox.update import record as update_record
from agentbox.update.remote import summary

if TYPE_CHECKING:  # the parts' types only: this module builds nothing of them
    from agentbox.live import Live
    from agentbox.mqtt.bridge import Bridge
    from agentbox.providers.local import LocalProvider
    from agentbox.routing.budget import Budget
    from agentbox.routing.learned import BoxLearning
    from agentbox.routing.pool import ProviderPool
    from agentbox.routing.scoreboard import Scoreboard
    from agentbox.settings import Settings
    from agentbox.tasks.planner import Planner
    from agentbox.tasks.scheduler import Scheduler
    from agentbox.tasks.service import TaskService
    from agentbox.tasks.store import Store


@dataclass(frozen=True)
class Sources:
    """What the reports read, as the daemon holds it when asked (a reload swaps some)."""

    live: Live  # settings and prices in effect
    started: float  # time.monotonic() when the daemon was built
    store: Store
    service: TaskService
    scheduler: Scheduler
    local: LocalProvider
    pool: ProviderPool
    budget: Budget
    board: Scoreboard
    planner: Planner
    learning: BoxLearning
    bridge: Bridge | None


def hardware() -> str:
    """The board's model (device tree), else the CPU architecture."""
    try:
        return Path("/proc/device-tree/model").read_text().strip("\x00\n ")
    except OSError:
        return platform.machine()


def os_name() -> str:
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME", platform.system())
    except OSError:
        return platform.system()


def rss_mb() -> float:
    """Current resident set size, from /proc (ru_maxrss would be the peak)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return pages * os.sysconf("SC_PAGE_SIZE") / 1024 / 1024


async def status(src: Sources) -> dict[str, Any]:
    """The control socket's `status`: a part that fails is null and named in `unavailable`."""
    parts = Parts("status")
    loaded = src.live.loaded
    report = {
        "version": __version__,
        "device_id": loaded.device_id,
        "name": loaded.settings.device.name,
        "pid": os.getpid(),
        "uptime_s": round(time.monotonic() - src.started, 1),
        "rss_mb": parts.get("rss_mb", lambda: round(rss_mb(), 1)),
        "state_dir": str(loaded.state_dir),
        "config": str(loaded.path) if loaded.path else None,
        "accepting": src.service.accepting,
        "queue": await parts.aget("queue", src.store.counts),
        "accepted": src.service.accepted,
        "finished": src.scheduler.finished,
        "local": parts.get("local", src.local.status),
        "providers": parts.get("providers", src.pool.status),
        "spend": parts.get("spend", src.budget.snapshot),
        "scoreboard": parts.get("scoreboard", src.board.summary),
        "mqtt": parts.get("mqtt", lambda: mqtt_status(src.bridge)),
        "schedules": await parts.aget("schedules", src.planner.summary),
        "routing": parts.get("routing", lambda: routing_status(loaded.settings, src.learning)),
        "network": parts.get("network", addresses),
        "update": parts.get("update", lambda: last_update(loaded.settings)),
        "errors": logs.RECENT.last(),
        "config_warnings": [*loaded.warnings, *src.live.prices.warnings()],
    }
    report["unavailable"] = parts.unavailable
    return report


def routing_status(settings: Settings, learning: BoxLearning) -> dict[str, Any]:
    mode = settings.routing.mode
    return {
        "mode": mode,
        "threshold": round(learning.threshold(mode), 4),
        "learned": learning.state.summary(),
    }


def info(src: Sources) -> dict[str, Any]:
    """The retained `info` message: what this box is and can do (never a key)."""
    settings = src.live.loaded.settings
    return {
        "version": __version__,
        "name": settings.device.name,
        "device_id": src.live.loaded.device_id,
        "hardware": hardware(),
        "os": os_name(),
        "local_model": src.local.model or ("bundled" if settings.local.enabled else None),
        "providers": {n: {"kind": p.kind, "model": p.model} for n, p in settings.providers.items()},
        "pool": settings.mqtt.pool or None,
        "capabilities": ["complete", "schema", "cancel", "get", "schedules"]
        + (["agent"] if settings.providers else [])
        + (["pool"] if settings.mqtt.pool else []),
        "tools": sorted(TOOL_NAMES),
        "update": summary(last_update(settings)),
    }


def last_update(settings: Settings) -> dict[str, Any] | None:
    """The last `agentbox update`'s outcome (docs/updates.md), None if there never was one."""
    return update_record.read(Path(settings.update.root))


async def health_counters(src: Sources) -> dict[str, Any]:
    """The daemon's own part of a health report."""
    counts = await src.store.counts()
    total = {s: sum(c.get(s, 0) for c in counts.values()) for s in ("queued", "running")}
    recent = await src.store.outcomes_since(time.time() - 3600)
    local = src.local.status()
    return {
        "queue": {**counts, "total": total},
        "tasks": {
            "succeeded_1h": recent.get("succeeded", 0),
            "failed_1h": recent.get("failed", 0),
        },
        "spend": src.budget.snapshot(),
        "providers": {
            n: {"state": p["state"], "retry_in_s": p["retry_in_s"]}
            for n, p in src.pool.status().items()
        },
        "local": {k: local[k] for k in ("loaded", "model", "tokens_per_s", "load_error")},
        "scoreboard": compact(src.board.summary()),
        "update": summary(last_update(src.live.loaded.settings)),
    }


def mqtt_status(bridge: Bridge | None) -> dict[str, Any]:
    if bridge is None:
        return {"enabled": False}
    return {
        "enabled": True,
        "connected": bridge.connected,
        "session": bridge.session,
        "broker": f"{bridge.conf.host}:{bridge.conf.port}",
        "received": bridge.received,
        "rejected": bridge.rejected,
    }
