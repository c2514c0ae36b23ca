"""What the broker has told the monitor about each box, kept up to date one message at a time.

A message touches only its own box (decode, keep, work out that box's health alerts) and marks
it dirty; `sweep()` re-checks the clock-bound alerts of every box, and the views take the dirty
boxes only, so the cost per message stays the same at 5,000 boxes as at 5.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from agentbox.fleet import alerts
from agentbox.fleet.alerts import Alert
from agentbox.settings import FleetConfig

KINDS = ("status", "info", "health")
HISTORY = 20  # alerts remembered per box for the detail view


@dataclass(slots=True)
class Box:
    device_id: str
    first_seen: float  # this monitor's clock, as are the next two
    status: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    health: dict[str, Any] = field(default_factory=dict)
    seen: float = 0.0  # last message of any kind
    health_at: float = 0.0  # last health report; 0 before the first
    status_at: float = 0.0
    from_health: list[Alert] = field(default_factory=list)  # worked out when health arrives
    alerts: list[Alert] = field(default_factory=list)  # all active ones, as of the last sweep
    history: deque[tuple[float, Alert]] = field(default_factory=lambda: deque(maxlen=HISTORY))

    @property
    def state(self) -> str:
        state = self.status.get("state")
        return state if isinstance(state, str) else "unknown"

    @property
    def version(self) -> str | None:
        v = self.info.get("version") or self.health.get("version")
        return v if isinstance(v, str) else None

    def interval_s(self, conf: FleetConfig) -> float:
        """How often this box sends health: it says so; older boxes get [fleet]'s figure."""
        said = self.health.get("health_interval_s")
        if isinstance(said, int | float) and not isinstance(said, bool) and said > 0:
            return float(said)
        return float(conf.health_interval_s)

    def view(self, now: float) -> dict[str, Any]:
        """One box as the fleet sees it; fields it has not reported are null."""
        h = self.health
        spend = as_dict(h.get("spend"))
        queue = as_dict(as_dict(h.get("queue")).get("total"))
        tasks = as_dict(h.get("tasks"))
        providers = as_dict(h.get("providers"))
        ts = h.get("ts")
        return {
            "device_id": self.device_id,
            "name": self.info.get("name"),
            "state": self.state,
            "session": self.status.get("session"),
            "version": self.version,
            "hardware": self.info.get("hardware"),
            "uptime_s": h.get("uptime_s"),
            "cpu_percent": h.get("cpu_percent"),
            "mem_percent": h.get("mem_percent"),
            "disk_free_mb": h.get("disk_free_mb"),
            "temp_c": h.get("temp_c"),
            "queued": queue.get("queued"),
            "running": queue.get("running"),
            "succeeded_1h": tasks.get("succeeded_1h"),
            "failed_1h": tasks.get("failed_1h"),
            "today_usd": spend.get("today_usd"),
            "daily_cap_usd": spend.get("daily_cap_usd"),
            "month_usd": spend.get("month_usd"),
            "monthly_cap_usd": spend.get("monthly_cap_usd"),
            "problems": sorted(
                f"{n}: {as_dict(p).get('state')}"
                for n, p in providers.items()
                if as_dict(p).get("state") != "ok"
            ),
            "alerts": [a.to_dict() for a in self.alerts],
            "health_interval_s": h.get("health_interval_s"),
            # The box's provider scoreboard as it sent it (README, Provider scoreboard).
            "scoreboard": h.get("scoreboard") if isinstance(h.get("scoreboard"), dict) else None,
            "health_age_s": round(now - ts, 1) if isinstance(ts, int | float) else None,
            "seen_s_ago": round(now - self.seen, 1) if self.seen else None,
            "last_seen": round(self.seen, 3) if self.seen else None,
        }


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class Fleet:
    """Every box heard of on one broker prefix, by device id."""

    def __init__(self, prefix: str, conf: FleetConfig | None = None, now: float | None = None):
        self.prefix = prefix.rstrip("/")
        self.conf = conf or FleetConfig()
        self.started = time.time() if now is None else now
        self.boxes: dict[str, Box] = {}
        self.dirty: set[str] = set()
        self.versions: Counter[str] = Counter()
        self.messages = 0
        # Held around every change and every read that spans boxes when a feed thread is
        # taking messages (the live view); cheap when nothing else holds it.
        self.lock = threading.RLock()

    def subscriptions(self) -> list[str]:
        return [f"{self.prefix}/+/{kind}" for kind in KINDS]

    def take(self, topic: str, payload: bytes, now: float | None = None) -> bool:
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
        now = time.time() if now is None else now
        box = self.boxes.get(device)
        if box is None:
            box = self.boxes[device] = Box(device, first_seen=now)
        before = box.version
        if kind == "status":
            box.status, box.status_at = body, now
        elif kind == "info":
            box.info = body
        else:
            box.health, box.health_at = body, now
            box.from_health = alerts.from_health(device, body, self.conf)
        if box.version != before:
            if before:
                self.versions[before] -= 1
                if self.versions[before] <= 0:
                    del self.versions[before]
            if box.version:
                self.versions[box.version] += 1
        box.seen = now
        self.messages += 1
        self.dirty.add(device)
        self._settle(box, now, self.majority())
        return True

    def majority(self) -> str | None:
        """The version most boxes run; None on a tie or with no versions known."""
        top = self.versions.most_common(2)
        if not top or (len(top) == 2 and top[0][1] == top[1][1]):
            return None
        return top[0][0]

    def sweep(self, now: float | None = None) -> None:
        """Re-check what the clock and the other boxes decide (offline, stopped, version)."""
        now = time.time() if now is None else now
        majority = self.majority()
        for box in self.boxes.values():
            self._settle(box, now, majority)

    def _settle(self, box: Box, now: float, majority: str | None) -> None:
        """Work out the box's alerts; a change marks it dirty and new ones go to its history."""
        ts = box.status.get("ts")
        since = ts if isinstance(ts, int | float) and not isinstance(ts, bool) else None
        listened = box.health_at or max(self.started, box.first_seen)
        found = alerts.timed(
            box.device_id,
            box.state,
            now=now,
            since=since,
            heard=listened,
            interval_s=box.interval_s(self.conf),
            conf=self.conf,
        )
        # A box that is gone reports nothing current: its last health proves nothing now.
        active = [found] if found else list(box.from_health)
        drift = alerts.version(box.device_id, box.version, majority)
        if drift:
            active.append(drift)
        active.sort(key=lambda a: -alerts.RANK[a.severity])  # the worst first, for the row
        if active != box.alerts:
            old = {a.code for a in box.alerts}
            box.history.extend((now, a) for a in active if a.code not in old)
            box.alerts = active
            self.dirty.add(box.device_id)

    def pop_dirty(self) -> set[str]:
        """The boxes changed since the last call."""
        dirty, self.dirty = self.dirty, set()
        return dirty

    def alerts(self) -> list[Alert]:
        """Every active alert, worst first, then by box."""
        found = [a for box in self.boxes.values() for a in box.alerts]
        return sorted(found, key=lambda a: (-alerts.RANK[a.severity], a.device_id, a.code))

    def views(self, now: float | None = None) -> list[dict[str, Any]]:
        now = time.time() if now is None else now
        return [self.boxes[d].view(now) for d in sorted(self.boxes)]

    def document(self, now: float | None = None) -> dict[str, Any]:
        """The `--json` document: every box, every alert, and counts by state and severity."""
        now = time.time() if now is None else now
        active = self.alerts()
        return {
            "ts": round(now, 3),
            "prefix": self.prefix,
            "boxes": self.views(now),
            "alerts": [a.to_dict() for a in active],
            "counts": {
                "boxes": len(self.boxes),
                "states": dict(Counter(b.state for b in self.boxes.values())),
                "alerts": {s: sum(a.severity == s for a in active) for s in alerts.SEVERITIES},
            },
            "majority_version": self.majority(),
        }
