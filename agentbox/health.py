"""One health snapshot (fields: README, MQTT) from psutil and the daemon's own counters.

Over MQTT each report is retained with a message expiry of twice `health_interval_s`
(mqtt/reports.py): a new subscriber (Home Assistant after a restart) reads the latest at
once, and none is ever older than two intervals. `spend.today_since` and `spend.month_since`
say when the spend figures last started from zero (Home Assistant's `last_reset`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import psutil

from agentbox import __version__, logs

log = logging.getLogger("agentbox.health")
T = TypeVar("T")
# (report, part, error type) already logged: a part that keeps failing is logged once, not
# on every poll (the console asks for status every 2 s).
_LOGGED: set[tuple[str, str, str]] = set()

DISK_LOW_MB = 500
TEMP_HIGH_C = 80.0


class Parts:
    """Builds a report part by part: a part that fails is null and named in `unavailable`.

    One failing reading (a sandbox without netlink, a missing sensor, a busy store) must never
    take down the whole report, or the console and `status` would show a dead daemon.
    """

    def __init__(self, report: str) -> None:
        self.report = report
        self.unavailable: dict[str, str] = {}

    def get(self, part: str, read: Callable[[], T]) -> T | None:
        try:
            return read()
        except Exception as exc:  # any failure of one part is reported, not raised
            self._failed(part, exc)
            return None

    async def aget(self, part: str, read: Callable[[], Awaitable[T]]) -> T | None:
        try:
            return await read()
        except Exception as exc:
            self._failed(part, exc)
            return None

    def _failed(self, part: str, exc: Exception) -> None:
        reason = logs.SCRUBBER.scrub(f"{type(exc).__name__}: {exc}")[:200]
        self.unavailable[part] = reason
        key = (self.report, part, type(exc).__name__)
        if key not in _LOGGED:
            _LOGGED.add(key)
            log.warning("%s: %s unavailable (%s); the rest of the report is sent", *key[:2], reason)


def hottest_sensor() -> float | None:
    """The highest temperature any sensor reports, or None on boards without sensors."""
    try:
        sensors = psutil.sensors_temperatures()
    except (AttributeError, OSError):
        return None
    temps = [t.current for entries in sensors.values() for t in entries if t.current]
    return round(max(temps), 1) if temps else None


def addresses() -> list[dict[str, Any]]:
    """Interfaces that are up, with their IPv4 and IPv6 addresses (loopback left out)."""
    stats = psutil.net_if_stats()
    out = []
    for name, addrs in sorted(psutil.net_if_addrs().items()):
        if name == "lo" or not stats.get(name) or not stats[name].isup:
            continue
        ips = [
            a.address.split("%")[0] for a in addrs if a.family in (socket.AF_INET, socket.AF_INET6)
        ]
        if ips:
            out.append({"name": name, "addresses": ips})
    return out


def _system(state_dir: Path, parts: Parts) -> dict[str, Any]:
    """The part that reads /proc and /sys: run in a thread, never on the event loop."""
    mem = parts.get("memory", psutil.virtual_memory)
    return {
        "cpu_percent": parts.get("cpu_percent", lambda: psutil.cpu_percent(None)),
        "load_1m": parts.get("load_1m", lambda: round(psutil.getloadavg()[0], 2)),
        "mem_percent": mem.percent if mem else None,
        "mem_available_mb": mem.available // (1024 * 1024) if mem else None,
        "disk_free_mb": parts.get(
            "disk_free_mb", lambda: psutil.disk_usage(str(state_dir)).free // (1024 * 1024)
        ),
        "temp_c": hottest_sensor(),
    }


class Health:
    """Builds snapshots; `notable()` is what, when it changes, is worth a report at once."""

    def __init__(self, state_dir: Path, counters: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        self.state_dir = state_dir
        self.counters = counters
        self.started = time.monotonic()
        psutil.cpu_percent(None)  # the first reading only starts the measurement

    async def snapshot(self) -> dict[str, Any]:
        parts = Parts("health")
        system = await asyncio.to_thread(_system, self.state_dir, parts)
        own = await parts.aget("counters", self.counters) or {}
        snap = {
            "ts": round(time.time(), 3),
            "uptime_s": round(time.monotonic() - self.started),
            "version": __version__,
            **system,
            **own,
        }
        if parts.unavailable:
            snap["unavailable"] = parts.unavailable
        return snap

    @staticmethod
    def notable(snap: dict[str, Any]) -> tuple[Any, ...]:
        spend = snap.get("spend") or {}
        level = 0
        for cap, used in (
            (spend.get("daily_cap_usd"), spend.get("today_usd")),
            (spend.get("monthly_cap_usd"), spend.get("month_usd")),
        ):
            if cap and used is not None:
                share = used / cap
                level = max(level, 100 if share >= 1 else 80 if share >= 0.8 else 0)
        disk = snap.get("disk_free_mb")
        temp = snap.get("temp_c")
        return (
            tuple(sorted((n, p["state"]) for n, p in (snap.get("providers") or {}).items())),
            level,
            disk is not None and disk < DISK_LOW_MB,
            temp is not None and temp >= TEMP_HIGH_C,
            (snap.get("update") or {}).get("state"),
        )
