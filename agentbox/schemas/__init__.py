"""JSON Schemas of what the box takes and sends (docs/reference.md), shipped for integrators."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

# Sent or taken over MQTT and the control socket; each is <name>.schema.json in this package.
NAMES = (
    "task-spec", "schedule", "result", "event", "status", "info", "health", "update-event",
)  # fmt: skip
# Made from the pydantic models that parse them (agentbox.schemas.models), never by hand.
GENERATED = ("task-spec", "schedule")


@cache
def load(name: str) -> dict[str, Any]:
    """The schema called `name`, as shipped."""
    if name not in NAMES:
        raise KeyError(f"no schema {name!r}; there are: {', '.join(NAMES)}")
    text = resources.files(__name__).joinpath(f"{name}.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate(name: str, document: Any) -> None:
    """Raise jsonschema.ValidationError unless `document` is valid; references resolve offline."""
    from jsonschema import Draft202012Validator  # noqa: PLC0415 (only validation needs it)
    from referencing import Registry, Resource  # noqa: PLC0415

    registry: Registry[Any] = Registry().with_resources(
        (load(n)["$id"], Resource.from_contents(load(n))) for n in NAMES
    )
    Draft202012Validator(load(name), registry=registry).validate(document)
