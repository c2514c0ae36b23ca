"""`agentbox console`: the box's front panel on tty1 (80x25, 16 colours, keyboard only).

It reaches the daemon only through the control socket; every call runs in a thread worker so
the keyboard never waits, and a daemon that is down is shown and retried, never fatal.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Input, Label, Select, Static

from agentbox.control import ControlClient, ControlError

CSS = """
Screen { padding: 0 1; }
.title { text-style: bold; padding-bottom: 1; }
#daemon, #providers, #queue, #spend, #local, #mqtt, #network { height: auto; }
#keys-table { height: 5; }
#add-row { height: 3; }
#addable { width: 30; }
#key { margin-top: 1; }
#buttons { height: 3; }
#buttons Button { margin-right: 1; min-width: 12; }
#result { height: auto; }
.row { height: 3; }
.label { width: 12; padding-top: 1; }
.money { width: 16; }
#mode { width: 50; }
"""


class Panel:
    """The console's calls to the daemon (blocking; run them in thread workers)."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        with ControlClient(self.socket_path, timeout=15) as client:
            return client.call(op, **args)


def _money(spend: dict[str, Any]) -> str:
    return (
        f"Spend     today ${spend['today_usd']:.2f} of ${spend['daily_cap_usd']:.2f}"
        f"   month ${spend['month_usd']:.2f} of ${spend['monthly_cap_usd']:.2f}"
    )


class PanelScreen(Screen[None]):
    """A screen that asks the daemon things: every call in a thread worker, then back here."""

    def ask(
        self,
        op: str,
        done: Callable[[dict[str, Any]], None],
        failed: str,
        exclusive: bool = False,
        **args: Any,
    ) -> None:
        panel: Panel = self.app.panel  # type: ignore[attr-defined]

        def job() -> None:
            try:
                reply = panel.call(op, **args)
            except ControlError as exc:
                text = f"{failed}: {exc.message.removeprefix('bad request: ')}"
                self.app.call_from_thread(self.say, text)
                return
            self.app.call_from_thread(done, reply)

        self.run_worker(job, thread=True, group=op, exclusive=exclusive)

    def say(self, text: str) -> None:
        self.query_one("#result", Static).update(text)


class Dashboard(PanelScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("k", "app.switch_screen('keys')", "Keys"),
        Binding("b", "app.switch_screen('budget')", "Budget"),
    ]

    def compose(self) -> ComposeResult:
        yield Static("agentbox", classes="title", id="title")
        yield Static("connecting to the daemon...", id="daemon")
        yield Static("", id="providers")
        yield Static("", id="queue")
        yield Static("", id="spend")
        yield Static("", id="local")
        yield Static("", id="mqtt")
        yield Static("", id="network")
        yield Footer()

    greeted = False

    def on_mount(self) -> None:
        self.refresh_status()
        self.set_interval(self.app_refresh, self.refresh_status)

    @property
    def app_refresh(self) -> float:
        return float(getattr(self.app, "refresh_s", 2.0))

    def refresh_status(self) -> None:
        self.ask("status", lambda r: self.show(r["status"]), "DOWN", exclusive=True)

    def say(self, text: str) -> None:  # only failures are said here: the daemon is down
        self.query_one("#daemon", Static).update(f"Daemon    {text}\n          retrying...")

    def show(self, s: dict[str, Any]) -> None:
        self.query_one("#title", Static).update(
            f"agentbox {s['version']}  {s['name']}  ({s['device_id']})"
        )
        self.query_one("#daemon", Static).update(
            f"Daemon    running, up {int(s['uptime_s'])} s, {s['rss_mb']:.0f} MB"
        )
        lines = [
            f"  {n:<12} {p['kind']:<10} {p['state']:<16} {'key ' + (p['key'] or 'MISSING')}"
            for n, p in s["providers"].items()
        ] or ["  none configured: press k"]
        self.query_one("#providers", Static).update("Providers\n" + "\n".join(lines))
        queued = sum(c.get("queued", 0) for c in s["queue"].values())
        running = sum(c.get("running", 0) for c in s["queue"].values())
        self.query_one("#queue", Static).update(
            f"Tasks     {queued} queued, {running} running, {s['finished']} finished"
        )
        self.query_one("#spend", Static).update(_money(s["spend"]))
        local = s["local"]
        speed = f", {local['tokens_per_s']} tokens/s" if local.get("tokens_per_s") else ""
        self.query_one("#local", Static).update(
            f"Local     {'loaded' if local['loaded'] else 'idle'}{speed}"
        )
        mqtt = s.get("mqtt", {})
        broker = (
            "off"
            if not mqtt.get("enabled")
            else ("connected" if mqtt.get("connected") else "NOT connected")
            + f" to {mqtt.get('broker')}"
        )
        self.query_one("#mqtt", Static).update(f"Broker    {broker}")
        nets = s.get("network") or []
        net = "  ".join(f"{n['name']} {n['addresses'][0]}" for n in nets) or (
            "none: plug in a cable or set up Wi-Fi, then keys can be tested"
        )
        self.query_one("#network", Static).update(f"Network   {net}")
        if not self.greeted:
            self.greeted = True
            no_key = not any(p["key"] for p in s["providers"].values())
            if no_key and self.app.screen is self:
                # First boot: nothing can reach a cloud model yet; start where the owner acts.
                self.app.switch_screen("keys")
                self.app.notify("Welcome! Add a provider and its API key to start.")


class Keys(PanelScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.switch_screen('dashboard')", "Dashboard")
    ]

    def compose(self) -> ComposeResult:
        yield Static(
            "API keys  (a key is never shown again: only its last four characters)", classes="title"
        )
        yield DataTable(id="keys-table", cursor_type="row", zebra_stripes=False)
        yield Label("New key for the selected provider (paste or type):")
        yield Input(password=True, id="key", placeholder="the API key")
        with Horizontal(id="buttons"):
            yield Button("Test", id="test")
            yield Button("Save", id="save", disabled=True)
            yield Button("Save anyway", id="force")
        # After the key's own path (table, key, Test, Save), so Tab order stays the same.
        with Horizontal(id="add-row"):
            yield Select[str]([], id="addable", prompt="Add a provider")
            yield Button("Add", id="add")
        yield Static("", id="result")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("provider", "kind", "key", "state")
        self.load()

    def load(self) -> None:
        self.ask("keys", self.fill, "Daemon unreachable", exclusive=True)

    def fill(self, reply: dict[str, Any]) -> None:
        providers = reply["providers"]
        table = self.query_one(DataTable)
        table.clear()
        for p in providers:
            key = f"{p['key']} ...{p['last4']}" if p["last4"] else (p["key"] or "missing")
            table.add_row(p["name"], p["kind"], key, p["state"], key=p["name"])
        addable = reply.get("addable", [])
        self.query_one("#addable", Select).set_options([(n, n) for n in addable])
        self.query_one("#add-row").display = bool(addable)
        if not providers:
            self.say("No provider yet: choose one under 'Add a provider' and press Add.")

    def selected(self) -> str | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def on_input_changed(self, event: Input.Changed) -> None:
        self.query_one("#save", Button).disabled = True  # a changed key must be tested again

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "add":
            choice = self.query_one("#addable", Select).value
            if isinstance(choice, str):
                self.add(choice)
            else:
                self.say("Choose a provider to add first.")
            return
        name, key = self.selected(), self.query_one("#key", Input).value.strip()
        if name is None:
            self.say("Select a provider first.")
        elif not key:
            self.say("Type or paste a key first.")
        elif event.button.id == "test":
            self.say(f"Testing the key with {name}...")
            self.test(name, key)
        else:
            self.save(name, key)

    def add(self, name: str) -> None:
        def added(_: dict[str, Any]) -> None:
            self.say(f"Added {name}; now enter its key.")
            self.load()

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


MODES = [
    ("cost: local first, cloud only for the heaviest", "cost"),
    ("balanced", "balanced"),
    ("quality: cloud for anything but light work", "quality"),
]


class Budget(PanelScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.switch_screen('dashboard')", "Dashboard")
    ]

    def compose(self) -> ComposeResult:
        yield Static("Budget and routing  (USD; takes effect at once)", classes="title")
        for field, label in (
            ("daily_usd", "Per day"),
            ("monthly_usd", "Per month"),
            ("per_task_usd", "Per task"),
        ):
            with Horizontal(classes="row"):
                yield Label(f"{label:<10}", classes="label")
                yield Input(id=field, type="number", classes="money")
        with Horizontal(classes="row"):
            yield Label("Routing   ", classes="label")
            yield Select(MODES, id="mode", allow_blank=False, value="balanced")
        yield Button("Save", id="save-budget")
        yield Static("", id="result")
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    def load(self) -> None:
        self.ask("settings", lambda r: self.fill(r["settings"]), "Daemon unreachable")

    def fill(self, settings: dict[str, Any]) -> None:
        for field, value in settings["budget"].items():
            self.query_one(f"#{field}", Input).value = f"{value:g}"
        self.query_one("#mode", Select).value = settings["routing"]["mode"]

    def on_button_pressed(self, event: Button.Pressed) -> None:
        budget = {
            f: self.query_one(f"#{f}", Input).value.strip()
            for f in ("daily_usd", "monthly_usd", "per_task_usd")
        }
        empty = [f for f, v in budget.items() if not v]
        if empty:
            self.say(f"Enter a value for {empty[0].replace('_usd', '')}.")
            return
        changes = {"budget": budget, "routing": {"mode": self.query_one("#mode", Select).value}}
        self.save(changes)

    def save(self, changes: dict[str, Any]) -> None:
        self.ask(
            "settings_set",
            lambda _: self.say("Saved; the daemon uses the new limits now."),
            "Not saved",
            changes=changes,
        )


class ConsoleApp(App[None]):
    TITLE = "agentbox"
    CSS = CSS
    SCREENS: ClassVar[dict[str, Callable[[], Screen[Any]]]] = {
        "dashboard": Dashboard,
        "keys": Keys,
        "budget": Budget,
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("d", "switch_screen('dashboard')", "Dashboard", show=False)
    ]

    def __init__(self, socket_path: Path, refresh_s: float = 2.0) -> None:
        super().__init__()
        self.panel = Panel(socket_path)
        self.refresh_s = refresh_s

    def on_mount(self) -> None:
        self.push_screen("dashboard")
