"""The fleet's table: one line per box, drawn only for the lines on screen.

Textual's DataTable keeps every cell of every row and pays a refresh per updated cell, which
at 5,000 boxes costs more than the messages do. This widget keeps only the order of the rows
shown (and each one's sort key); a line is formatted when it is drawn.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from agentbox.fleet.columns import COLUMNS, Cell

WIDTH = sum(c.width + 1 for c in COLUMNS)
HEADER = Style(bold=True, color="bright_cyan")
CURSOR = Style(bold=True, color="bright_white", bgcolor="blue")


def line_of(cells: list[Cell]) -> Text:
    """The cells side by side, each cut or padded to its column, one space after each."""
    out = Text(no_wrap=True, end="")
    for column, cell in zip(COLUMNS, cells, strict=True):
        shown = cell.plain[: column.width]
        pad = " " * (column.width - len(shown))
        out.append((pad + shown if cell.justify == "right" else shown + pad) + " ", cell.style)
    return out


class BoxTable(ScrollView, can_focus=True):
    """Rows by device id, in `order`; `cells_of` formats one box's row when it is drawn."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1)", show=False),
        Binding("down", "move(1)", show=False),
        Binding("pageup", "page(-1)", show=False),
        Binding("pagedown", "page(1)", show=False),
        Binding("home", "move(-1000000)", show=False),
        Binding("end", "move(1000000)", show=False),
    ]
    DEFAULT_CSS = "BoxTable { scrollbar-size-vertical: 1; overflow-x: hidden; }"

    def __init__(self, cells_of: Callable[[str], list[Cell]], **kw: Any) -> None:
        super().__init__(**kw)
        self.cells_of = cells_of
        self.order: list[str] = []
        self.cursor = 0
        self._header = line_of([Cell(c.label, c.label) for c in COLUMNS])

    def show(self, order: list[str]) -> None:
        """New rows, in this order; the cursor stays on its box when that is still shown."""
        current = self.current()
        self.order = order
        if current is not None and current in order:
            self.cursor = order.index(current)
        self.cursor = max(0, min(self.cursor, len(order) - 1))
        self.virtual_size = Size(WIDTH, len(order) + 1)
        self._follow()
        self.refresh()

    def current(self) -> str | None:
        return self.order[self.cursor] if 0 <= self.cursor < len(self.order) else None

    def row_text(self, index: int) -> str:
        return line_of(self.cells_of(self.order[index])).plain.rstrip()

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if y == 0:
            return self._strip(self._header, width)
        index = self.scroll_offset.y + y - 1
        if index >= len(self.order):
            return Strip.blank(width)
        line = line_of(self.cells_of(self.order[index]))
        if index == self.cursor and self.has_focus:
            line.stylize(CURSOR)
        elif index == self.cursor:
            line.stylize(Style(reverse=True))
        return self._strip(line, width)

    def _strip(self, line: Text, width: int) -> Strip:
        segments = [s for s in line.render(self.app.console) if s.text != "\n"]
        return Strip(segments or [Segment("")]).crop_extend(0, width, None)

    def action_move(self, by: int) -> None:
        self.cursor = max(0, min(self.cursor + by, len(self.order) - 1))
        self._follow()
        self.refresh()

    def action_page(self, by: int) -> None:
        self.action_move(by * max(self.size.height - 1, 1))

    def _follow(self) -> None:
        """Scroll so that the cursor's row is on screen (below the header line)."""
        rows = max(self.size.height - 1, 1)
        top = self.scroll_offset.y
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False)
        elif self.cursor >= top + rows:
            self.scroll_to(y=self.cursor - rows + 1, animate=False)

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()
