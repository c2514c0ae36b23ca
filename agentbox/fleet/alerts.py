"""Fleet alerts: what in a box's reports an operator should act on, with thresholds from [fleet].

Alerts that follow from one payload (`from_health`) are worked out when it arrives; the ones that
depend on the clock or on the other boxes (`timed`) on every sweep, which is cheap for many boxes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from agentbox.settings import FleetConfig

SEVERITIES = ("info", "warning", "critical")
RANK = {s: i for i, s in enumerate(SEVERITIES)}

# Every code an alert can have, with its severity: the README's table is made from this.
CODES = {
    "offline": "critical",  # the broker published the will, or health stopped coming
    "stopped": "warning",  # stopped cleanly and not back after [fleet] stopped_after_s
    "temp_high": "warning",
    "disk_low": "warning",
    "mem_high": "warning",
    "budget_80": "warning",  # today's or this month's spend at budget_warn_percent of the cap
    "budget_100": "critical",  # at the cap: cloud tasks are refused
    "provider_auth": "critical",  # a provider refuses the key
    "provider_quota": "critical",  # a provider's quota or credit is used up
    "failure_rate": "warning",  # of the last hour's finished tasks
    "local_model": "warning",  # the local model failed to load
    "version": "info",  # not the version most boxes run
}


@dataclass(frozen=True, slots=True)
class Alert:
    code: str
    severity: str
    device_id: str
    text: str

    def to_dict(self) -> dict[str, str]:
        return {
            "code": self.code,
            "severity": self.severity,
            "device_id": self.device_id,
            "text": self.text,
        }


def at_least(alerts: list[Alert], severity: str) -> list[Alert]:
    """The alerts at or above `severity`."""
    floor = RANK[severity]
    return [a for a in alerts if RANK[a.severity] >= floor]


def _alert(device_id: str, code: str, text: str) -> Alert:
    return Alert(code, CODES[code], device_id, text)


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def from_health(device_id: str, health: dict[str, Any], conf: FleetConfig) -> list[Alert]:
    """The alerts one health report proves on its own."""
    out: list[Alert] = []
    temp = _num(health.get("temp_c"))
    if temp is not None and temp >= conf.temp_c:
        text = f"temperature {temp:.0f} °C (>= {conf.temp_c:g})"
        out.append(_alert(device_id, "temp_high", text))
    disk = _num(health.get("disk_free_mb"))
    if disk is not None and disk < conf.disk_free_mb:
        out.append(_alert(device_id, "disk_low", f"{disk:.0f} MB free (< {conf.disk_free_mb})"))
    mem = _num(health.get("mem_percent"))
    if mem is not None and mem >= conf.mem_percent:
        out.append(_alert(device_id, "mem_high", f"memory {mem:.0f} % used"))
    out += _budget(device_id, health.get("spend"), conf)
    providers = health.get("providers")
    for name, p in sorted(providers.items() if isinstance(providers, dict) else []):
        state = p.get("state") if isinstance(p, dict) else None
        if state == "auth_failed":
            out.append(_alert(device_id, "provider_auth", f"provider {name}: key refused"))
        elif state == "quota_exhausted":
            out.append(_alert(device_id, "provider_quota", f"provider {name}: quota exhausted"))
    out += _failures(device_id, health.get("tasks"), conf)
    local = health.get("local")
    error = local.get("load_error") if isinstance(local, dict) else None
    if error:
        out.append(_alert(device_id, "local_model", f"local model not loading: {str(error)[:80]}"))
    return out


def _budget(device_id: str, spend: Any, conf: FleetConfig) -> list[Alert]:
    if not isinstance(spend, dict):
        return []
    worst: tuple[float, str] = (0.0, "")
    for period, used_key, cap_key in (
        ("today", "today_usd", "daily_cap_usd"),
        ("this month", "month_usd", "monthly_cap_usd"),
    ):
        used, cap = _num(spend.get(used_key)), _num(spend.get(cap_key))
        if used is not None and cap:  # a cap of 0 allows no cloud spend: nothing to warn of
            share = used / cap
            if share > worst[0]:
                worst = (share, f"${used:.2f} of ${cap:.2f} {period}")
    share, text = worst
    if share >= 1:
        return [_alert(device_id, "budget_100", f"budget used up: {text}")]
    if share * 100 >= conf.budget_warn_percent:
        return [_alert(device_id, "budget_80", f"budget at {share:.0%}: {text}")]
    return []


def _failures(device_id: str, tasks: Any, conf: FleetConfig) -> list[Alert]:
    if not isinstance(tasks, dict):
        return []
    ok, failed = _num(tasks.get("succeeded_1h")) or 0, _num(tasks.get("failed_1h")) or 0
    done = ok + failed
    if done >= conf.failure_min_tasks and failed / done > conf.failure_rate:
        text = f"{failed:.0f} of {done:.0f} tasks failed in the last hour"
        return [_alert(device_id, "failure_rate", text)]
    return []


def timed(
    device_id: str,
    state: str,
    *,
    now: float,
    since: float | None,
    heard: float,
    interval_s: float,
    conf: FleetConfig,
) -> Alert | None:
    """Offline, or stopped too long: from the status (sent at `since`) and the health's silence.

    `heard` is when the last health came, or when this monitor began listening to the box. The
    texts name times, not ages, so that an alert stays the same from one sweep to the next.
    """
    if state == "offline":
        return _alert(device_id, "offline", "offline: the broker published its will")
    if state == "stopped":
        if since is None or now - since >= conf.stopped_after_s:
            at = "" if since is None else f" since {clock(since)}"
            return _alert(device_id, "stopped", f"stopped{at}")
        return None
    if now - heard > conf.stale_intervals * interval_s:
        text = f"no health since {clock(heard)} (sent every {interval_s:g} s)"
        return _alert(device_id, "offline", text)
    return None


def version(device_id: str, have: str | None, majority: str | None) -> Alert | None:
    if have and majority and have != majority:
        return _alert(device_id, "version", f"version {have}; most boxes run {majority}")
    return None


def clock(ts: float) -> str:
    """A time of day on this machine's clock, as alerts and the views show it."""
    return time.strftime("%H:%M:%S", time.localtime(ts))
