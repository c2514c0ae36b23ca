"""One box in full, as text for the live view's detail screen (and anything else that wants it)."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from agentbox.fleet import text
from agentbox.fleet.alerts import clock
from agentbox.fleet.model import Box, as_dict

# The scoreboard's figures in the order a reader compares providers; others follow.
SCORE_FIRST = ("calls", "failures", "p50_ms", "p95_ms", "tokens_in", "tokens_out", "cost_usd")


def describe(box: Box, now: float) -> Text:
    v = box.view(now)
    out = Text(no_wrap=False)
    out.append(f"{v['name'] or '-'} ({box.device_id})", style="bold")
    out.append(f"  {v['state']}, version {v['version'] or '-'}, {v['hardware'] or '-'}\n")
    out.append(
        f"seen {text.seen(v['last_seen'])}, up {text.cell(v['uptime_s'])} s, "
        f"session {text.cell(v['session'])}\n"
    )
    out.append(
        f"cpu {text.cell(v['cpu_percent'])} %, mem {text.cell(v['mem_percent'])} %, "
        f"temp {text.cell(v['temp_c'])} °C, disk free {text.disk(v['disk_free_mb'])}\n"
        f"queue {text.pair(v['queued'], v['running'])} (queued/running), last hour "
        f"{text.pair(v['succeeded_1h'], v['failed_1h'])} (ok/failed)\n"
        f"spend today ${text.money(v['today_usd'], v['daily_cap_usd'])}, month "
        f"${text.money(v['month_usd'], v['monthly_cap_usd'])}\n"
    )
    out.append("\nProviders\n", style="bold")
    out.append(_providers(box) or "  (none configured)\n")
    out.append("\nAlerts\n", style="bold")
    out.append("".join(f"  {a.severity:<8} {a.code}: {a.text}\n" for a in box.alerts) or "  none\n")
    if box.history:
        out.append("\nRecent alerts\n", style="bold")
        for at, a in reversed(box.history):
            out.append(f"  {clock(at)} {a.code}: {a.text}\n")
    board = box.health.get("scoreboard")
    if board:
        out.append("\nScoreboard\n", style="bold")
        out.append(scoreboard(board))
    out.append("\nEsc: back to the fleet\n")
    return out


def _providers(box: Box) -> str:
    configured = as_dict(box.info.get("providers"))
    health = as_dict(box.health.get("providers"))
    lines = []
    for name in sorted(set(configured) | set(health)):
        conf, state = as_dict(configured.get(name)), as_dict(health.get(name))
        wait = state.get("retry_in_s")
        lines.append(
            f"  {name:<12} {conf.get('kind') or '-':<10} {str(conf.get('model') or '-')[:24]:<24}"
            f" {state.get('state') or '-'}{f', retry in {wait} s' if wait else ''}\n"
        )
    local = box.health.get("local")
    if isinstance(local, dict):
        loaded = "loaded" if local.get("loaded") else "not loaded"
        error = f", failed: {local['load_error']}" if local.get("load_error") else ""
        lines.append(f"  {'local':<12} {'llama.cpp':<10} {str(local.get('model') or '-')[:24]:<24}")
        lines.append(f" {loaded}{error}\n")
    return "".join(lines)


def _rows(node: Any, label: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Flatten a scoreboard into labelled rows of figures, whatever its nesting."""
    if isinstance(node, list):
        rows = []
        for item in node:
            if isinstance(item, dict):
                name = " ".join(
                    str(item[k]) for k in ("provider", "model", "window") if item.get(k)
                )
                rows += _rows(item, f"{label} {name}".strip())
        return rows
    if not isinstance(node, dict):
        return []
    figures = {k: v for k, v in node.items() if isinstance(v, int | float | str)}
    rows = [(label, figures)] if any(isinstance(v, int | float) for v in figures.values()) else []
    for key, value in node.items():
        if isinstance(value, dict | list):
            rows += _rows(value, f"{label} {key}".strip())
    return rows


def scoreboard(board: Any) -> str:
    """The box's provider scoreboard as a small table; the fields it has decide the columns."""
    rows = [(label, f) for label, f in _rows(board) if label]
    if not rows:
        return "  (empty)\n"
    names = [k for k in SCORE_FIRST if any(k in f for _, f in rows)]
    names += sorted({k for _, f in rows for k in f} - set(names) - {"provider", "model", "window"})
    width = max(len(label) for label, _ in rows)
    head = "  " + " " * width + "".join(f" {n[:10]:>10}" for n in names)
    lines = [head]
    for label, f in rows:
        lines.append("  " + f"{label:<{width}}" + "".join(f" {_fig(f.get(n)):>10}" for n in names))
    return "\n".join(lines) + "\n"


def _fig(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return text.cell(value)[:10]
