"""Network status, and the first page of the setup flow on a box without any key."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Button, Footer, Static

from agentbox.console.panel import PanelScreen

INTRO = (
    "This box runs AI tasks around the clock. To reach the big cloud models it\n"
    "needs an API key. The next steps set the key, a spending limit and, if you\n"
    "want, an MQTT broker. Tab moves, Enter presses a button, Esc leaves setup."
)
RECHECK_S = 10.0  # a cable plugged in meanwhile shows up without a key press


class Welcome(PanelScreen):
    NAME = "welcome"

    def compose(self) -> ComposeResult:
        yield Static("Network", classes="title", id="welcome-title")
        yield Static("", id="step", classes="step")
        yield Static(INTRO, id="intro")
        yield Static("Checking the network...", id="interfaces")
        yield Static("", id="internet")
        with Horizontal(classes="buttons"):
            yield Button("Next", id="next")
            yield Button("Check again", id="recheck")
        yield Static("", id="result")
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(RECHECK_S, self.check)

    def resumed(self) -> None:
        self.query_one("#intro").display = self.in_setup
        self.query_one("#welcome-title", Static).update(
            "Welcome to agentbox" if self.in_setup else "Network"
        )
        if self.in_setup:
            self.query_one("#next", Button).focus()
        self.check()

    def check(self) -> None:
        if self.app.screen is self:
            self.ask("network", self.show, "Daemon unreachable", exclusive=True)

    def show(self, reply: dict[str, Any]) -> None:
        nets = reply["interfaces"]
        if nets is None:
            lines = [f"  unknown: {(reply.get('unavailable') or {}).get('interfaces', '')}"]
        else:
            lines = [f"  {n['name']:<10} {'  '.join(n['addresses'][:3])}" for n in nets] or [
                "  none up"
            ]
        self.query_one("#interfaces", Static).update("Interfaces\n" + "\n".join(lines))
        net = reply["internet"]
        if net["ok"]:
            text = f"Internet  reachable ({net['target']})"
        else:
            text = f"Internet  NOT reachable: {net['message']}\n  Hint: {net['hint']}"
        self.query_one("#internet", Static).update(text)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "next":
            self.advance()
        else:
            self.query_one("#internet", Static).update("Internet  checking...")
            self.check()
