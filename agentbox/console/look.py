"""How the console looks on the bare Linux console (tty1) and on an ordinary terminal.

The Linux console has 16 colours and a 512-glyph font (console-setup's Lat15/Uni2): box
drawing lines but no half or eighth blocks, which Textual's default borders, checkboxes and
scrollbars are drawn with (they show as rows of diamonds there). With TERM=linux the console
uses the "linux" look: ANSI colours only, borders from the box-drawing lines. Its font draws
heavy lines like light ones and a background can only be one of the 8 dark colours, so focus
is shown by colour: a bright yellow border, and a blue background on a focused button.
"""

from __future__ import annotations

import os
from typing import ClassVar

from textual.scrollbar import ScrollBarRender
from textual.theme import Theme
from textual.widgets import Checkbox

LINUX = "linux"
DEFAULT = "default"

LINUX_THEME = Theme(
    name="agentbox-linux",
    ansi=True,
    dark=True,
    primary="ansi_blue",
    secondary="ansi_cyan",
    accent="ansi_bright_cyan",
    warning="ansi_bright_yellow",
    error="ansi_bright_red",
    success="ansi_bright_green",
    foreground="ansi_white",
    background="ansi_black",
    surface="ansi_black",
    panel="ansi_black",
    boost="ansi_black",
    variables={
        "ansi-background": "ansi_black",
        "ansi-foreground": "ansi_white",
        "border": "ansi_bright_white",
        "border-blurred": "ansi_white",
        "block-cursor-foreground": "ansi_bright_white",
        "block-cursor-background": "ansi_blue",
        "block-cursor-text-style": "bold",
        "block-cursor-blurred-foreground": "ansi_black",
        "block-cursor-blurred-background": "ansi_white",
        "input-cursor-background": "ansi_white",
        "input-cursor-foreground": "ansi_black",
        "input-cursor-text-style": "none",
        "input-selection-background": "ansi_blue",
        "input-selection-foreground": "ansi_bright_white",
        "footer-key-foreground": "ansi_bright_yellow",
        "footer-description-foreground": "ansi_white",
        "footer-background": "ansi_blue",
        "footer-foreground": "ansi_bright_white",
        "scrollbar": "ansi_white",
        "scrollbar-hover": "ansi_bright_white",
        "scrollbar-active": "ansi_bright_white",
        "scrollbar-background": "ansi_black",
        "scrollbar-background-hover": "ansi_black",
        "scrollbar-background-active": "ansi_black",
        "scrollbar-corner-color": "ansi_black",
    },
)

# Rules for the App when it has the class `-linux`; they take precedence over the widgets'
# own defaults, which use `tall` borders (half blocks) and shades the 16 colours lose.
LINUX_CSS = """
App.-linux Screen { background: ansi_black; color: ansi_white; }
App.-linux Button {
    border: round ansi_white; background: ansi_black; color: ansi_bright_white;
    text-style: bold; tint: transparent; background-tint: transparent;
}
App.-linux Button:hover { border: round ansi_bright_white; background: ansi_black; }
App.-linux Button:focus {
    border: heavy ansi_bright_yellow; background: ansi_blue; color: ansi_bright_white;
    text-style: bold;
}
App.-linux Button.-active { border: heavy ansi_bright_yellow; background: ansi_cyan; }
App.-linux Button:disabled {
    border: round ansi_bright_black; color: ansi_bright_black; text-style: none;
    background: ansi_black;
}
App.-linux Input {
    border: round ansi_white; background: ansi_black; color: ansi_bright_white;
}
App.-linux Input:focus { border: heavy ansi_bright_yellow; background: ansi_black; }
App.-linux Input > .input--placeholder { color: ansi_bright_black; }
App.-linux Input.-invalid { border: round ansi_bright_red; }
App.-linux Input.-invalid:focus { border: heavy ansi_bright_red; }
App.-linux SelectCurrent { border: round ansi_white; background: ansi_black; }
App.-linux Select:focus > SelectCurrent { border: heavy ansi_bright_yellow; }
App.-linux SelectOverlay { border: round ansi_bright_white; background: ansi_black; }
App.-linux Checkbox {
    border: round ansi_white; background: ansi_black; color: ansi_bright_white;
}
App.-linux Checkbox:focus { border: heavy ansi_bright_yellow; }
App.-linux Checkbox > .toggle--button { color: ansi_black; background: ansi_white; }
App.-linux Checkbox.-on > .toggle--button { color: ansi_bright_green; background: ansi_black; }
App.-linux DataTable { background: ansi_black; color: ansi_white; }
App.-linux DataTable > .datatable--header { background: ansi_black; color: ansi_bright_cyan; }
App.-linux FooterKey .footer-key--key { background: ansi_blue; color: ansi_bright_yellow; }
App.-linux FooterKey { border-left: none; }
App.-linux Footer { background: ansi_blue; color: ansi_bright_white; }
App.-linux Toast { border-left: none; background: ansi_blue; color: ansi_bright_white; }
"""


def detect() -> str:
    """The look for this terminal: the Linux console gets its own."""
    return LINUX if os.environ.get("TERM", "") == LINUX else DEFAULT


class FullCellScrollBar(ScrollBarRender):
    """A scrollbar drawn in whole cells: no eighth blocks, which the console font lacks."""

    VERTICAL_BARS: ClassVar[list[str]] = [" "] * 8
    HORIZONTAL_BARS: ClassVar[list[str]] = [" "] * 8


class BoxCheckbox(Checkbox):
    """A checkbox drawn as [X]: Textual's default uses half blocks around the X."""

    BUTTON_LEFT = "["
    BUTTON_RIGHT = "]"
