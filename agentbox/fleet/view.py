"""The live fleet view: a Textual app, keyboard only, 80x25 and up, in the console's look.

Messages only touch the model; the table is brought up to date at most once per `refresh_s`
with the boxes that changed, so a busy broker costs a redraw per tick, not one per message.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.scrollbar import ScrollBar
from textual.widgets import DataTable, Footer, Input, Static

from agentbox.console.look import LINUX, LINUX_CSS, LINUX_THEME, FullCellScrollBar, detect
from agentbox.fleet import columns
from agentbox.fleet.alerts import SEVERITIES
from agentbox.fleet.columns import COLUMNS, Filter
from agentbox.fleet.detail import describe
from agentbox.fleet.model import Fleet

CSS = (
    """
#head { height: 1; }
#filter { height: 1; border: none; padding: 0; }
App.-linux #filter { border: none; }
App.-linux #filter:focus { border: none; background: ansi_blue; }
#boxes { height: 1fr; scrollbar-size-vertical: 1; }
#detail { height: 1fr; }
"""
    + LINUX_CSS
)
LAGS = 100_000  # lag samples kept for `scripts/bench-fleet`


class Detail(Screen[None]):
    """One box: what it is, its figures, providers, alerts, and its scoreboard when it has one."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("q", "app.pop_screen", "Back", show=False),
    ]

    def __init__(self, fleet: Fleet, device_id: str) -> None:
        super().__init__()
        self.fleet = fleet
        self.device_id = device_id

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="detail"):
            yield Static(id="detail-text")
        yield Footer()

    def on_mount(self) -> None:
        self.show()

    def show(self) -> None:
        box = self.fleet.boxes.get(self.device_id)
        for shown in self.query("#detail-text").results(Static):  # none until composed
            shown.update(describe(box, time.time()) if box else f"{self.device_id}: not known")


class FleetView(App[None]):
    TITLE = "agentbox fleet"
    CSS = CSS
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter"),
        Binding("s", "sort", "Sort"),
        Binding("r", "reverse", "Reverse"),
        Binding("enter", "detail", "Details", show=True),
        Binding("q", "quit", "Quit"),
        Binding("escape", "table", show=False),
    ]

    def __init__(
        self,
        fleet: Fleet,
        feed: Callable[[Fleet, Callable[[str], None]], Awaitable[None]] | None = None,
        refresh_s: float = 1.0,
        look: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.fleet = fleet
        self.feed = feed
        self.refresh_s = refresh_s
        self.clock = clock
        self.broker = "connecting" if feed else "not listening"
        self.sort_by = "name"
        self.reverse = False
        self.filter = Filter()
        self.shown: dict[str, list[columns.Cell]] = {}  # rows in the table, with their cells
        self.lags: deque[float] = deque(maxlen=LAGS)  # report ts to the row being redrawn
        self.look = look or detect()
        ScrollBar.renderer = FullCellScrollBar
        if self.look == LINUX:
            self.register_theme(LINUX_THEME)
            self.theme = LINUX_THEME.name
            self.add_class("-linux")

    def compose(self) -> ComposeResult:
        yield Static(id="head")
        yield Input(placeholder="/ filter: name, state:offline, alert:critical", id="filter")
        table: DataTable[Any] = DataTable(id="boxes", cursor_type="row", cell_padding=0)
        for c in COLUMNS:
            table.add_column(c.label, width=c.width + 1, key=c.key)
        yield table
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#boxes", DataTable).focus()
        self.tick()
        self.set_interval(self.refresh_s, self.tick)
        if self.feed is not None:
            self.run_worker(self.feed(self.fleet, self._broker_says), exclusive=True)

    def _broker_says(self, line: str) -> None:
        self.broker = line

    # ---- keeping the table current ------------------------------------------------------

    def tick(self) -> None:
        now = self.clock()
        self.fleet.sweep(now)
        dirty = self.fleet.pop_dirty()
        table = self.query_one("#boxes", DataTable)
        changed = False
        for device in dirty:
            changed |= self._apply(table, device, now)
        if changed and self.sort_by:
            table.sort(self.sort_by, key=columns.sort_key, reverse=self.reverse)
        self._head()
        if isinstance(self.screen, Detail):
            self.screen.show()

    def _apply(self, table: DataTable[Any], device: str, now: float) -> bool:
        """Bring one box's row up to date; True when rows came, went or may have moved."""
        box = self.fleet.boxes.get(device)
        ts = box.health.get("ts") if box else None
        if isinstance(ts, int | float) and box is not None and box.health_at >= now - 60:
            self.lags.append(now - ts)
        if box is None or not self.filter.matches(box):
            if self.shown.pop(device, None) is not None:
                table.remove_row(device)
                return True
            return False
        new = columns.cells(box.view(now))
        old = self.shown.get(device)
        self.shown[device] = new
        if old is None:
            table.add_row(*new, key=device)
            return True
        moved = False
        for key, a, b in zip(columns.KEYS, old, new, strict=True):
            if a.plain != b.plain or a.style != b.style:
                table.update_cell(device, key, b)
                moved |= key == self.sort_by
        return moved

    def rebuild(self) -> None:
        """Every row again: after the filter changed."""
        table = self.query_one("#boxes", DataTable)
        table.clear()
        self.shown.clear()
        self.fleet.dirty |= set(self.fleet.boxes)
        self.tick()

    def _head(self) -> None:
        states: dict[str, int] = {}
        for box in self.fleet.boxes.values():
            states[box.state] = states.get(box.state, 0) + 1
        active = self.fleet.alerts()
        count = {s: sum(a.severity == s for a in active) for s in SEVERITIES}
        parts = [f"{n} {s}" for s, n in sorted(states.items())] or ["no boxes yet"]
        alerts = f"{count['critical']} critical, {count['warning']} warning"
        shown = f"{len(self.shown)} shown" if self.filter else f"{len(self.fleet.boxes)} boxes"
        sort = f"{self.sort_by}{' desc' if self.reverse else ''}"
        line = f"{shown}: {', '.join(parts)} | {alerts} | by {sort} | {self.broker}"
        self.query_one("#head", Static).update(line)

    # ---- keys ---------------------------------------------------------------------------

    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        wanted = Filter.parse(event.value)
        if wanted != self.filter:
            self.filter = wanted
            self.rebuild()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_table()

    def action_table(self) -> None:
        self.query_one("#boxes", DataTable).focus()

    def action_sort(self) -> None:
        keys = columns.KEYS
        self.sort_by = keys[(keys.index(self.sort_by) + 1) % len(keys)]
        self._resort()

    def action_reverse(self) -> None:
        self.reverse = not self.reverse
        self._resort()

    def _resort(self) -> None:
        table = self.query_one("#boxes", DataTable)
        table.sort(self.sort_by, key=columns.sort_key, reverse=self.reverse)
        self._head()

    def action_detail(self) -> None:
        table = self.query_one("#boxes", DataTable)
        if isinstance(self.screen, Detail) or not table.row_count:
            return
        row = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        self.push_screen(Detail(self.fleet, str(row.value)))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.push_screen(Detail(self.fleet, str(event.row_key.value)))
