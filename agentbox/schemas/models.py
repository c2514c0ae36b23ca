"""The generated schemas: the task spec and schedule models' own JSON Schema, plus the rules
the models check in code (exactly one of two fields, known tool names)."""

from __future__ import annotations

import json
from typing import Any

from agentbox.agent.names import NAMES as TOOL_NAMES
from agentbox.tasks.schedules import Schedule
from agentbox.vocabulary import TaskSpec

BASE = "https://agentbox.invalid/schemas/"


def _exactly_one(a: str, b: str) -> list[dict[str, Any]]:
    # Stricter than the box, on purpose: it also takes the other field as null, so a document
    # valid here is always accepted.
    return [
        {"required": [a], "not": {"required": [b]}},
        {"required": [b], "not": {"required": [a]}},
    ]


def task_spec() -> dict[str, Any]:
    body = TaskSpec.model_json_schema(by_alias=True)
    body.pop("description", None)
    body["properties"]["tools"]["items"] = {"enum": sorted(TOOL_NAMES)}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": BASE + "task-spec.schema.json",
        "title": "agentbox task spec",
        "description": (
            "What task/submit takes (README, Tasks). Unknown fields are refused; strict types "
            '("100" is not a number). Exactly one of prompt or messages.'
        ),
        **{k: v for k, v in body.items() if k != "title"},
        "oneOf": _exactly_one("prompt", "messages"),
        # Tools are for agent tasks.
        "if": {"required": ["tools"], "properties": {"tools": {"minItems": 1}}},
        "then": {"required": ["kind"], "properties": {"kind": {"const": "agent"}}},
    }


def schedule() -> dict[str, Any]:
    body = Schedule.model_json_schema(by_alias=True)
    body.pop("description", None)
    body["properties"]["task"] = {
        "$ref": "task-spec.schema.json",
        "description": "A task spec without an id: each run gets <name>.<due time>.",
        "not": {"required": ["id"]},
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": BASE + "schedule.schema.json",
        "title": "agentbox schedule",
        "description": (
            "What schedule/set takes (README, Schedules): a name, exactly one of cron (five "
            "fields, the box's local time) or every_s, the missed-run policy and a task spec."
        ),
        **{k: v for k, v in body.items() if k != "title"},
        "oneOf": _exactly_one("cron", "every_s"),
    }


def render(name: str) -> str:
    """The file text of generated schema `name`."""
    made = {"task-spec": task_spec, "schedule": schedule}[name]()
    return json.dumps(made, indent=2, sort_keys=False) + "\n"
