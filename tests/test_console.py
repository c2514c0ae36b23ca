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
from urllib.parse import urlsplit

import pytest
from textual.widgets import Checkbox, DataTable, Input, Static

from agentbox.console.app import ConsoleApp
from agentbox.console.broker import Broker as BrokerScreen
from agentbox.console.budget import Budget
from agentbox.console.keys import Keys
from agentbox.console.look import DEFAULT, LINUX
from agentbox.console.welcome import Welcome
from tests.conftest import NO_MQTT, ROOT, dead_provider, free_port, wait_for
from tests.fake_control import FakeControl
from tests.fakes import FakeProvider, Reply, openai_stream
from tests.mqtt_peer import Broker

KEY = "sk-console-pilot-key-5678"


@pytest.fixture
def fake_models() -> Iterator[FakeProvider]:
    server = FakeProvider(Reply(body={"data": [{"id": "gpt-4o-mini"}]}))
    yield server
    server.close()


def provider_config(url: str) -> str:
    return (
        NO_MQTT
        + f"[device]\nreach_check = '{urlsplit(url).netloc}'\n"
        + f"[providers.openai]\nkind = 'openai'\nmodel = 'gpt-4o-mini'\nbase_url = '{url}/v1'\n"
    )


def screen_text(app: ConsoleApp) -> str:
    """The words on the current screen: static text and table cells."""
    text = [str(w.render()) for w in app.screen.query(Static)]
    for table in app.screen.query(DataTable):
        text += [" ".join(map(str, table.get_row_at(i))) for i in range(table.row_count)]
    return "\n".join(text)


async def until(pilot: Any, app: ConsoleApp, text: str, timeout: float = 15.0) -> str:
    """Let the app run until `text` is on the screen; fail with what is there instead."""
    deadline = time.monotonic() + timeout
    while text not in (shown := screen_text(app)):
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not on screen; it shows:\n{shown}")
        await pilot.pause(0.1)
    return shown


async def test_first_boot_flow_network_key_budget_broker_then_dashboard(
    daemons: Any, fake_models: FakeProvider, short_tmp: Path
) -> None:
    broker = Broker(short_tmp).start()
    try:
        d = daemons(provider_config(fake_models.url)).start()  # MQTT off, no key: a new box
        app = ConsoleApp(d.state_dir / "control.sock", refresh_s=0.5)
        async with app.run_test(size=(80, 25)) as pilot:
            # 1. Network: the internet check reaches the provider's host (loopback here).
            shown = await until(pilot, app, "Internet  reachable (127.0.0.1:")
            assert isinstance(app.screen, Welcome) and "Setup, step 1 of 4" in shown
            await pilot.press("enter")  # Next has the focus
            # 2. Key: typed masked, tested with a real call, saved, then on to the budget.
            await until(pilot, app, "Setup, step 2 of 4: API key")
            assert isinstance(app.screen, Keys)
            await pilot.press("tab", *KEY)
            assert app.screen.query_one("#key", Input).value == KEY
            await pilot.click("#test")
            await until(pilot, app, "OK: key works")
            assert KEY not in screen_text(app)
            await pilot.click("#save")
            # 3. Budget and routing.
            await until(pilot, app, "Setup, step 3 of 4")
            assert isinstance(app.screen, Budget)
            await until_value(pilot, app.screen.query_one("#daily_usd", Input), "2")
            app.screen.query_one("#daily_usd", Input).value = "3"
            app.screen.query_one("#mode").value = "cost"
            await pilot.click("#save-budget")
            # 4. Broker: turned on, tested, saved; the daemon connects without a restart.
            await until(pilot, app, "Setup, step 4 of 4")
            assert isinstance(app.screen, BrokerScreen)
            await until(pilot, app, "MQTT is off.")
            app.screen.query_one("#enabled", Checkbox).value = True
            app.screen.query_one("#host", Input).value = "127.0.0.1"
            app.screen.query_one("#port", Input).value = str(broker.port)
            await pilot.click("#test-broker")
            await until(pilot, app, f"OK: connected to 127.0.0.1:{broker.port}")
            await pilot.click("#save-broker")
            # Done: the dashboard, with the provider's key in the store and the broker up.
            await until(pilot, app, "key store")
            shown = await until(pilot, app, f"Broker    connected to 127.0.0.1:{broker.port}")
            assert "of $3.00" in shown
            assert KEY not in shown
        key_file = d.state_dir / "secrets" / "openai"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert key_file.read_text() == KEY
        status = d.json("status")
        assert status["providers"]["openai"]["key"] == "store"
        assert status["providers"]["openai"]["state"] == "ok"
        assert status["mqtt"]["connected"] and status["spend"]["daily_cap_usd"] == 3.0
        assert fake_models.requests[-1]["headers"]["authorization"] == f"Bearer {KEY}"
        assert d.stop() == 0
        assert KEY not in d.log()
    finally:
        broker.stop()


async def until_value(pilot: Any, field: Input, value: str) -> None:
    for _ in range(100):
        if field.value == value:
            return
        await pilot.pause(0.1)
    raise AssertionError(f"{field.id} is {field.value!r}, not {value!r}")


async def test_no_internet_is_said_with_a_hint(daemons: Any) -> None:
    d = daemons(NO_MQTT + f"[device]\nreach_check = '127.0.0.1:{free_port()}'\n").start()
    app = ConsoleApp(d.state_dir / "control.sock", refresh_s=5)
    async with app.run_test(size=(80, 25)) as pilot:
        shown = await until(pilot, app, "Internet  NOT reachable")
        assert "refused" in shown and "Hint: " in shown
        await pilot.press("escape")  # leaves the setup: the dashboard, which offers it all
        await until(pilot, app, "Providers")
        await pilot.press("n")
        shown = await until(pilot, app, "Internet  NOT reachable")
        assert "Setup, step" not in shown and "Welcome" not in shown
    assert d.stop() == 0


async def test_a_key_is_deleted_after_a_second_press(
    daemons: Any, fake_models: FakeProvider
) -> None:
    d = daemons(provider_config(fake_models.url))
    d.cli("keys", "set", "openai", input=KEY + "\n")
    d.start()
    app = ConsoleApp(d.state_dir / "control.sock", refresh_s=5)
    async with app.run_test(size=(80, 25)) as pilot:
        await until(pilot, app, "key store")  # a key: the dashboard, no setup
        await pilot.press("k")
        await until(pilot, app, "store ...5678")
        await pilot.click("#delete")
        await until(pilot, app, "Press Delete again")
        assert (d.state_dir / "secrets" / "openai").exists()
        await pilot.pause(0.5)  # two quick clicks would be one double click
        await pilot.click("#delete")
        await until(pilot, app, "Deleted the stored key for openai.")
        await until(pilot, app, "missing")
    assert not (d.state_dir / "secrets" / "openai").exists()
    assert d.json("status")["providers"]["openai"]["key"] is None
    assert d.stop() == 0


async def test_recent_tasks_show_route_and_cost(daemons: Any, fake_models: FakeProvider) -> None:
    fake_models.default = openai_stream("Four.", 1000, 10)
    d = daemons(provider_config(fake_models.url))
    d.cli("keys", "set", "openai", input=KEY + "\n")
    d.start()
    done = d.json("submit", "--wait", "--json", "--tier", "cloud", "--id", "console-t1", "2+2?")
    assert done["state"] == "succeeded"
    app = ConsoleApp(d.state_dir / "control.sock", refresh_s=5)
    async with app.run_test(size=(80, 25)) as pilot:
        await until(pilot, app, "key store")
        await pilot.press("t")
        await until(pilot, app, "Four.")  # the highlighted (newest) task's outcome
        table = app.screen.query_one("#tasks-table", DataTable)
        row = table.get_row_at(0)
        assert row[0] == "console-t1" and row[1] == "succeeded"
        assert row[2] == "openai/gpt-4o-mini" and row[3] == f"${done['usage']['cost_usd']:.4f}"
        assert done["usage"]["cost_usd"] > 0
    assert d.stop() == 0


async def test_broker_form_refuses_bad_values_and_says_why_a_test_failed(daemons: Any) -> None:
    d = daemons(NO_MQTT + "[providers.openai]\nkind = 'openai'\nmodel = 'm'\n")
    d.cli("keys", "set", "openai", input=KEY + "\n")
    d.start()
    app = ConsoleApp(d.state_dir / "control.sock", refresh_s=5)
    async with app.run_test(size=(80, 25)) as pilot:
        await until(pilot, app, "key store")
        await pilot.press("m")
        await until(pilot, app, "MQTT is off.")
        app.screen.query_one("#port", Input).value = "0"
        await pilot.click("#save-broker")
        shown = await until(pilot, app, "Not saved")
        assert "mqtt.port" in shown and "greater than or equal to 1" in shown
        app.screen.query_one("#host", Input).value = "127.0.0.1"
        app.screen.query_one("#port", Input).value = str(free_port())
        await pilot.click("#test-broker")
        await until(pilot, app, "FAILED: nothing accepts MQTT at 127.0.0.1:")
    assert not (d.state_dir / "settings.toml").exists()
    assert d.json("status")["mqtt"] == {"enabled": False}
    assert d.stop() == 0


async def test_a_failed_test_keeps_save_disabled_and_a_down_daemon_is_shown(
    daemons: Any, fake_models: FakeProvider
) -> None:
    fake_models.default = Reply(status=401, body={"error": {"message": "Incorrect API key"}})
    d = daemons(provider_config(fake_models.url)).start()
    app = ConsoleApp(d.state_dir / "control.sock", refresh_s=0.5)
    async with app.run_test(size=(80, 25)) as pilot:
        await until(pilot, app, "Welcome to agentbox")  # no key: the setup starts
        await pilot.press("escape", "k")  # leave it; the keys screen is there at any time
        await until(pilot, app, "missing")
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
        await until(pilot, app, "Welcome to agentbox")
        await pilot.press("escape", "k")
        await until(pilot, app, "No provider yet")
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
        await until(pilot, app, "Welcome to agentbox")
        await pilot.press("escape", "b")
        await until(pilot, app, "Budget and routing")
        daily = app.screen.query_one("#daily_usd", Input)
        await until_value(pilot, daily, "2")
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
    assert snap_compare(ConsoleApp(canned, refresh_s=60, look=LINUX), terminal_size=(80, 25))


def test_budget_snapshot_80x25(snap_compare: Any, canned: Path) -> None:
    assert snap_compare(
        ConsoleApp(canned, refresh_s=60, look=LINUX), terminal_size=(80, 25), press=["b"]
    )


def test_keys_snapshot_80x25(snap_compare: Any, canned: Path) -> None:
    assert snap_compare(
        ConsoleApp(canned, refresh_s=60, look=LINUX), terminal_size=(80, 25), press=["k"]
    )


def test_first_boot_snapshot_80x25(snap_compare: Any, short_tmp: Path) -> None:
    server = FakeControl(short_tmp / "control.sock", fresh=True)
    try:
        assert snap_compare(
            ConsoleApp(server.path, refresh_s=60, look=LINUX), terminal_size=(80, 25)
        )
    finally:
        server.close()


def test_network_snapshot_80x25(snap_compare: Any, canned: Path) -> None:
    assert snap_compare(
        ConsoleApp(canned, refresh_s=60, look=LINUX), terminal_size=(80, 25), press=["n"]
    )


def test_broker_snapshot_80x25(snap_compare: Any, canned: Path) -> None:
    assert snap_compare(
        ConsoleApp(canned, refresh_s=60, look=LINUX), terminal_size=(80, 25), press=["m"]
    )


def test_tasks_snapshot_80x25(snap_compare: Any, canned: Path) -> None:
    assert snap_compare(
        ConsoleApp(canned, refresh_s=60, look=LINUX), terminal_size=(80, 25), press=["t"]
    )


# tty1 on a 1280x800 framebuffer is 160x50: tables size to their content, not to the header.
def test_dashboard_snapshot_160x50(snap_compare: Any, canned: Path) -> None:
    assert snap_compare(ConsoleApp(canned, refresh_s=60, look=LINUX), terminal_size=(160, 50))


def test_keys_snapshot_160x50(snap_compare: Any, canned: Path) -> None:
    app = ConsoleApp(canned, refresh_s=60, look=LINUX)
    assert snap_compare(app, terminal_size=(160, 50), press=["k"])


# Over SSH, in an ordinary terminal, the console keeps Textual's own look.
def test_keys_snapshot_default_look(snap_compare: Any, canned: Path) -> None:
    app = ConsoleApp(canned, refresh_s=60, look=DEFAULT)
    assert snap_compare(app, terminal_size=(80, 25), press=["k"])


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
        # No key yet: the console starts the setup by itself, on the network page.
        wait_for(lambda: "Internet  reachable" in screen(), 20, what="welcome page")
        assert "Welcome to agentbox" in screen() and "step 1 of 4" in screen()
        keys("Enter")  # Next
        wait_for(lambda: "openai" in screen() and "missing" in screen(), 10, what="keys page")
        keys("Tab")
        keys(KEY)
        assert KEY not in screen() and "•" * 10 in screen()
        keys("Tab")
        keys("Enter")  # Test
        wait_for(lambda: "OK: key works" in screen(), 10, what="test result")
        keys("Tab")
        keys("Enter")  # Save: on to the budget
        wait_for(lambda: "step 3 of 4" in screen(), 10, what="budget page")
        keys("BSpace")
        keys("4")  # the daily cap, focused first
        keys("Tab", "Tab", "Tab", "Tab")
        keys("Enter")  # Save: on to the broker
        wait_for(lambda: "step 4 of 4" in screen(), 10, what="broker page")
        keys(*["Tab"] * 11)
        keys("Enter")  # Skip
        wait_for(lambda: "key store" in screen(), 10, what="dashboard")
        assert "of $4.00" in screen() and KEY not in screen()
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)
    assert (d.state_dir / "secrets" / "openai").read_text() == KEY
    assert d.stop() == 0


async def test_the_dashboard_shows_the_last_problems(daemons: Any) -> None:
    d = daemons(NO_MQTT + dead_provider("far"))
    d.cli("keys", "set", "far", input=KEY + "\n")
    d.start()
    d.cli("submit", "--tier", "cloud", "--id", "doomed", "hello")
    wait_for(lambda: d.json("status")["errors"], 30, what="an error in status")
    last = d.json("status")["errors"][-1]["message"]
    app = ConsoleApp(d.state_dir / "control.sock", refresh_s=0.5)
    async with app.run_test(size=(80, 25)) as pilot:
        shown = await until(pilot, app, "Problems  (most recent last)")
        assert last[:40] in shown
    assert d.stop() == 0
