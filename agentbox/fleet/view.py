"""The live fleet view: a Textual app, keyboard only, 80x25 and up, in the console's look.

Messages only touch the model; once per `refresh_s` the boxes that changed get their place in
the order, and the lines on screen are drawn again: a busy broker costs one redraw per tick,
not one per message, and boxes off screen cost no formatting at all.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.scrollbar import ScrollBar
from textual.widgets import Footer, Input, Static

from agentbox.console.look import LINUX, LINUX_CSS, LINUX_THEME, FullCellScrollBar, detect
from agentbox.fleet import columns
from agentbox.fleet.alerts import SEVERITIES
from agentbox.fleet.columns import COLUMNS, Filter
from agentbox.fleet.detail import describe
from agentbox.fleet.model import Fleet
from agentbox.fleet.monitor import Feeder
from agentbox.fleet.table import BoxTable

CSS = (
    """
#head { height: 1; }
#filter { height: 1; border: none; padding: 0; }
App.-linux #filter { border: none; }
App.-linux #filter:focus { border: none; background: ansi_blue; }
#boxes { height: 1fr; }
#detail { height: 1fr; }
"""
    + LINUX_CSS
)
LAGS = 100_000  # lag samples kept for `scripts/bench-fleet`
SWEEP_S = 2.0  # how often the clock-bound alerts of every box are checked


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
        with self.fleet.lock:
            box = self.fleet.boxes.get(self.device_id)
            body = describe(box, time.time()) if box else f"{self.device_id}: not known"
        for shown in self.query("#detail-text").results(Static):  # none until composed
            shown.update(body)


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
        feeder: Feeder | None = None,
        refresh_s: float = 1.0,
        look: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.fleet = fleet
        self.feeder = feeder
        self.refresh_s = refresh_s
        self.clock = clock
        self.broker = "connecting" if feeder else "not listening"
        self.sort_by = "name"
        self.reverse = False
        self.filter = Filter()
        self.keys: dict[str, tuple[Any, str]] = {}  # the rows shown, with their sort keys
        self.swept = 0.0
        self.lags: deque[float] = deque(maxlen=LAGS)  # report ts to the row being redrawn
        self.last_tick = 0.0
        self.look = look or detect()
        ScrollBar.renderer = FullCellScrollBar
        if self.look == LINUX:
            self.register_theme(LINUX_THEME)
            self.theme = LINUX_THEME.name
            self.add_class("-linux")

    def compose(self) -> ComposeResult:
        yield Static(id="head")
        yield Input(placeholder="/ filter: name, state:offline, alert:critical", id="filter")
        yield BoxTable(self._cells, id="boxes")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(BoxTable).focus()
        self.tick()
        self.set_interval(self.refresh_s, self.tick)
        if self.feeder is not None:
            self.feeder.start(self._broker_says)

    def on_unmount(self) -> None:
        if self.feeder is not None:
            self.feeder.stop()

    def _broker_says(self, line: str) -> None:
        self.broker = line  # from the feed's thread: shown at the next tick

    def _cells(self, device: str) -> list[columns.Cell]:
        with self.fleet.lock:
            return columns.cells(self.fleet.boxes[device].view(self.clock()))

    # ---- keeping the table current ------------------------------------------------------

    def tick(self) -> None:
        with self.fleet.lock:
            self._tick()

    def _tick(self) -> None:
        now = self.clock()
        if now - self.swept >= SWEEP_S:
            self.fleet.sweep(now)
            self.swept = now
        moved = False
        for device in self.fleet.pop_dirty():
            moved |= self._place(device, now)
        self.last_tick = now
        table = self.query_one(BoxTable)
        if moved:
            table.show(self._ordered())
        else:
            table.refresh()  # figures in rows on screen may have changed
        self._head()
        if isinstance(self.screen, Detail):
            self.screen.show()

    def _place(self, device: str, now: float) -> bool:
        """Note one changed box's sort key; True when rows came, went or may have moved."""
        box = self.fleet.boxes.get(device)
        if box is None or not self.filter.matches(box):
            return self.keys.pop(device, None) is not None
        ts = box.health.get("ts")
        if isinstance(ts, int | float) and box.health_at > self.last_tick:
            self.lags.append(now - ts)  # a report new since the last tick
        key = (columns.sort_key(self.sort_column.cell(box.view(now))), device)
        if self.keys.get(device) == key:
            return False
        self.keys[device] = key
        return True

    def _ordered(self) -> list[str]:
        return sorted(self.keys, key=self.keys.__getitem__, reverse=self.reverse)

    def rebuild(self) -> None:
        """Every box placed again: after the filter or the sort column changed."""
        with self.fleet.lock:
            self.keys.clear()
            self.fleet.dirty |= set(self.fleet.boxes)
            self._tick()

    def _head(self) -> None:
        states: dict[str, int] = {}
        for box in self.fleet.boxes.values():
            states[box.state] = states.get(box.state, 0) + 1
        active = self.fleet.alerts()
        count = {s: sum(a.severity == s for a in active) for s in SEVERITIES}
        parts = [f"{n} {s}" for s, n in sorted(states.items())] or ["no boxes yet"]
        alerts = f"{count['critical']} critical, {count['warning']} warning"
        shown = f"{len(self.keys)} shown" if self.filter else f"{len(self.fleet.boxes)} boxes"
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
        self.query_one(BoxTable).focus()

    def action_sort(self) -> None:
        keys = columns.KEYS
        self.sort_by = keys[(keys.index(self.sort_by) + 1) % len(keys)]
        self.rebuild()

    def action_reverse(self) -> None:
        self.reverse = not self.reverse
        with self.fleet.lock:
            self.query_one(BoxTable).show(self._ordered())
            self._head()

    @property
    def sort_column(self) -> columns.Column:
        return COLUMNS[columns.KEYS.index(self.sort_by)]

    def action_detail(self) -> None:
        device = self.query_one(BoxTable).current()
        if device is not None and not isinstance(self.screen, Detail):
            self.push_screen(Detail(self.fleet, device))
