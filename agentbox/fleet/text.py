"""The fleet as plain text (a pipe, a log, cron's mail), and the cell formats the view shares."""

from __future__ import annotations

from typing import Any

from agentbox.fleet.alerts import Alert, clock


def cell(value: Any, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def pair(a: Any, b: Any) -> str:
    return f"{cell(a)}/{cell(b)}"


def money(used: Any, cap: Any) -> str:
    """Spend against a cap: 1.60/2 (dollars)."""
    return f"{cell(used, '{:.2f}')}/{cell(cap, '{:g}')}"


def disk(mb: Any) -> str:
    if not isinstance(mb, int | float):
        return "-"
    if mb >= 10240:
        return f"{mb / 1024:.0f}G"
    return f"{mb / 1024:.1f}G" if mb >= 1024 else f"{mb:.0f}M"


def summary(alerts: list[dict[str, Any]]) -> str:
    """A row's alerts in a few characters: the worst one's code, and how many more."""
    if not alerts:
        return "-"
    more = f"+{len(alerts) - 1}" if len(alerts) > 1 else ""
    return f"{alerts[0]['code']}{more}"


def table(views: list[dict[str, Any]]) -> str:
    """A fixed-width table, one box per line (fits 100 columns)."""
    head = f"{'device':<18} {'name':<14} {'state':<8} {'cpu':>4} {'mem':>4} {'queue':>7} "
    head += f"{'today':>10}  alerts"
    lines = [head]
    for v in views:
        lines.append(
            f"{v['device_id'][:18]:<18} {(v['name'] or '-')[:14]:<14} {v['state']:<8} "
            f"{cell(v['cpu_percent'], '{:.0f}%'):>4} {cell(v['mem_percent'], '{:.0f}%'):>4} "
            f"{pair(v['queued'], v['running']):>7} {money(v['today_usd'], v['daily_cap_usd']):>10}"
            f"  {' '.join(a['code'] for a in v['alerts']) or '-'}"
        )
    if not views:
        lines.append("(no box has reported on this broker yet)")
    return "\n".join(lines)


def alert_lines(active: list[Alert]) -> str:
    """One line per alert, worst first: what a cron mail should say."""
    if not active:
        return "no alerts"
    return "\n".join(f"{a.severity:<8} {a.device_id}: {a.code}: {a.text}" for a in active)


def seen(ts: Any) -> str:
    return clock(ts) if isinstance(ts, int | float) else "-"
