"""Specs are taken as typed, not coerced, and only as strict JSON (no NaN or Infinity), the
same over the local socket and MQTT; what the box writes is strict JSON too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentbox import jsonstrict
from agentbox.providers.base import Completion
from agentbox.routing.answers import check_output
from agentbox.settings import BudgetConfig
from agentbox.tasks.schedules import parse_schedule
from agentbox.tasks.spec import parse_spec
from agentbox.vocabulary import ErrorCode, SpecError
from tests.conftest import Daemon, wait_for
from tests.mqtt_peer import Broker, Peer

# (spec as sent, what the refusal says)
REFUSED: list[tuple[str, str]] = [
    ('{"prompt": "x", "max_tokens": "100"}', "max_tokens: Input should be a valid integer"),
    ('{"prompt": "x", "priority": true}', "priority: Input should be a valid integer"),
    ('{"prompt": "x", "max_tokens": 100.0}', "max_tokens: Input should be a valid integer"),
    ('{"prompt": "x", "deadline_s": "60"}', "deadline_s: Input should be a valid number"),
    ('{"prompt": 5}', "prompt: Input should be a valid string"),
    ('{"messages": [{"role": "user", "content": 5}]}', "content: Input should be a valid string"),
    ('{"prompt": "x", "meta": {"v": NaN}}', "is not a JSON number"),
    ('{"prompt": "x", "meta": {"v": [1, -Infinity]}}', "is not a JSON number"),
    ('{"prompt": "x", "meta": {"v": 1e999}}', "is not a JSON number"),  # decodes to inf
    ('{"prompt": "x", "max_cost_usd": NaN}', "is not a JSON number"),
]


@pytest.mark.parametrize(("raw", "why"), REFUSED)
def test_wrong_types_and_non_finite_numbers_are_refused(raw: str, why: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(raw)
    assert err.value.code == ErrorCode.invalid_request and why in err.value.message
    # Decoded by a lenient parser first (the socket's and MQTT's json.loads): the same answer.
    with pytest.raises(SpecError) as again:
        parse_spec(json.loads(raw))
    assert why.rsplit(":", maxsplit=1)[-1].strip() in again.value.message


def test_an_overflowing_number_is_found_where_it_is() -> None:
    with pytest.raises(SpecError, match=r"meta\.v\[1\]: NaN or Infinity is not a JSON number"):
        parse_spec('{"prompt": "x", "meta": {"v": [1, 1e999]}}')


def test_typed_specs_still_pass() -> None:
    spec = parse_spec('{"prompt": "x", "max_tokens": 100, "deadline_s": 60, "priority": 0}')
    assert (spec.max_tokens, spec.deadline_s, spec.priority) == (100, 60.0, 0)
    assert parse_spec({"messages": [{"role": "user", "content": "hi"}], "meta": {"a": 1.5}})


def test_schedules_are_strict_too() -> None:
    with pytest.raises(SpecError, match="every_s: Input should be a valid number"):
        parse_schedule({"name": "n", "every_s": "60", "task": {"prompt": "x"}})
    with pytest.raises(SpecError, match="task: max_tokens: Input should be a valid integer"):
        parse_schedule({"name": "n", "every_s": 60, "task": {"prompt": "x", "max_tokens": "9"}})
    with pytest.raises(SpecError, match="is not a JSON number"):
        parse_schedule({"name": "n", "every_s": 60, "task": {"prompt": "x", "meta": {"v": 1e999}}})


def test_what_the_box_writes_is_strict_json() -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        jsonstrict.dumps({"v": float("nan")})
    # A model's answer with NaN in it is not valid JSON output for a schema task.
    spec = parse_spec({"prompt": "x", "schema": {"type": "object"}})
    c = Completion(text='{"v": NaN}', model="m", input_tokens=1, output_tokens=1)
    assert check_output(spec, c) == (None, "is not valid JSON")
    with pytest.raises(ValueError, match="finite number"):
        BudgetConfig(daily_usd=float("inf"))


def test_the_socket_and_mqtt_refuse_the_same_specs(
    daemons: Any, broker: Broker, short_tmp: Path
) -> None:
    config = f"[device]\nid = 'strict'\n[mqtt]\nhost = '127.0.0.1'\nport = {broker.port}\n"
    d: Daemon = daemons(config, name="strict").start()
    wait_for(lambda: d.json("status")["mqtt"]["connected"], 20, what="mqtt connected")
    peer = Peer(broker.port)
    try:
        peer.subscribe("answers/#")
        for n, (raw, why) in enumerate(REFUSED):
            local = d.cli("submit", "--spec", "-", input=raw, check=False)
            assert local.returncode != 0 and why.split(":")[-1].strip() in local.stderr, raw
            peer.publish("agentbox/v1/strict/task/submit", raw, response_topic=f"answers/{n}")
        wait_for(lambda: len(peer.on("answers/#")) == len(REFUSED), 30, what="every answer")
        for topic, body, _, _ in peer.on("answers/#"):
            raw, why = REFUSED[int(topic.split("/")[1])]
            assert body["state"] == "rejected" and body["error"]["code"] == "invalid_request"
            assert why.split(":")[-1].strip() in body["error"]["message"], (raw, body)
        assert d.json("tasks", "list") == []
    finally:
        peer.close()
    assert d.stop() == 0
