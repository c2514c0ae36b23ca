"""What every console screen shares: calls to the daemon in thread workers, and the setup flow."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from textual import events
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Button, DataTable, Static

from agentbox.control_client import ControlClient, ControlError

# The first-boot flow, in order; each screen's NAME. Everything stays changeable later.
SETUP = ("welcome", "keys", "budget", "broker")
SETUP_TITLES = {
    "welcome": "network",
    "keys": "API key",
    "budget": "budget and routing",
    "broker": "MQTT broker (optional)",
}


class Panel:
    """The console's calls to the daemon (blocking; run them in thread workers)."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        with ControlClient(self.socket_path, timeout=15) as client:
            return client.call(op, **args)


def fill_table(table: DataTable[str], columns: tuple[str, ...], rows: dict[str, list[str]]) -> None:
    """Replace a table's rows (keyed), each column as wide as its widest cell.

    Widths are given, not left to DataTable: it sizes new rows' columns later, on idle, and a
    screen drawn before that showed every column cut to its header ("openai open sto ok").
    """
    row = table.cursor_row
    table.clear(columns=True)
    for i, label in enumerate(columns):
        width = max([len(label), *(len(cells[i]) for cells in rows.values())])
        table.add_column(label, width=width)
    for key, cells in rows.items():
        table.add_row(*cells, key=key)
    if rows:
        table.move_cursor(row=min(row, len(rows) - 1))


class PanelScreen(Screen[None]):
    """A screen that asks the daemon things: every call in a thread worker, then back here."""

    NAME: ClassVar[str] = ""
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "leave", "Dashboard")]

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

    # ---- the first-boot flow -----------------------------------------------------------

    @property
    def in_setup(self) -> bool:
        return self.NAME in getattr(self.app, "setup_steps", ())

    def setup_line(self) -> str:
        """'Setup, step 2 of 4: API key' while in the flow, else ''."""
        if not self.in_setup:
            return ""
        n = SETUP.index(self.NAME) + 1
        return f"Setup, step {n} of {len(SETUP)}: {SETUP_TITLES[self.NAME]}"

    def on_screen_resume(self, event: events.ScreenResume) -> None:
        for button in self.query("#next").results(Button):
            button.display = self.in_setup
        for step in self.query("#step").results(Static):
            step.update(self.setup_line())
            step.display = self.in_setup
        self.resumed()

    def resumed(self) -> None:
        """Called each time the screen is shown again (refresh what it shows)."""

    def action_leave(self) -> None:
        """Esc: back to the dashboard, leaving the setup flow if it runs."""
        self.app.setup_steps = ()  # type: ignore[attr-defined]
        self.app.switch_screen("dashboard")

    def advance(self) -> None:
        """Go on to the next setup step (or to the dashboard when done)."""
        steps: tuple[str, ...] = getattr(self.app, "setup_steps", ())
        if self.NAME not in steps:
            return
        rest = steps[steps.index(self.NAME) + 1 :]
        if rest:
            self.app.switch_screen(rest[0])
            return
        self.app.setup_steps = ()  # type: ignore[attr-defined]
        self.app.switch_screen("dashboard")
        self.app.notify("Setup done. Everything can be changed later from here.")


def money(spend: dict[str, Any]) -> str:
    return (
        f"Spend     today ${spend['today_usd']:.2f} of ${spend['daily_cap_usd']:.2f}"
        f"   month ${spend['month_usd']:.2f} of ${spend['monthly_cap_usd']:.2f}"
    )


def ago(seconds: float) -> str:
    """A compact age: 42s, 5m, 3h, 2d."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    return f"{s // 3600}h" if s < 86400 else f"{s // 86400}d"
