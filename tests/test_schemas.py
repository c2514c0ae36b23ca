"""The shipped JSON Schemas (docs/reference.md) against what a real box sends and takes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agentbox import schemas
from agentbox.schemas import models
from agentbox.tasks.schedules import parse_schedule
from agentbox.tasks.spec import parse_spec
from agentbox.vocabulary import ErrorCode, SpecError, State
from tests.conftest import wait_for
from tests.fakes import FakeProvider, openai_stream, tool_calls
from tests.mqtt_peer import Broker, Peer

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "agentbox/v1"


@pytest.mark.parametrize("name", schemas.GENERATED)
def test_generated_schemas_match_the_models_that_parse(name: str) -> None:
    shipped = (ROOT / "agentbox" / "schemas" / f"{name}.schema.json").read_text()
    assert shipped == models.render(name), f"regenerate it: scripts/schemas ({name})"


def test_every_schema_is_valid_json_schema_and_names_its_file() -> None:
    for name in schemas.NAMES:
        schema = schemas.load(name)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$id"].endswith(f"/{name}.schema.json")


def test_the_result_schema_knows_every_state_and_error_code() -> None:
    result = schemas.load("result")
    # not_found is no task's state: the answer of task/get or task/cancel for an unknown id.
    assert set(result["properties"]["state"]["enum"]) == {s.value for s in State} | {"not_found"}
    codes = result["$defs"]["error"]["properties"]["code"]["enum"]
    assert set(codes) == {c.value for c in ErrorCode}


SPECS: list[Any] = [
    {"prompt": "hi"},
    {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "tier": "local"},
    {"prompt": "x", "kind": "agent", "tools": ["calculator", "clock"], "priority": 9},
    {"prompt": "x", "schema": {"type": "object"}, "meta": {"a": [1]}, "deadline_s": 60.5},
    {"prompt": "x", "model": "openai/gpt-4o-mini", "max_cost_usd": 0.01, "id": "a.b-c_1"},
    {},
    {"prompt": ""},
    {"prompt": "x", "messages": [{"role": "user", "content": "y"}]},
    {"prompt": "x", "colour": "blue"},
    {"prompt": "x", "max_tokens": "100"},
    {"prompt": "x", "max_tokens": 0},
    {"prompt": "x", "priority": 10},
    {"prompt": "x", "tools": ["rm"]},
    {"prompt": "x", "tools": ["calculator"]},
    {"prompt": "x", "tools": [], "kind": "complete"},
    {"prompt": "x", "kind": "agent", "tools": ["rm"]},
    {"prompt": "x", "tier": "frontier"},
    {"prompt": "x", "id": "has space"},
    {"prompt": "x", "model": "NoSlash"},
    {"messages": [{"role": "tool", "content": "y"}]},
    {"messages": []},
    {"prompt": "x", "deadline_s": 0},
]


def schema_and_box_agree(name: str, document: Any, parse: Callable[[Any], object]) -> None:
    """A document the schema accepts, the box accepts, and the reverse."""
    try:
        schemas.validate(name, document)
        schema_ok = True
    except jsonschema.ValidationError:
        schema_ok = False
    try:
        parse(document)
        box_ok = True
    except SpecError:
        box_ok = False
    assert schema_ok == box_ok, {"schema accepts": schema_ok, "box accepts": box_ok}


@pytest.mark.parametrize("spec", SPECS, ids=[json.dumps(s)[:40] for s in SPECS])
def test_a_spec_the_schema_accepts_the_box_accepts_and_the_reverse(spec: Any) -> None:
    schema_and_box_agree("task-spec", spec, parse_spec)


@pytest.mark.parametrize(
    "schedule",
    [
        {"name": "daily", "cron": "0 8 * * *", "task": {"prompt": "hi"}},
        {"name": "often", "every_s": 60, "missed": "skip", "task": {"prompt": "hi"}},
        {"name": "both", "cron": "0 8 * * *", "every_s": 60, "task": {"prompt": "hi"}},
        {"name": "none", "task": {"prompt": "hi"}},
        {"name": "withid", "every_s": 60, "task": {"prompt": "hi", "id": "x"}},
        {"name": "badtask", "every_s": 60, "task": {"prompt": 5}},
    ],
)
def test_a_schedule_the_schema_accepts_the_box_accepts(schedule: dict[str, Any]) -> None:
    schema_and_box_agree("schedule", schedule, parse_schedule)


def test_what_a_real_box_sends_over_mqtt_matches_the_schemas(
    daemons: Any, broker: Broker, peers: list[Peer], fake: FakeProvider
) -> None:
    fake.push(
        tool_calls("openai", ("calculator", {"expression": "6 * 7"})),
        openai_stream("It is 42."),
    )
    fake.default = openai_stream("hello there")
    config = (
        f"[device]\nid = 'box1'\n[mqtt]\nhost = '127.0.0.1'\nport = {broker.port}\n"
        "health_interval_s = 5\n[local]\nenabled = false\n"
        f"[providers.main]\nkind = 'openai'\nbase_url = '{fake.url}/v1'\nmodel = 'gpt-4o-mini'\n"
    )
    peer = Peer(broker.port)
    peers.append(peer)
    base = f"{PREFIX}/box1"
    peer.subscribe(f"{base}/#", "replies/#")
    d = daemons(config, name="box1").start()
    wait_for(lambda: peer.on(f"{base}/info"), 20, what="info")
    agent = {"id": "ag", "prompt": "6 times 7?", "kind": "agent", "tools": ["calculator"]}
    peer.publish(f"{base}/task/submit", agent, response_topic="replies/ag")
    peer.publish(f"{base}/task/submit", {"id": "c1", "prompt": "hi"}, response_topic="replies/c1")
    peer.publish(f"{base}/task/submit", {"id": "bad", "prompt": 5}, response_topic="replies/bad")
    peer.publish(f"{base}/task/get", {"id": "nope"}, response_topic="replies/get")
    wait_for(lambda: len(peer.on("replies/#")) >= 4, 30, what="four answers")
    wait_for(lambda: peer.on(f"{base}/health"), 20, what="a health report")
    d.kill9()
    wait_for(lambda: peer.on(f"{base}/status")[-1][1]["state"] == "offline", 10, what="the will")
    d.start()
    assert d.stop() == 0
    wait_for(lambda: peer.on(f"{base}/status")[-1][1]["state"] == "stopped", 10, what="stopped")

    seen: dict[str, int] = {}
    for topic, body, _, _ in peer.messages:
        kind = (
            "update-event"
            if topic.endswith("/update/event")
            else "event"
            if topic.endswith("/event")
            else "result"
            if topic.startswith("replies/")
            else topic.rsplit("/", 1)[-1]
        )
        if kind in schemas.NAMES:
            schemas.validate(kind, body)
            seen[kind] = seen.get(kind, 0) + 1
    assert seen.keys() >= {"status", "info", "health", "event", "result"}, seen
    bodies: list[tuple[str, Any]] = [(t, b) for t, b, _, _ in peer.messages]
    states = {b["state"] for t, b in bodies if t.endswith("/status")}
    assert states == {"online", "offline", "stopped"}
    events = {b["event"] for t, b in bodies if t.endswith("/event")}
    assert events >= {"accepted", "running", "progress", "result"}


def test_the_paho_example_finds_the_box_and_gets_one_final_answer(
    daemons: Any, broker: Broker, fake: FakeProvider
) -> None:
    fake.default = openai_stream("Hello from the box.")
    config = (
        f"[device]\nid = 'box7'\n[mqtt]\nhost = '127.0.0.1'\nport = {broker.port}\n"
        f"[local]\nenabled = false\n[providers.main]\nkind = 'openai'\n"
        f"base_url = '{fake.url}/v1'\nmodel = 'gpt-4o-mini'\n"
    )
    d = daemons(config, name="box7").start()
    wait_for(lambda: d.json("status")["mqtt"]["connected"], 20, what="mqtt connected")
    script = str(ROOT / "examples" / "paho_submit.py")

    def example(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, script, "--port", str(broker.port), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)

    listed = example("--list")
    assert listed.returncode == 0 and listed.stdout.startswith("box7  agentbox"), listed
    sent = example("--box", "box7", "Say hello.")
    assert sent.returncode == 0, sent.stderr
    result = json.loads(sent.stdout)
    schemas.validate("result", result)
    assert result["state"] == "succeeded" and result["output"] == "Hello from the box."
    assert d.stop() == 0
