"""The MQTT broker: where this box reports and takes tasks; test, then save (applied at once)."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Button, Checkbox, Footer, Input, Label, Static

from agentbox.console.look import BoxCheckbox
from agentbox.console.panel import PanelScreen

TEXT_FIELDS = ("host", "port", "username", "ca_file", "cert_file", "key_file")


class Broker(PanelScreen):
    NAME = "broker"

    def compose(self) -> ComposeResult:
        yield Static("MQTT broker  (for remote tasks and fleet health)", classes="title")
        yield Static("", id="step", classes="step")
        with Horizontal(classes="row"):
            yield BoxCheckbox("MQTT", id="enabled", value=True, classes="lead")
            yield Label("Host", classes="short")
            yield Input(id="host", placeholder="broker.example.org", classes="wide")
            yield Label("Port", classes="short")
            yield Input(id="port", type="integer", classes="port")
        with Horizontal(classes="row"):
            yield Label("Login", classes="lead label")
            yield Label("User", classes="short")
            yield Input(id="username", placeholder="(none)", classes="half")
            yield Label("Pass", classes="short")
            yield Input(id="password", password=True, classes="half")
        with Horizontal(classes="row"):
            yield BoxCheckbox("TLS", id="tls", classes="lead")
            yield Label("CA", classes="short")
            yield Input(id="ca_file", placeholder="/etc/agentbox/ca.crt (system CAs if empty)")
        with Horizontal(classes="row"):
            yield Label("Client TLS", classes="lead label")
            yield Label("Cert", classes="short")
            yield Input(id="cert_file", placeholder="(optional)", classes="half")
            yield Label("Key", classes="short")
            yield Input(id="key_file", placeholder="(optional)", classes="half")
        with Horizontal(classes="buttons"):
            yield Button("Test connection", id="test-broker")
            yield Button("Save", id="save-broker")
            yield Button("Skip", id="next")
        yield Static("", id="result")
        yield Footer()

    def resumed(self) -> None:
        self.ask("broker", self.fill, "Daemon unreachable")

    def fill(self, reply: dict[str, Any]) -> None:
        mqtt = reply["mqtt"]
        for field in TEXT_FIELDS:
            self.query_one(f"#{field}", Input).value = str(mqtt[field])
        self.query_one("#enabled", Checkbox).value = mqtt["enabled"]
        self.query_one("#tls", Checkbox).value = mqtt["tls"]
        for box in self.query(Checkbox).results(Checkbox):
            _spell(box)
        password = self.query_one("#password", Input)
        password.value = ""
        password.placeholder = "(stored)" if reply["password_set"] else "(none)"
        if not mqtt["enabled"]:
            state = "MQTT is off."
        elif reply["connected"]:
            state = f"Connected to {mqtt['host']}:{mqtt['port']}."
        else:
            state = reply["error"] or "Not connected yet."
        self.say(state)

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        _spell(event.checkbox)

    def form(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            f: self.query_one(f"#{f}", Input).value.strip() for f in TEXT_FIELDS
        }
        values["enabled"] = self.query_one("#enabled", Checkbox).value
        values["tls"] = self.query_one("#tls", Checkbox).value
        return values

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "next":
            self.advance()
            return
        values = self.form()
        if not values["host"] or not values["port"]:
            self.say("Enter the broker's host and port.")
            return
        password = self.query_one("#password", Input).value
        if event.button.id == "test-broker":
            self.say(f"Connecting to {values['host']}:{values['port']}...")
            self.ask(
                "broker_test",
                lambda r: self.say(f"{'OK' if r['ok'] else 'FAILED'}: {r['message']}"),
                "Could not test",
                mqtt=values,
                password=password,
            )
        else:
            self.ask("broker_set", self.saved, "Not saved", mqtt=values, password=password)

    def saved(self, _: dict[str, Any]) -> None:
        self.query_one("#password", Input).value = ""
        self.say("Saved; the daemon connects with the new settings now.")
        self.advance()


def _spell(box: Checkbox) -> None:
    """On a 16-colour console the tick's colour alone is hard to read: say on or off."""
    name = "MQTT" if box.id == "enabled" else "TLS"
    box.label = f"{name} {'on' if box.value else 'off'}"
