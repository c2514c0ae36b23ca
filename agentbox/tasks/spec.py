"""Intake of a task spec: JSON text or a decoded object to a TaskSpec, or a clear SpecError."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from agentbox import jsonstrict
from agentbox.agent.names import NAMES as TOOL_NAMES
from agentbox.vocabulary import ErrorCode, SpecError, TaskSpec


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
    msg = msg.removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def parse_spec(raw: bytes | str | dict[str, Any], max_bytes: int = 262144) -> TaskSpec:
    """Validate one incoming spec; raises SpecError with a clear, short message."""
    if isinstance(raw, bytes | str):
        size = len(raw)
        if size > max_bytes:
            raise SpecError(ErrorCode.payload_too_large, f"spec is {size} bytes, limit {max_bytes}")
        try:
            raw = jsonstrict.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise SpecError(ErrorCode.invalid_request, f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise SpecError(ErrorCode.invalid_request, "a task spec must be a JSON object")
    claimed = raw.get("id")
    task_id = claimed if isinstance(claimed, str) and len(claimed) <= 64 else None
    # Specs also arrive decoded (the control socket, MQTT), by parsers that let NaN through.
    where = jsonstrict.non_finite(raw)
    if where is not None:
        raise SpecError(
            ErrorCode.invalid_request, f"{where}: NaN or Infinity is not a JSON number", task_id
        )
    try:
        spec = TaskSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(ErrorCode.invalid_request, _first_error(exc), task_id) from None
    except RecursionError:
        raise SpecError(ErrorCode.invalid_request, "spec nested too deeply", task_id) from None
    # Tools are checked here, at intake, so the task model needs no tool catalogue.
    unknown = [t for t in spec.tools if t not in TOOL_NAMES]
    if unknown:
        known = ", ".join(sorted(TOOL_NAMES))
        problem = f"unknown tool {unknown[0]!r} (this box has: {known})"
    elif spec.tools and spec.kind != "agent":
        problem = "tools are for agent tasks: add kind 'agent'"
    else:
        return spec
    raise SpecError(ErrorCode.invalid_request, f"tools: {problem}", task_id)
