"""Recurring jobs: the schedule spec, due times, the missed-run policy across a stop, and the
`schedules` commands against a real daemon."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest

from agentbox.tasks.planner import GRACE_S, _missed
from agentbox.tasks.schedules import Schedule, parse_schedule
from agentbox.vocabulary import SpecError
from tests.conftest import wait_for

NO_MQTT = "[mqtt]\nenabled = false\n"


def every(seconds: float, **kw: Any) -> Schedule:
    return parse_schedule({"name": "s", "every_s": seconds, "task": {"prompt": "x"}, **kw})


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ({"cron": "* * * * *", "every_s": 5}, "exactly one of"),
        ({}, "exactly one of"),
        ({"cron": "61 * * * *"}, "bad cron expression"),
        ({"every_s": 0.5}, "greater than or equal to 1"),
        ({"every_s": 5, "name": "has space"}, "name"),
        ({"every_s": 5, "name": "x" * 41}, "name"),
        ({"every_s": 5, "task": {"prompt": "x", "id": "fixed"}}, "each run gets"),
        ({"every_s": 5, "task": {"prompt": "x", "colour": 1}}, "task:"),
        ({"every_s": 5, "task": {}}, "task:"),
        ({"every_s": 5, "missed": "later"}, "missed"),
        ({"every_s": 5, "extra": 1}, "extra"),
    ],
)
def test_bad_schedules_are_refused_with_the_reason(bad: dict[str, Any], says: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_schedule({"name": "s", "task": {"prompt": "x"}, **bad})
    assert says in err.value.message


def test_due_times_for_every_and_cron() -> None:
    assert every(90).next_due(1000.0) == 1090.0
    cron = parse_schedule({"name": "c", "cron": "30 7 * * *", "task": {"prompt": "x"}})
    start = datetime(2026, 3, 2, 8, 0).timestamp()
    due = datetime.fromtimestamp(cron.next_due(start))
    assert (due.day, due.hour, due.minute) == (3, 7, 30)
    spec = cron.run_spec(1234.9, missed=2)
    assert spec["id"] == "c.1234"
    assert spec["meta"] == {"schedule": "c", "due": 1234, "missed_runs": 2}


def test_missed_runs_are_counted_and_a_late_single_run_is_on_time() -> None:
    s = every(10)
    assert _missed(s, 100.0, 100.0) == (0, 100.0)  # due now
    assert _missed(s, 100.0, 135.0) == (4, 130.0)  # 100, 110, 120, 130 all passed
    hourly = every(3600)
    assert _missed(hourly, 0.0, GRACE_S) == (0, 0.0)  # late, but the only one: on time
    assert _missed(hourly, 0.0, GRACE_S + 1) == (1, 0.0)  # one run, too late: missed
    cron = parse_schedule({"name": "c", "cron": "*/5 * * * *", "task": {"prompt": "x"}})
    first = datetime(2026, 3, 2, 8, 0).timestamp()
    assert _missed(cron, first, first + 12 * 60) == (3, first + 600)  # 8:00, 8:05, 8:10


def test_schedules_run_on_time_and_missed_runs_follow_their_policy(daemons: Any) -> None:
    d = daemons(NO_MQTT).start()
    task = ["--tier", "local", "--max-tokens", "4", "--prompt", "Say hi."]
    made = d.json("schedules", "set", "tick", "--every", "1", *task)
    assert made["name"] == "tick" and made["every_s"] == 1 and made["missed"] == "run_once"
    d.cli("schedules", "set", "skipper", "--every", "1", "--missed", "skip", *task)

    def runs(name: str) -> list[dict[str, Any]]:
        every_task = d.json("tasks", "list", "--limit", "500")
        return [t for t in every_task if t["id"].startswith(f"{name}.")]

    wait_for(lambda: len([t for t in runs("tick") if t["state"] == "succeeded"]) >= 2, 60)
    run = d.task(runs("tick")[0]["id"])
    assert run["route"]["provider"] == "local" and run["meta"]["schedule"] == "tick"
    listed = {s["name"]: s for s in d.json("schedules", "list")}
    assert set(listed) == {"tick", "skipper"} and listed["tick"]["next_at"] > time.time() - 5
    assert d.json("status")["schedules"]["count"] == 2
    assert "schedules: 2, next " in d.cli("status").stdout

    # Down for a few due times: tick runs once for all of them, skipper records them skipped.
    before = {t["id"] for t in runs("tick") + runs("skipper")}
    assert d.stop() == 0
    time.sleep(3.5)
    d.start()

    def caught_up(name: str) -> list[dict[str, Any]]:
        new = [d.task(t["id"]) for t in runs(name) if t["id"] not in before]
        return [t for t in new if t["meta"].get("missed_runs", 0) >= 3]

    [once] = wait_for(lambda: caught_up("tick"), 30)
    assert once["state"] in ("queued", "running", "succeeded")
    [skipped] = wait_for(lambda: caught_up("skipper"), 30)
    assert skipped["state"] == "expired" and skipped["error"]["code"] == "missed_run"
    assert "policy skip" in skipped["error"]["message"]

    d.cli("schedules", "delete", "tick")
    d.cli("schedules", "delete", "skipper")
    gone = d.cli("schedules", "delete", "tick", check=False)
    assert gone.returncode == 1 and "no schedule named 'tick'" in gone.stderr
    assert d.json("schedules", "list") == []
    assert d.json("status")["schedules"] == {"count": 0, "next": None}
    settled = len(runs("tick"))
    time.sleep(2.5)
    assert len(runs("tick")) == settled  # deleted: no more runs
    bad = d.cli("schedules", "set", "x", "--every", "5", check=False)
    assert bad.returncode == 2 and "give --prompt TEXT or --spec" in bad.stderr
    assert d.stop() == 0
