"""Budget and routing: caps and mode, applied by the daemon at once."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Button, Footer, Input, Label, Select, Static

from agentbox.console.panel import PanelScreen

MODES = [
    ("cost: local first", "cost"),
    ("balanced", "balanced"),
    ("quality: cloud unless light", "quality"),
]
FIELDS = (("daily_usd", "Per day"), ("monthly_usd", "Per month"), ("per_task_usd", "Per task"))


class Budget(PanelScreen):
    NAME = "budget"

    def compose(self) -> ComposeResult:
        yield Static("Budget and routing  (USD; takes effect at once)", classes="title")
        yield Static("", id="step", classes="step")
        for field, label in FIELDS:
            with Horizontal(classes="row"):
                yield Label(f"{label:<10}", classes="label")
                yield Input(id=field, type="number", classes="money")
        with Horizontal(classes="row"):
            yield Label("Routing   ", classes="label")
            yield Select(MODES, id="mode", allow_blank=False, value="balanced")
        with Horizontal(classes="buttons"):
            yield Button("Save", id="save-budget")
            yield Button("Next", id="next")
        yield Static("", id="result")
        yield Footer()

    def resumed(self) -> None:
        self.ask("settings", lambda r: self.fill(r["settings"]), "Daemon unreachable")

    def fill(self, settings: dict[str, Any]) -> None:
        for field, value in settings["budget"].items():
            self.query_one(f"#{field}", Input).value = f"{value:g}"
        self.query_one("#mode", Select).value = settings["routing"]["mode"]

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "next":
            self.advance()
            return
        budget = {f: self.query_one(f"#{f}", Input).value.strip() for f, _ in FIELDS}
        empty = [f for f, v in budget.items() if not v]
        if empty:
            self.say(f"Enter a value for {empty[0].replace('_usd', '')}.")
            return
        changes = {"budget": budget, "routing": {"mode": self.query_one("#mode", Select).value}}
        self.ask("settings_set", self.saved, "Not saved", changes=changes)

    def saved(self, _: dict[str, Any]) -> None:
        self.say("Saved; the daemon uses the new limits now.")
        self.advance()
