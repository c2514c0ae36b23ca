"""The dashboard: the box at a glance, refreshed live from the daemon's `status`."""

from __future__ import annotations

import time
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer, Static

from agentbox.console.panel import PanelScreen, ago, money
from agentbox.routing.scoreboard import table

SCORE_ROWS = 4  # the busiest provider/models; `agentbox status` lists them all


class Dashboard(PanelScreen, inherit_bindings=False):
    NAME = "dashboard"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("k", "app.switch_screen('keys')", "Keys"),
        Binding("b", "app.switch_screen('budget')", "Budget"),
        Binding("m", "app.switch_screen('broker')", "Broker"),
        Binding("t", "app.switch_screen('tasks')", "Tasks"),
        Binding("n", "app.switch_screen('welcome')", "Network"),
    ]
    greeted = False

    def compose(self) -> ComposeResult:
        yield Static("agentbox", classes="title", id="title")
        yield Static("connecting to the daemon...", id="daemon")
        yield Static("", id="providers")
        yield Static("", id="queue")
        yield Static("", id="spend")
        yield Static("", id="scoreboard")
        yield Static("", id="local")
        yield Static("", id="mqtt")
        yield Static("", id="network")
        yield Static("", id="errors")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_status()
        self.set_interval(float(getattr(self.app, "refresh_s", 2.0)), self.refresh_status)

    def refresh_status(self) -> None:
        if self.app.screen is self or not self.greeted:
            self.ask("status", lambda r: self.show(r["status"]), "DOWN", exclusive=True)

    def say(self, text: str) -> None:  # only failures are said here: the daemon is down
        self.query_one("#daemon", Static).update(f"Daemon    {text}\n          retrying...")

    def show(self, s: dict[str, Any]) -> None:
        missing = s.get("unavailable") or {}

        def part(name: str, label: str) -> Any:
            value = s.get(name)
            if value is None and name in missing:
                self.query_one(f"#{name}", Static).update(
                    f"{label:<9} unavailable: {missing[name]}"
                )
            return value

        self.query_one("#title", Static).update(
            f"agentbox {s['version']}  {s['name']}  ({s['device_id']})"
        )
        rss = f", {s['rss_mb']:.0f} MB" if s.get("rss_mb") is not None else ""
        self.query_one("#daemon", Static).update(
            f"Daemon    running, up {int(s['uptime_s'])} s{rss}"
        )
        providers = part("providers", "Providers")
        if providers is not None:
            lines = [
                f"  {n:<12} {p['kind']:<10} {p['state']:<16} {'key ' + (p['key'] or 'MISSING')}"
                for n, p in providers.items()
            ] or ["  none configured: press k"]
            self.query_one("#providers", Static).update("Providers\n" + "\n".join(lines))
        queue = part("queue", "Tasks")
        if queue is not None:
            queued = sum(c.get("queued", 0) for c in queue.values())
            running = sum(c.get("running", 0) for c in queue.values())
            self.query_one("#queue", Static).update(
                f"Tasks     {queued} queued, {running} running, {s['finished']} finished"
            )
        spend = part("spend", "Spend")
        if spend is not None:
            self.query_one("#spend", Static).update(money(spend))
        board = part("scoreboard", "Scores")
        if board is not None:
            self.query_one("#scoreboard", Static).update(_scores(board))
        local = part("local", "Local")
        if local is not None:
            speed = f", {local['tokens_per_s']} tokens/s" if local.get("tokens_per_s") else ""
            model = local.get("model") or "bundled model"
            state = "loaded" if local["loaded"] else "idle (loads on first use)"
            self.query_one("#local", Static).update(f"Local     {model}, {state}{speed}")
        mqtt = part("mqtt", "Broker")
        if mqtt is not None:
            self.query_one("#mqtt", Static).update(f"Broker    {_broker(mqtt)}")
        nets = part("network", "Network")
        if nets is not None:
            net = "  ".join(f"{n['name']} {n['addresses'][0]}" for n in nets) or (
                "none: plug in a cable or set up Wi-Fi, then keys can be tested"
            )
            self.query_one("#network", Static).update(f"Network   {net}")
        self.query_one("#errors", Static).update(_errors(s.get("errors") or []))
        if not self.greeted and providers is not None:
            self.greeted = True
            if not any(p["key"] for p in providers.values()) and self.app.screen is self:
                # First boot: nothing can reach a cloud model yet; walk the owner through it.
                self.app.start_setup()  # type: ignore[attr-defined]


def _scores(board: dict[str, Any]) -> str:
    """The last hour's scoreboard (the last day's when the hour had no calls)."""
    busiest = sorted(board["rows"], key=lambda r: -r["last_day"]["calls"])[:SCORE_ROWS]
    shown = {**board, "rows": busiest}
    lines = table(shown, "last_hour") or table(shown, "last_day")
    return "\n".join(lines) if lines else "Scores    no provider calls in the last day"


def _broker(mqtt: dict[str, Any]) -> str:
    if not mqtt.get("enabled"):
        return "off"
    state = "connected" if mqtt.get("connected") else "NOT connected"
    return f"{state} to {mqtt.get('broker')}"


def _errors(errors: list[dict[str, Any]]) -> str:
    """The last three warnings or errors, newest last, one line each."""
    if not errors:
        return "Problems  none"
    now = time.time()
    lines = [f"  {ago(now - e['ts']):>4} {e['message']}"[:76] for e in errors[-3:]]
    return "Problems  (most recent last)\n" + "\n".join(lines)
