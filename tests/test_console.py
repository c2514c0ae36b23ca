"""The console: Pilot against a real daemon, snapshots at 80x25, and a real terminal (tmux)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable, Input, Static

from agentbox.console.app import ConsoleApp, Keys
from tests.conftest import NO_MQTT, ROOT, wait_for
from tests.fake_control import FakeControl
from tests.fakes import FakeProvider, Reply

KEY = "sk-console-pilot-key-5678"


@pytest.fixture
def fake_models() -> Iterator[FakeProvider]:
    server = FakeProvider(Reply(body={"data": [{"id": "gpt-4o-mini"}]}))
    yield server
    server.close()


def provider_config(url: str) -> str:
    return (
        NO_MQTT
        + f"[providers.openai]\nkind = 'openai'\nmodel = 'gpt-4o-mini'\nbase_url = '{url}/v1'\n"
    )


def screen_text(app: ConsoleApp) -> str:
    return "\n".join(str(w.render()) for w in app.screen.query(Static))


async def test_key_entry_is_tested_saved_0600_and_reloaded(
    daemons: Any, fake_models: FakeProvider
) -> None:
    d = daemons(provider_config(fake_models.url)).start()
    app = ConsoleApp(d.state_dir / "control.sock", refresh_s=0.5)
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.pause(1.0)
        # First boot (no key anywhere): the console opens where the owner has to act.
        assert isinstance(app.screen, Keys)
        assert app.screen.query_one(DataTable).row_count == 1
        await pilot.press("tab")
        await pilot.press(*KEY)
        assert app.screen.query_one("#key", Input).value == KEY
        await pilot.click("#test")
        await pilot.pause(1.0)
        assert "OK: key works" in screen_text(app)
        assert not app.screen.query_one("#save").disabled
        await pilot.click("#save")
        await pilot.pause(1.0)
        assert "Saved the key for openai (...5678)" in screen_text(app)
        assert app.screen.query_one("#key", Input).value == ""
        assert KEY not in screen_text(app)
        await pilot.press("escape")
        await pilot.pause(1.0)
        assert "key store" in screen_text(app)
    key_file = d.state_dir / "secrets" / "openai"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text() == KEY
    assert d.json("status")["providers"]["openai"]["key"] == "store"
    assert fake_models.requests[-1]["headers"]["authorization"] == f"Bearer {KEY}"
    assert d.stop() == 0
    assert KEY not in d.log()


async def test_a_failed_test_keeps_save_disabled_and_a_down_daemon_is_shown(
    daemons: Any, fake_models: FakeProvider
) -> None:
    fake_models.default = Reply(status=401, body={"error": {"message": "Incorrect API key"}})
    d = daemons(provider_config(fake_models.url)).start()
    app = ConsoleApp(d.state_dir / "control.sock", refresh_s=0.5)
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("k")
        await pilot.pause(0.5)
        await pilot.press("tab", *"sk-wrong-000000000")
        await pilot.click("#test")
        await pilot.pause(1.0)
        assert "FAILED: openai: key rejected (HTTP 401)" in screen_text(app)
        assert app.screen.query_one("#save").disabled
        await pilot.press("escape")
        d.stop()
        await pilot.pause(1.5)
        assert "Daemon    DOWN" in screen_text(app) and "retrying" in screen_text(app)
    assert not (d.state_dir / "secrets" / "openai").exists()


async def test_a_fresh_box_adds_its_first_provider_from_the_console(daemons: Any) -> None:
    d = daemons(NO_MQTT).start()  # no [providers.*] at all, as on a new box
    app = ConsoleApp(d.state_dir / "control.sock", refresh_s=5)
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("k")
        await pilot.pause(0.8)
        assert "No provider yet" in screen_text(app)
        app.screen.query_one("#addable").value = "anthropic"  # type: ignore[attr-defined]
        await pilot.click("#add")
        await pilot.pause(1.0)
        assert "Added anthropic" in screen_text(app)
        table = app.screen.query_one(DataTable)
        assert table.row_count == 1 and table.get_row_at(0)[0] == "anthropic"
    overlay = (d.state_dir / "settings.toml").read_text()
    assert "[providers.anthropic]" in overlay and 'model = "claude-haiku-4-5"' in overlay
    assert d.json("status")["providers"]["anthropic"]["kind"] == "anthropic"
    assert d.stop() == 0


async def test_budget_and_mode_take_effect_and_bad_values_are_refused(daemons: Any) -> None:
    d = daemons(NO_MQTT).start()
    app = ConsoleApp(d.state_dir / "control.sock", refresh_s=5)
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("b")
        await pilot.pause(0.8)
        daily = app.screen.query_one("#daily_usd", Input)
        assert daily.value == "2"
        daily.value = "5"
        app.screen.query_one("#mode").value = "quality"  # type: ignore[attr-defined]
        await pilot.click("#save-budget")
        await pilot.pause(1.0)
        assert "Saved" in screen_text(app)
        daily.value = "-1"
        await pilot.click("#save-budget")
        await pilot.pause(1.0)
        text = screen_text(app)
        assert "Not saved" in text and "budget.daily_usd" in text and "greater than" in text
    status = d.json("status")
    assert status["spend"]["daily_cap_usd"] == 5.0
    overlay = d.state_dir / "settings.toml"
    assert stat.S_IMODE(overlay.stat().st_mode) == 0o600
    assert "daily_usd = 5" in overlay.read_text() and 'mode = "quality"' in overlay.read_text()
    assert d.cli("config", "show", "--json").stdout.count('"quality"') == 1
    assert d.stop() == 0


@pytest.fixture
def canned(short_tmp: Path) -> Iterator[Path]:
    server = FakeControl(short_tmp / "control.sock")
    yield server.path
    server.close()


def test_dashboard_snapshot_80x25(snap_compare: Any, canned: Path) -> None:
    assert snap_compare(ConsoleApp(canned, refresh_s=60), terminal_size=(80, 25))


def test_budget_snapshot_80x25(snap_compare: Any, canned: Path) -> None:
    assert snap_compare(ConsoleApp(canned, refresh_s=60), terminal_size=(80, 25), press=["b"])


def test_keys_snapshot_80x25(snap_compare: Any, canned: Path) -> None:
    assert snap_compare(ConsoleApp(canned, refresh_s=60), terminal_size=(80, 25), press=["k"])


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is installed by scripts/setup")
def test_keyboard_only_in_a_real_terminal(daemons: Any, fake_models: FakeProvider) -> None:
    d = daemons(provider_config(fake_models.url)).start()
    session = f"agentbox-test-{os.getpid()}"
    env = " ".join(f"{k}={v}" for k, v in d.env.items() if k.startswith("AGENTBOX_"))
    cmd = f"cd {ROOT} && TERM=linux {env} .venv/bin/agentbox console"
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "25", cmd], check=True
    )

    def screen() -> str:
        return subprocess.run(
            ["tmux", "capture-pane", "-t", session, "-p"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def keys(*k: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", session, *k], check=True)
        time.sleep(0.3)

    try:
        # No key yet: the console starts on the keys screen by itself.
        wait_for(lambda: "openai" in screen() and "missing" in screen(), 20, what="keys screen")
        keys("Tab")
        keys(KEY)
        assert KEY not in screen() and "•" * 10 in screen()
        keys("Tab")
        keys("Enter")
        wait_for(lambda: "OK: key works" in screen(), 10, what="test result")
        keys("Tab")
        keys("Enter")
        wait_for(lambda: "store ...5678" in screen(), 10, what="saved key listed")
        assert KEY not in screen()
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)
    assert (d.state_dir / "secrets" / "openai").read_text() == KEY
    assert d.stop() == 0
