"""Fleet alerts from simulated reports: each threshold, staleness, stops, versions, the document."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentbox.fleet.alerts import CODES, at_least
from agentbox.fleet.model import Fleet
from agentbox.settings import FleetConfig

T0 = 1_800_000_000.0
P = "agentbox/v1"


def healthy(**over: Any) -> dict[str, Any]:
    """A health report with nothing wrong, as a box sends it; `over` replaces parts."""
    body: dict[str, Any] = {
        "ts": T0,
        "version": "1.0.0",
        "cpu_percent": 12.0,
        "mem_percent": 40.0,
        "disk_free_mb": 9000,
        "temp_c": 50.0,
        "queue": {"total": {"queued": 0, "running": 0}},
        "tasks": {"succeeded_1h": 10, "failed_1h": 0},
        "spend": {"today_usd": 0.1, "month_usd": 1.0, "daily_cap_usd": 2.0, "monthly_cap_usd": 30},
        "providers": {"openai": {"state": "ok", "retry_in_s": 0}},
        "local": {"loaded": False, "model": None, "tokens_per_s": None, "load_error": None},
        "health_interval_s": 10,
    }
    body.update(over)
    return body


def send(fleet: Fleet, box: str, kind: str, body: dict[str, Any], at: float = T0) -> None:
    assert fleet.take(f"{P}/{box}/{kind}", json.dumps(body).encode(), now=at)


def online(fleet: Fleet, box: str, version: str = "1.0.0", at: float = T0) -> None:
    send(fleet, box, "status", {"state": "online", "session": 1, "ts": at}, at)
    send(fleet, box, "info", {"version": version, "name": f"name-{box}"}, at)


def codes(fleet: Fleet, box: str) -> list[str]:
    return [a.code for a in fleet.boxes[box].alerts]


def test_a_healthy_box_raises_nothing() -> None:
    fleet = Fleet(P, now=T0)
    online(fleet, "a")
    send(fleet, "a", "health", healthy())
    fleet.sweep(T0 + 5)
    assert fleet.alerts() == []


@pytest.mark.parametrize(
    ("over", "code", "severity", "words"),
    [
        ({"temp_c": 81.5}, "temp_high", "warning", "82 °C"),
        ({"disk_free_mb": 120}, "disk_low", "warning", "120 MB free"),
        ({"mem_percent": 95.0}, "mem_high", "warning", "95 %"),
        (
            {"spend": {"today_usd": 1.7, "daily_cap_usd": 2.0}},
            "budget_80",
            "warning",
            "$1.70 of $2.00 today",
        ),
        (
            {"spend": {"today_usd": 1, "month_usd": 31, "daily_cap_usd": 2, "monthly_cap_usd": 30}},
            "budget_100",
            "critical",
            "this month",
        ),
        (
            {"providers": {"openai": {"state": "auth_failed"}}},
            "provider_auth",
            "critical",
            "openai",
        ),
        (
            {"providers": {"claude": {"state": "quota_exhausted"}}},
            "provider_quota",
            "critical",
            "claude",
        ),
        ({"tasks": {"succeeded_1h": 6, "failed_1h": 4}}, "failure_rate", "warning", "4 of 10"),
        (
            {"local": {"loaded": False, "load_error": "local.model_path /x is not a file"}},
            "local_model",
            "warning",
            "/x is not a file",
        ),
    ],
)
def test_each_threshold_raises_its_alert(
    over: dict[str, Any], code: str, severity: str, words: str
) -> None:
    fleet = Fleet(P, now=T0)
    online(fleet, "a")
    send(fleet, "a", "health", healthy(**over))
    [alert] = fleet.alerts()
    assert (alert.code, alert.severity, alert.device_id) == (code, severity, "a")
    assert words in alert.text and "\n" not in alert.text
    send(fleet, "a", "health", healthy(), T0 + 10)  # the next good report clears it
    assert fleet.alerts() == []


def test_thresholds_come_from_the_fleet_section() -> None:
    loose = FleetConfig(temp_c=90, disk_free_mb=50, failure_rate=0.5, budget_warn_percent=95)
    report = healthy(
        temp_c=85.0,
        disk_free_mb=100,
        tasks={"succeeded_1h": 6, "failed_1h": 4},
        spend={"today_usd": 1.8, "daily_cap_usd": 2.0},
    )
    strict, relaxed = Fleet(P, now=T0), Fleet(P, loose, now=T0)
    for fleet in (strict, relaxed):
        online(fleet, "a")
        send(fleet, "a", "health", report)
    assert codes(strict, "a") == ["temp_high", "disk_low", "budget_80", "failure_rate"]
    assert codes(relaxed, "a") == []


def test_few_failures_prove_nothing_and_a_zero_cap_is_no_budget_alert() -> None:
    fleet = Fleet(P, now=T0)
    online(fleet, "a")
    report = healthy(tasks={"succeeded_1h": 0, "failed_1h": 3}, spend={"daily_cap_usd": 0})
    send(fleet, "a", "health", report)
    assert fleet.alerts() == []


def test_stale_health_is_offline_after_three_intervals() -> None:
    fleet = Fleet(P, now=T0)
    online(fleet, "a")
    send(fleet, "a", "health", healthy(temp_c=95.0))  # every 10 s, it says
    fleet.sweep(T0 + 29)
    assert codes(fleet, "a") == ["temp_high"]
    fleet.sweep(T0 + 31)
    [alert] = fleet.alerts()
    assert alert.code == "offline" and "sent every 10 s" in alert.text
    send(fleet, "a", "health", healthy(), T0 + 40)
    assert fleet.alerts() == []


def test_a_box_that_never_reports_health_is_offline_once_the_monitor_has_listened_long_enough() -> (
    None
):
    fleet = Fleet(P, FleetConfig(health_interval_s=20), now=T0)
    online(fleet, "a")  # its status is retained; no health comes
    fleet.sweep(T0 + 59)
    assert fleet.alerts() == []
    fleet.sweep(T0 + 61)
    assert codes(fleet, "a") == ["offline"]


def test_the_will_is_offline_and_a_clean_stop_waits_for_its_time() -> None:
    fleet = Fleet(P, FleetConfig(stopped_after_s=300), now=T0)
    online(fleet, "a")
    online(fleet, "b")
    send(fleet, "a", "health", healthy(temp_c=99.0))
    send(fleet, "a", "status", {"state": "offline", "session": 1, "ts": T0}, T0 + 1)
    send(fleet, "b", "status", {"state": "stopped", "session": 1, "ts": T0}, T0 + 1)
    # The dead box's last health proves nothing now: only `offline` is raised for it.
    assert codes(fleet, "a") == ["offline"] and codes(fleet, "b") == []
    fleet.sweep(T0 + 301)
    assert codes(fleet, "b") == ["stopped"]
    assert [a.code for a in at_least(fleet.alerts(), "critical")] == ["offline"]


def test_a_version_unlike_the_majority_is_named_and_a_tie_names_none() -> None:
    fleet = Fleet(P, now=T0)
    online(fleet, "a", "1.0.0")
    online(fleet, "b", "1.1.0")
    assert fleet.majority() is None and fleet.alerts() == []
    online(fleet, "c", "1.0.0")
    fleet.sweep(T0)
    [alert] = fleet.alerts()
    assert (alert.code, alert.device_id, alert.severity) == ("version", "b", "info")
    online(fleet, "b", "1.0.0", T0 + 1)  # updated
    fleet.sweep(T0 + 1)
    assert fleet.alerts() == [] and fleet.versions == {"1.0.0": 3}


def test_history_keeps_raised_alerts_and_dirty_names_only_changed_boxes() -> None:
    fleet = Fleet(P, now=T0)
    online(fleet, "a")
    online(fleet, "b")
    fleet.pop_dirty()
    send(fleet, "a", "health", healthy(disk_free_mb=10))
    fleet.sweep(T0 + 1)
    assert fleet.pop_dirty() == {"a"}
    fleet.sweep(T0 + 2)
    assert fleet.pop_dirty() == set()
    assert [a.code for _, a in fleet.boxes["a"].history] == ["disk_low"]


def test_reports_that_are_not_a_box_s_change_nothing() -> None:
    fleet = Fleet(P, now=T0)
    for topic, payload in [
        (f"{P}/a/status", b"not json"),
        (f"{P}/a/status", b"[1, 2]"),
        (f"{P}/a/task/x/event", b"{}"),
        ("other/a/status", b"{}"),
        (f"{P}//health", b"{}"),
    ]:
        assert not fleet.take(topic, payload, now=T0)
    assert fleet.boxes == {}
    # Wrong types inside a report are ignored, not raised on.
    online(fleet, "a")
    send(fleet, "a", "health", {"temp_c": "hot", "spend": [], "providers": {"x": 3}, "tasks": 1})
    assert fleet.alerts() == []


def test_the_document_has_boxes_alerts_and_counts() -> None:
    fleet = Fleet(P, now=T0)
    online(fleet, "a")
    board = {"openai/gpt-4o-mini": {"1h": {"calls": 3, "failed": 1, "usd": 0.002}}}
    send(fleet, "a", "health", healthy(temp_c=90.0, scoreboard=board))
    send(fleet, "b", "status", {"state": "offline", "ts": T0})
    doc = json.loads(json.dumps(fleet.document(T0 + 1)))
    assert set(doc) == {"ts", "prefix", "boxes", "alerts", "counts", "majority_version"}
    assert doc["counts"] == {
        "boxes": 2,
        "states": {"online": 1, "offline": 1},
        "alerts": {"info": 0, "warning": 1, "critical": 1},
    }
    assert [(a["device_id"], a["code"]) for a in doc["alerts"]] == [
        ("b", "offline"),
        ("a", "temp_high"),
    ]
    box = doc["boxes"][0]
    for key in (
        "device_id", "name", "state", "version", "cpu_percent", "mem_percent", "temp_c",
        "disk_free_mb", "queued", "running", "succeeded_1h", "failed_1h", "today_usd",
        "daily_cap_usd", "alerts", "last_seen", "health_interval_s",
    ):  # fmt: skip
        assert key in box, key
    assert box["scoreboard"] == board
    assert doc["boxes"][1]["scoreboard"] is None
    assert box["alerts"][0] == {
        "code": "temp_high",
        "severity": "warning",
        "device_id": "a",
        "text": "temperature 90 °C (>= 80)",
    }
    assert set(CODES.values()) == {"info", "warning", "critical"}
