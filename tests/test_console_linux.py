"""The console on the real Linux console: every character drawn exists in Debian's console
fonts and every background is one it can show, at tty1's 80x25 and at the 160x50 a 1280x800
framebuffer gives."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from agentbox.console.app import ConsoleApp
from agentbox.console.look import DEFAULT, LINUX
from tests.console_font import DEFAULT_FONTS, find_font, unicode_map
from tests.fake_control import FakeControl

# Each screen, and the keys that bring its controls into view and into focus.
VISITS: dict[str, list[list[str]]] = {
    "dashboard": [[]],
    "network": [["n"], ["n", "tab"]],
    "keys": [
        ["k"],
        ["k", "tab"],
        ["k", "tab", "tab"],
        ["k", *["tab"] * 5],
        ["k", *["tab"] * 5, "enter"],
    ],
    "budget": [["b"], ["b", "tab"], ["b", *["tab"] * 4]],
    "broker": [["m"], ["m", "tab"], ["m", "tab", "space"], ["m", *["tab"] * 10]],
    "tasks": [["t"], ["t", "down"]],
}


@pytest.fixture(scope="module")
def font_chars() -> frozenset[str]:
    maps = []
    for name in DEFAULT_FONTS:
        path = find_font(name)
        if path is None:
            pytest.fail(f"{name} not found: ./scripts/setup unpacks Debian's console fonts")
        maps.append(unicode_map(path))
    return frozenset.intersection(*maps)


@pytest.fixture
def canned(short_tmp: Path) -> Iterator[Path]:
    server = FakeControl(short_tmp / "control.sock")
    yield server.path
    server.close()


def screen_chars(app: ConsoleApp) -> tuple[set[str], str]:
    """Every character on the screen as the terminal would receive it, and the text.

    In the linux look, a background colour the Linux console cannot show is reported as a
    "<bg NAME>" entry: it has 8 backgrounds, and a bright one comes out as its dark half (bright
    white text on a bright white background vanishes).
    """
    width, height = app.size
    console = Console(
        width=width, height=height, file=io.StringIO(), force_terminal=True, record=True
    )
    # Textual has no public way to the screen's segments with their styles (its screenshots
    # are SVG): its compositor's full update is what a terminal would receive.
    update = app.screen._compositor.render_update(full=True)  # noqa: SLF001
    assert update is not None
    console.print(update)
    text = console.export_text()
    chars = set(text) - {"\n"}
    if app.look == LINUX:
        for segment in console.render(update):
            bg = segment.style.bgcolor if segment.style else None
            if bg is not None and not bg.is_default and (bg.number is None or bg.number >= 8):
                chars.add(f"<bg {bg.name}>")
    return chars, text


async def drawn(socket: Path, look: str, size: tuple[int, int]) -> dict[str, tuple[set[str], str]]:
    """Each visit's screen, in one app: keys pressed from the dashboard, then back to it."""
    out: dict[str, tuple[set[str], str]] = {}
    app = ConsoleApp(socket, refresh_s=60, look=look)
    async with app.run_test(size=size) as pilot:
        await pilot.pause(0.3)
        for name, visits in VISITS.items():
            for keys in visits:
                for key in keys:
                    await pilot.press(key)
                await pilot.pause(0.2)
                out[f"{name} {' '.join(keys)}".strip()] = screen_chars(app)
                await pilot.press("escape", "escape")
    return out


@pytest.mark.parametrize("size", [(80, 25), (160, 50)])
async def test_every_character_of_every_screen_is_in_the_console_font(
    canned: Path, font_chars: frozenset[str], size: tuple[int, int]
) -> None:
    for where, (chars, text) in (await drawn(canned, LINUX, size)).items():
        missing = sorted(chars - font_chars)
        assert not missing, f"{where}: the Linux console cannot draw {missing}:\n{text}"


async def test_the_check_catches_textuals_default_look(
    canned: Path, font_chars: frozenset[str]
) -> None:
    # The same screens in Textual's default look draw half blocks the font lacks: the check
    # above is able to fail.
    shown = await drawn(canned, DEFAULT, (80, 25))
    assert any(chars - font_chars for chars, _ in shown.values())


async def test_first_boot_screen_in_the_linux_look(
    short_tmp: Path, font_chars: frozenset[str]
) -> None:
    server = FakeControl(short_tmp / "control.sock", fresh=True)
    try:
        app = ConsoleApp(server.path, refresh_s=60, look=LINUX)
        async with app.run_test(size=(80, 25)) as pilot:
            await pilot.pause(0.5)
            chars, text = screen_chars(app)
    finally:
        server.close()
    assert "Setup, step 1 of 4" in text
    assert not chars - font_chars, sorted(chars - font_chars)
