"""API keys: providers and their state; add a provider, test, save, replace or delete a key.

A key is typed into a masked field, tested with the provider's model listing, and saved only
after a passing test (or "Save anyway" on an offline box); it is never shown again.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Button, DataTable, Footer, Input, Label, Select, Static

from agentbox.console.panel import PanelScreen, fill_table


class Keys(PanelScreen):
    NAME = "keys"
    armed: str | None = None  # the provider whose key the next Delete press removes

    def compose(self) -> ComposeResult:
        yield Static(
            "API keys  (a key is never shown again: only its last four characters)", classes="title"
        )
        yield Static("", id="step", classes="step")
        yield DataTable(id="keys-table", cursor_type="row", zebra_stripes=False)
        yield Label("New key for the selected provider (paste or type):")
        yield Input(password=True, id="key", placeholder="the API key")
        with Horizontal(classes="buttons"):
            yield Button("Test", id="test")
            yield Button("Save", id="save", disabled=True)
            yield Button("Save anyway", id="force")
            yield Button("Delete", id="delete")
            yield Button("Next", id="next")
        # After the key's own path (table, key, Test, Save), so Tab order stays the same.
        with Horizontal(id="add-row"):
            yield Select[str]([], id="addable", prompt="Add a provider")
            yield Button("Add", id="add")
        yield Static("", id="result")
        yield Footer()

    def resumed(self) -> None:
        self.load()

    def load(self) -> None:
        self.ask("keys", self.fill, "Daemon unreachable", exclusive=True)

    def fill(self, reply: dict[str, Any]) -> None:
        providers = reply["providers"]
        cells = {
            p["name"]: [
                p["name"],
                p["kind"],
                f"{p['key']} ...{p['last4']}" if p["last4"] else (p["key"] or "missing"),
                p["state"],
            ]
            for p in providers
        }
        fill_table(self.query_one(DataTable), ("provider", "kind", "key", "state"), cells)
        addable = reply.get("addable", [])
        self.query_one("#addable", Select).set_options([(n, n) for n in addable])
        self.query_one("#add-row").display = bool(addable)
        if not providers:
            self.say("No provider yet: choose one under 'Add a provider' and press Add.")
            self.query_one("#addable", Select).focus()

    def selected(self) -> str | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def on_input_changed(self, event: Input.Changed) -> None:
        self.query_one("#save", Button).disabled = True  # a changed key must be tested again

    def on_button_pressed(self, event: Button.Pressed) -> None:
        button = event.button.id
        if button != "delete":
            self.armed = None
        if button == "next":
            self.advance()
            return
        if button == "add":
            choice = self.query_one("#addable", Select).value
            if isinstance(choice, str):
                self.add(choice)
            else:
                self.say("Choose a provider to add first.")
            return
        name, key = self.selected(), self.query_one("#key", Input).value.strip()
        if name is None:
            self.say("Select a provider first.")
        elif button == "delete":
            self.delete(name)
        elif not key:
            self.say("Type or paste a key first.")
        elif button == "test":
            self.say(f"Testing the key with {name}...")
            self.test(name, key)
        else:
            self.save(name, key)

    def add(self, name: str) -> None:
        def added(_: dict[str, Any]) -> None:
            self.say(f"Added {name}; now enter its key.")
            self.load()
            self.query_one("#key", Input).focus()

        self.ask("provider_add", added, "Not added", name=name)

    def test(self, name: str, key: str) -> None:
        self.ask(
            "key_test",
            lambda r: self.tested(r["ok"], r["message"]),
            "Could not test",
            name=name,
            key=key,
        )

    def tested(self, ok: bool, message: str) -> None:
        self.query_one("#save", Button).disabled = not ok
        hint = "Press Save." if ok else "Check the key, or Save anyway if the box is offline."
        self.say(f"{'OK' if ok else 'FAILED'}: {message}\n{hint}")

    def save(self, name: str, key: str) -> None:
        self.ask(
            "key_set", lambda r: self.saved(name, r.get("last4")), "Not saved", name=name, key=key
        )

    def saved(self, name: str, last4: str | None) -> None:
        self.query_one("#key", Input).value = ""
        self.query_one("#save", Button).disabled = True
        self.say(f"Saved the key for {name} (...{last4 or '????'}); the daemon reloaded it.")
        self.load()
        self.advance()

    def delete(self, name: str) -> None:
        if self.armed != name:  # a key is gone for good: ask once more
            self.armed = name
            self.say(f"Press Delete again to remove the stored key for {name}.")
            return
        self.armed = None
        self.ask("key_delete", lambda r: self.deleted(name, r), "Not deleted", name=name)

    def deleted(self, name: str, reply: dict[str, Any]) -> None:
        text = (
            f"Deleted the stored key for {name}."
            if reply["deleted"]
            else (f"{name} had no key in the key store.")
        )
        if reply.get("still_from"):
            text += f" A key still comes from {reply['still_from']}: remove it there."
        self.say(text)
        self.load()
