"""Routing learned on the box: escalated local answers teach the router, through a real daemon,
the real local model and a fake cloud provider; `agentbox route --reset` forgets it."""

from __future__ import annotations

from typing import Any

from tests.conftest import Daemon
from tests.fakes import FakeProvider

NOTE = "Summarize this note in one line: {}."
THINGS = (
    "the boiler in flat 4 knocks at night",
    "the lift on floor 2 stops between floors",
    "the door of room 12 does not lock",
    "the tap in the kitchen drips all day",
    "the heater in the hall smells of burning",
)
PROBE = NOTE.format("the window in flat 9 rattles in the wind")
OTHER = "What is the capital of France?"


def test_escalations_move_a_kind_of_prompt_to_the_cloud_and_reset_moves_it_back(
    daemons: Any, fake: FakeProvider
) -> None:
    # With the bar at 0, every local answer looks unsure (a real answer's mean token
    # log-probability is below 0): each task of the kind is escalated to the fake cloud.
    config = f"""
[mqtt]
enabled = false
[routing]
unsure_logprob = 0.0
[providers.main]
kind = "openai"
base_url = "{fake.url}/v1"
model = "gpt-4o-mini"
"""
    d: Daemon = daemons(config).start()
    before = d.json("route", PROBE)
    assert before["tier"] == "local" and before["learned"]["examples"] == 0, before
    escalated = 0
    for thing in THINGS:
        task = d.json("submit", "--wait", "--max-tokens", "8", NOTE.format(thing))
        # each is answered by the cloud: escalated from local, or sent there at once when
        # the escalations before it have already moved its kind
        assert task["route"]["tier"] == "cloud", task
        escalated += "escalated" in task["route"]["reason"]
    assert escalated >= 3
    after = d.json("route", PROBE)
    assert after["tier"] == "cloud", after
    assert after["score"] > before["score"] and after["learned"]["escalated"] == escalated
    assert d.json("route", OTHER)["tier"] == "local"  # another kind of prompt stays local
    routing = d.json("status")["routing"]
    assert routing["learned"]["escalated"] == escalated and routing["mode"] == "balanced"

    # kept in the store: a restarted daemon still knows it
    assert d.stop() == 0
    d.start()
    assert d.json("route", PROBE)["tier"] == "cloud"

    forgot = d.json("route", "--reset")
    assert forgot["escalated"] == escalated
    reset = d.json("route", PROBE)
    assert reset["tier"] == "local" and reset["score"] == before["score"], reset
    assert reset["learned"]["examples"] == 0
    assert d.json("status")["routing"]["learned"]["examples"] == 0
    assert d.stop() == 0
    d.start()
    assert d.json("route", PROBE)["learned"]["examples"] == 0  # forgotten in the store too
    assert d.stop() == 0


def test_status_and_route_show_what_the_box_learned(daemons: Any) -> None:
    d: Daemon = daemons("[mqtt]\nenabled = false\n").start()
    d.cli("submit", "--tier", "cloud", "--id", "pin", "Write a detailed report.", check=False)
    shown = d.cli("status").stdout
    assert "routing: balanced, threshold" in shown and "learned from" in shown, shown
    route = d.json("route", "Say hello.")
    assert route["tier"] == "local" and route["features"] and route["learned"] is not None
    assert d.cli("route", "--reset").stdout.startswith("forgot what this box learned")
    assert d.stop() == 0
    # without a daemon, the dry run still answers from this machine's config
    offline = d.json("route", "Say hello.")
    assert offline["tier"] == "local" and offline["learned"] is None
