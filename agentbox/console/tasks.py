"""Recent tasks with their route and cost; the highlighted one's outcome below the table."""

from __future__ import annotations

import time
from typing import Any

from textual.app import ComposeResult
from textual.widgets import DataTable, Footer, Static

from agentbox.console.panel import PanelScreen, ago, fill_table

SHOWN = 30


def _route(task: dict[str, Any]) -> str:
    route = task.get("route") or {}
    where = "/".join(str(route[k]) for k in ("provider", "model") if route.get(k))
    return where[:24] or "-"


class Tasks(PanelScreen):
    NAME = "tasks"
    rows: dict[str, dict[str, Any]]

    def compose(self) -> ComposeResult:
        yield Static("Recent tasks  (newest first; Up/Down shows one's outcome)", classes="title")
        yield DataTable(id="tasks-table", cursor_type="row")
        yield Static("", id="result")
        yield Footer()

    def on_mount(self) -> None:
        self.rows = {}
        self.set_interval(float(getattr(self.app, "refresh_s", 2.0)), self.load)

    def resumed(self) -> None:
        self.load()

    def load(self) -> None:
        if self.app.screen is self:
            self.ask("list", self.fill, "Daemon unreachable", exclusive=True, limit=SHOWN)

    def fill(self, reply: dict[str, Any]) -> None:
        self.rows = {t["id"]: t for t in reply["tasks"]}
        cells = {}
        for t in reply["tasks"]:
            cost = (t.get("usage") or {}).get("cost_usd")
            cells[t["id"]] = [
                t["id"][:16],
                t["state"],
                _route(t),
                "-" if cost is None else f"${cost:.4f}",
                ago(time.time() - t["created_at"]),
            ]
        fill_table(self.query_one(DataTable), ("id", "state", "route", "cost", "age"), cells)
        if not self.rows:
            self.say('No tasks yet. Submit one with: agentbox submit --wait "Hello"')

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        task = self.rows.get(str(event.row_key.value))
        if task is None:
            return
        reason = (task.get("route") or {}).get("reason", "")
        if task.get("error"):
            outcome = f"{task['error']['code']}: {task['error']['message']}"
        else:
            outcome = (task.get("output") or "").replace("\n", " ")
        self.say(f"{task['id']}  {reason}\n{outcome[:150]}")
