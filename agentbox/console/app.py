"""`agentbox console`: the box's front panel on tty1 (80x25 and up, 16 colours, keyboard only).

It reaches the daemon only through the control socket; every call runs in a thread worker so
the keyboard never waits, and a daemon that is down is shown and retried, never fatal.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from textual.app import App
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.scrollbar import ScrollBar

from agentbox.console.broker import Broker
from agentbox.console.budget import Budget
from agentbox.console.dashboard import Dashboard
from agentbox.console.keys import Keys
from agentbox.console.look import LINUX, LINUX_CSS, LINUX_THEME, FullCellScrollBar, detect
from agentbox.console.panel import SETUP, Panel
from agentbox.console.tasks import Tasks
from agentbox.console.welcome import Welcome

__all__ = ["ConsoleApp", "Keys"]

CSS = (
    """
Screen { padding: 0 1; }
.title { text-style: bold; }
.step { color: $accent; margin-bottom: 1; }
#daemon, #providers, #queue, #spend, #local, #mqtt, #network { height: auto; }
#intro, #interfaces, #internet { height: auto; margin-top: 1; }
#keys-table { height: 5; margin-top: 1; }
#tasks-table { height: 16; margin-top: 1; }
#add-row { height: 3; }
#addable { width: 30; }
.buttons { height: 3; margin-top: 1; }
.buttons Button { margin-right: 1; min-width: 8; }
#result { height: auto; margin-top: 1; }
.row { height: 3; }
.label { width: 12; padding-top: 1; }
.lead.label { padding: 1 0 0 1; }
.short { width: 5; padding-top: 1; padding-left: 1; }
.money { width: 16; }
.wide { width: 30; }
.port { width: 10; }
.half { width: 25; }
.lead { width: 16; }
#mode { width: 50; }
#ca_file { width: 1fr; }
"""
    + LINUX_CSS
)


class ConsoleApp(App[None]):
    TITLE = "agentbox"
    CSS = CSS
    # The owner's panel offers what it shows in its footer; Textual's palette (themes, quit,
    # screenshots) is for developers.
    ENABLE_COMMAND_PALETTE = False
    SCREENS: ClassVar[dict[str, Callable[[], Screen[Any]]]] = {
        s.NAME: s for s in (Dashboard, Welcome, Keys, Budget, Broker, Tasks)
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("d", "switch_screen('dashboard')", "Dashboard", show=False)
    ]

    def __init__(self, socket_path: Path, refresh_s: float = 2.0, look: str | None = None) -> None:
        super().__init__()
        self.panel = Panel(socket_path)
        self.refresh_s = refresh_s
        self.setup_steps: tuple[str, ...] = ()
        self.look = look or detect()
        ScrollBar.renderer = FullCellScrollBar  # eighth blocks are in few fonts; whole cells are
        if self.look == LINUX:
            self.register_theme(LINUX_THEME)
            self.theme = LINUX_THEME.name
            self.add_class("-linux")

    def on_mount(self) -> None:
        self.push_screen("dashboard")

    def start_setup(self) -> None:
        """The guided first-boot flow: network, key, budget, broker; then the dashboard."""
        self.setup_steps = SETUP
        self.switch_screen(SETUP[0])
