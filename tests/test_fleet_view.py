"""The live fleet view: Pilot against a real broker, and a snapshot at 80x25 with a filter."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Static

from agentbox.config import Loaded
from agentbox.console.look import LINUX
from agentbox.fleet import monitor
from agentbox.fleet.columns import fit
from agentbox.fleet.model import Fleet
from agentbox.fleet.table import BoxTable
from agentbox.fleet.view import Detail, FleetView
from agentbox.settings import MqttConfig, Settings
from tests.mqtt_peer import Broker, Peer
from tests.test_fleet_alerts import T0, healthy

P = "agentbox/v1"
SCOREBOARD = {
    "openai/gpt-4o-mini": {"calls": 120, "failures": 3, "p50_ms": 410, "p95_ms": 1900},
    "local/SmolLM2": {"calls": 40, "failures": 0, "p50_ms": 2100, "p95_ms": 4100},
}


def reports(t: float) -> list[tuple[str, str, dict[str, Any]]]:
    """Four boxes: one well, one dead, one over its cap, one stopped."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    for box, name, state in [
        ("a1", "alpha", "online"),
        ("b2", "bravo", "offline"),
        ("c3", "charlie", "online"),
        ("d4", "delta", "stopped"),
    ]:
        out.append((box, "status", {"state": state, "session": 1, "ts": t - 3600}))
        out.append((box, "info", {"version": "1.0.0", "name": name, "hardware": "rpi5"}))
    out.append(("a1", "health", healthy(ts=t, scoreboard=SCOREBOARD)))
    out.append(("b2", "health", healthy(ts=t)))
    spend = {"today_usd": 2.5, "daily_cap_usd": 2.0, "month_usd": 9, "monthly_cap_usd": 30}
    out.append(("c3", "health", healthy(ts=t, spend=spend, temp_c=83.0)))
    return out


def rows(app: FleetView) -> list[str]:
    table = app.query_one(BoxTable)
    return [table.row_text(i) for i in range(len(table.order))]


async def until(pilot: Any, check: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; rows: {rows(pilot.app)}")
        await pilot.pause(0.1)


async def type_filter(pilot: Any, line: str) -> None:
    await pilot.press("slash", "ctrl+u", *line, "enter")


async def test_live_view_filters_sorts_and_shows_a_box(broker: Broker, peers: list[Peer]) -> None:
    publisher = Peer(broker.port)
    peers.append(publisher)
    for box, kind, body in reports(time.time()):
        if kind != "health":  # retained, as boxes send them
            sent = publisher.client.publish(f"{P}/{box}/{kind}", json.dumps(body), 1, retain=True)
            sent.wait_for_publish(10)
    loaded = Loaded(
        settings=Settings(mqtt=MqttConfig(host="127.0.0.1", port=broker.port)),
        path=None,
        state_dir=Path("/nonexistent"),
        device_id="monitor",
    )
    fleet = monitor.new_fleet(loaded)
    app = FleetView(fleet, monitor.Feeder(loaded, fleet), refresh_s=0.2)
    async with app.run_test(size=(80, 25)) as pilot:
        # Status and info are retained; this health is new.
        await until(pilot, lambda: len(rows(app)) == 4, "four retained boxes")
        for box, kind, body in reports(time.time()):
            if kind == "health":
                publisher.publish(f"{P}/{box}/{kind}", json.dumps(body), qos=1)
        await until(pilot, lambda: "budget_100" in " ".join(rows(app)), "charlie's health")
        head = str(app.query_one("#head", Static).render())
        assert "connected to 127.0.0.1" in head and "1 offline" in head

        # The view redraws on its own tick (refresh_s): each check waits for it, bounded.
        def names() -> list[str]:
            return [r.split()[0] for r in rows(app)]

        await type_filter(pilot, "state:offline")
        await until(pilot, lambda: names() == ["bravo"], "state:offline")
        await type_filter(pilot, "alert:critical")
        await until(pilot, lambda: sorted(names()) == ["bravo", "charlie"], "alert:critical")
        await type_filter(pilot, "alert:temp_high")
        await until(pilot, lambda: names() == ["charlie"], "alert:temp_high")
        await type_filter(pilot, "ALPH")
        await until(pilot, lambda: names() == ["alpha"], "ALPH")

        # A report that arrives while filtered reaches its row: alpha gets hot.
        hot = healthy(ts=time.time(), temp_c=91.0, scoreboard=SCOREBOARD)
        publisher.publish(f"{P}/a1/health", json.dumps(hot))
        await until(pilot, lambda: "temp_high" in " ".join(rows(app)), "alpha's new health")

        await type_filter(pilot, "")
        await until(pilot, lambda: len(rows(app)) == 4, "all rows back")
        await pilot.press("s")  # by state
        by_state = ["offline", "online", "online", "stopped"]
        await until(pilot, lambda: [r.split()[1] for r in rows(app)] == by_state, "by state")
        await pilot.press("r")
        await until(pilot, lambda: rows(app)[0].split()[1] == "stopped", "reversed")

        await pilot.press("s")  # by alerts, worst first once reversed
        await until(pilot, lambda: rows(app)[0].split()[0] in ("bravo", "charlie"), "by alerts")

        # Enter opens the box under the cursor; the detail shows providers and scoreboard.
        index = [r.split()[0] for r in rows(app)].index("alpha")
        await pilot.press("home", *["down"] * index, "enter")
        assert isinstance(app.screen, Detail)
        text = str(app.screen.query_one("#detail-text", Static).render())
        assert "alpha (a1)" in text and "openai" in text and "temp_high" in text
        assert "Scoreboard" in text and "openai/gpt-4o-mini" in text and "1900" in text
        await pilot.press("escape")
        assert not isinstance(app.screen, Detail)


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Times on screen in UTC, whatever the machine's zone, so the snapshot is the same."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def canned_view() -> FleetView:
    fleet = Fleet(P, now=T0)
    for box, kind, body in reports(T0):
        fleet.take(f"{P}/{box}/{kind}", json.dumps(body).encode(), now=T0)
    for i in range(30):  # enough boxes to fill the screen
        at = T0 - i
        fleet.take(f"{P}/z{i:02d}/status", b'{"state": "online", "ts": 0}', now=at)
        fleet.take(f"{P}/z{i:02d}/health", json.dumps(healthy(ts=at)).encode(), now=at)
    return FleetView(fleet, refresh_s=60, look=LINUX, clock=lambda: T0 + 5)


def test_fleet_snapshot_80x25(snap_compare: Any, utc: None) -> None:
    assert snap_compare(canned_view(), terminal_size=(80, 25))


def test_fleet_filtered_snapshot_80x25(snap_compare: Any, utc: None) -> None:
    press = ["slash", *"alert:any", "enter"]
    assert snap_compare(canned_view(), terminal_size=(80, 25), press=press)


def test_long_names_are_cut_in_the_middle_so_that_boxes_stay_apart() -> None:
    assert [fit(n, 8) for n in ("kitchen-box1", "kitchen-box2", "alpha")] == [
        "kitc~ox1",
        "kitc~ox2",
        "alpha",
    ]
